import ast
import re
from pathlib import Path

import pytest

from harness_worker.errors import ErrorKind, HarnessError, error_body

PACKAGE = Path(__file__).resolve().parent.parent / "harness_worker"


def test_kinds_are_snake_case_and_unique() -> None:
    values = [k.value for k in ErrorKind]
    assert len(set(values)) == len(values)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", v) for v in values)
    assert {"model_import", "protocol", "trace_error", "script_compile_error", "export_error"} <= set(values)


def test_errors_py_keeps_the_format_the_rust_side_parses() -> None:
    """The Rust test reads `    NAME = "value"` lines inside the ErrorKind class."""
    lines = (PACKAGE / "errors.py").read_text().splitlines()
    start = lines.index("class ErrorKind(str, enum.Enum):")
    found = {}
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break
        m = re.fullmatch(r'    ([A-Z_]+) = "([a-z_]+)"', line)
        if m:
            found[m.group(1)] = m.group(2)
    assert found == {k.name: k.value for k in ErrorKind}


def test_error_body_uses_kind_values() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError as exc:
        body = error_body(ErrorKind.EAGER_RAISED, exc)
    assert body["kind"] == "eager_raised"
    assert body["message"] == "ValueError: bad thing"
    assert body["traceback"][-1] == "ValueError: bad thing"


def test_harness_error_body() -> None:
    err = HarnessError(ErrorKind.MODEL_ENTRY, "no Model", ["tb"])
    assert err.body() == {"kind": "model_entry", "message": "no Model", "traceback": ["tb"]}
    with pytest.raises(ValueError):
        HarnessError("no_such_kind", "x")  # type: ignore[arg-type]


def _kind_args() -> list[tuple[str, int, ast.expr]]:
    calls = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
                name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
                if name in ("HarnessError", "error_body", "export_error") and node.args:
                    calls.append((path.name, node.lineno, node.args[0]))
    return calls


def test_every_emitted_kind_is_an_error_kind_member() -> None:
    """No free strings: every HarnessError/error_body names its kind through ErrorKind (or passes
    a variable holding one)."""
    calls = _kind_args()
    assert len(calls) > 10
    for file, line, arg in calls:
        assert not isinstance(arg, ast.Constant), f"{file}:{line} passes a literal kind"
        if isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name) and arg.value.id == "ErrorKind":
            assert arg.attr in ErrorKind.__members__, f"{file}:{line}"
