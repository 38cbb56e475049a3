"""Error kinds the worker emits, and the error bodies replies carry.

The Rust side parses the ErrorKind class below line by line (`    NAME = "value"`) and checks each
value against its own list of kinds: keep one member per line, in exactly that form.
"""

import enum
import traceback
from typing import Any

TRACEBACK_TAIL = 12


class ErrorKind(str, enum.Enum):
    """Every `error.kind` the worker can put in a reply."""

    MODEL_IMPORT = "model_import"
    MODEL_ENTRY = "model_entry"
    MODEL_CONSTRUCT = "model_construct"
    PROTOCOL = "protocol"
    DEVICE = "device"
    EAGER_RAISED = "eager_raised"
    INTERNAL = "internal"
    TRACE_ERROR = "trace_error"
    SCRIPT_COMPILE_ERROR = "script_compile_error"
    EXPORT_ERROR = "export_error"
    EXPORT_DATA_DEPENDENT = "export_data_dependent"
    EXPORT_CONSTRAINT = "export_constraint"
    ARTIFACT_LOAD = "artifact_load"
    MODEL_WEIGHTS = "model_weights"
    UNSUPPORTED_OUTPUT = "unsupported_output"


class HarnessError(Exception):
    """An error with a kind the harness understands: the request fails with this body."""

    def __init__(self, kind: ErrorKind, message: str, tb: list[str] | None = None) -> None:
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.message = message
        self.tb = tb or []

    def body(self) -> dict[str, Any]:
        """The reply's `error` object."""
        return {"kind": self.kind.value, "message": self.message, "traceback": self.tb}


def traceback_tail(exc: BaseException) -> list[str]:
    """The last lines of an exception's formatted traceback."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(lines).rstrip().splitlines()
    return text[-TRACEBACK_TAIL:]


def error_body(kind: ErrorKind, exc: BaseException) -> dict[str, Any]:
    """An `error` object for an exception: kind, `Type: message`, traceback tail."""
    return {
        "kind": ErrorKind(kind).value,
        "message": f"{type(exc).__name__}: {exc}".strip(),
        "traceback": traceback_tail(exc),
    }
