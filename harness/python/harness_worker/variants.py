"""Exporting variants, as data: each export *method* is an Exporter in EXPORTERS.

A request names its variants (`{"name", "method", "options"}`); the exporter of the method makes an
artifact (a ScriptModule, or a torch.export program: see `program`) from a fresh deep copy of
the model, the inputs of the trace sample and the variant's options, and its failures get the
exporter's error kind. A new method is one function and one entry in EXPORTERS (as `freeze` and
`optimize` are).
"""

import copy
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from harness_worker import program
from harness_worker.calls import Arg, bound_names, forward_args, forward_defaults, traceable
from harness_worker.eager import encode, state_digest
from harness_worker.errors import ErrorKind, HarnessError, error_body
from harness_worker.frames import capture_warnings, locate_error
from harness_worker.graph import Walk, code_constants, static_evidence, submodule_code

MakeFn = Callable[[torch.nn.Module, Any, dict[str, Any]], Any]
MESSAGE_LINES = 40
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _save_script(artifact: torch.jit.ScriptModule, path: str) -> None:
    artifact.save(path)


@dataclass(frozen=True)
class Exporter:
    """How one method makes its artifact, which options it accepts, what its failures are, and
    (for an artifact that is no ScriptModule) how it is saved and described."""

    make: MakeFn
    error_kind: ErrorKind = ErrorKind.EXPORT_ERROR
    options: frozenset[str] = frozenset()
    # The artifact is the file named by the `path` option, copied byte for byte (a shipped
    # file: saving it again with this torch could hide what the file itself holds).
    keep_file: bool = False
    # The method records a run on the example inputs: it gets the model with its scalar, None and
    # keyword inputs bound to their trace-time values and the tensor inputs (calls.traceable).
    records: bool = False
    # `make` gets the inputs themselves (`Arg`s, keyword ones and names included), not a tuple.
    takes_args: bool = False
    suffix: str = ".pt"
    save: Callable[[Any, str], None] = _save_script
    # The artifact's entry (code, device pins) when it is no ScriptModule.
    describe: Callable[[Any], dict[str, Any]] | None = None
    # The error kind of a failure, from the exception (default: `error_kind`).
    classify: Callable[[BaseException], ErrorKind] | None = None
    # torch's message as the harness shows it.
    clean: Callable[[str], str] | None = None

    def arguments(self, fresh: torch.nn.Module, args: list[Arg]) -> tuple[torch.nn.Module, Any]:
        """The module and example inputs `make` gets."""
        if self.records:
            return traceable(fresh, args)
        if self.takes_args:
            return fresh, args
        return fresh, tuple(a.value for a in args)

    def failure(self, exc: BaseException) -> dict[str, Any]:
        """The error body of a failed export."""
        err = export_error(self.classify(exc) if self.classify else self.error_kind, exc)
        if self.clean:
            err["message"] = self.clean(err["message"])
        return err


def _trace(
    fresh: torch.nn.Module, inputs: tuple[Any, ...], options: dict[str, Any]
) -> torch.jit.ScriptModule:
    with torch.no_grad():
        return torch.jit.trace(fresh, inputs, **{"check_trace": False, **options})


# The first script failure of each model class in this process (one case's child): a class
# whose compilation failed is left half-defined in TorchScript's compilation unit, and scripting
# it again raises "Can't redefine method" instead of the real error.
_SCRIPT_FAILURES: dict[type, BaseException] = {}


def _script_module(module: torch.nn.Module) -> torch.jit.ScriptModule:
    """torch.jit.script, raising a class's first failure again rather than its aftermath."""
    if type(module) in _SCRIPT_FAILURES:
        raise _SCRIPT_FAILURES[type(module)]
    try:
        return torch.jit.script(module)
    except Exception as exc:
        _SCRIPT_FAILURES[type(module)] = exc
        raise


def _script(
    fresh: torch.nn.Module, inputs: tuple[Any, ...], options: dict[str, Any]
) -> torch.jit.ScriptModule:
    return _script_module(fresh)


def _freeze(
    fresh: torch.nn.Module, inputs: tuple[Any, ...], options: dict[str, Any]
) -> torch.jit.ScriptModule:
    """What teams ship instead of the plain script: attributes and parameters inlined as
    constants (the model is in eval mode, as freezing requires)."""
    return torch.jit.freeze(_script_module(fresh.eval()))


def _optimize(
    fresh: torch.nn.Module, inputs: tuple[Any, ...], options: dict[str, Any]
) -> torch.jit.ScriptModule:
    """Frozen, then rewritten for inference (conv and batch norm folded, ops fused)."""
    return torch.jit.optimize_for_inference(_freeze(fresh, inputs, options))


def _load_artifact(
    fresh: torch.nn.Module, inputs: tuple[Any, ...], options: dict[str, Any]
) -> torch.jit.ScriptModule:
    """A shipped TorchScript file, as the team deploys it (its code is described and
    snapshotted; the file itself is what libtorch runs)."""
    return torch.jit.load(options["path"], map_location="cpu")


def _program_exporter(save: Callable[[Any, str], None]) -> Exporter:
    """A torch.export method: the program made, described and its failures classified by
    `program`; `save` writes it (`torch.export.save`, or an AOTInductor compile)."""
    return Exporter(
        program.export_program,
        ErrorKind.EXPORT_ERROR,
        frozenset({"dims", "shapes", "strict"}),
        takes_args=True,
        suffix=".pt2",
        save=save,
        describe=program.describe,
        classify=program.classify,
        clean=program.summarize,
    )


EXPORTERS: dict[str, Exporter] = {
    "trace": Exporter(
        _trace, ErrorKind.TRACE_ERROR, frozenset({"check_trace", "check_tolerance", "strict"}), records=True
    ),
    "script": Exporter(_script, ErrorKind.SCRIPT_COMPILE_ERROR),
    "freeze": Exporter(_freeze, ErrorKind.SCRIPT_COMPILE_ERROR),
    "optimize": Exporter(_optimize, ErrorKind.SCRIPT_COMPILE_ERROR),
    "artifact": Exporter(_load_artifact, ErrorKind.ARTIFACT_LOAD, frozenset({"path"}), keep_file=True),
    "export": _program_exporter(program.save),
    "aoti": _program_exporter(program.compile_aoti),
}


@dataclass(frozen=True)
class Variant:
    """One variant of an export request: its artifact is `<out_dir>/<name><suffix>` (`.pt`, or
    `.pt2` for a torch.export program)."""

    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def exporter(self) -> Exporter:
        return EXPORTERS[self.method]


def _parse_variant(raw: Any) -> Variant:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise HarnessError(ErrorKind.PROTOCOL, f"a variant is {{name, method, options}}, not {raw!r}")
    name, method, options = raw["name"], raw.get("method"), raw.get("options") or {}
    if not _NAME.fullmatch(name):
        raise HarnessError(ErrorKind.PROTOCOL, f"variant name {name!r} is not a plain file name")
    if method not in EXPORTERS:
        raise HarnessError(
            ErrorKind.PROTOCOL, f"variant {name!r}: unknown method {method!r} (known: {sorted(EXPORTERS)})"
        )
    unknown = sorted(set(options) - EXPORTERS[method].options)
    if unknown:
        raise HarnessError(
            ErrorKind.PROTOCOL, f"variant {name!r}: method {method!r} takes no options {unknown}"
        )
    return Variant(name, method, dict(options))


def parse_variants(raw: Any) -> list[Variant]:
    """The request's variants, checked before anything is exported."""
    if not isinstance(raw, list):
        raise HarnessError(ErrorKind.PROTOCOL, f"variants must be a list, not {raw!r}")
    variants = [_parse_variant(v) for v in raw]
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise HarnessError(ErrorKind.PROTOCOL, f"variant names repeat: {names}")
    return variants


def export_error(kind: ErrorKind, exc: BaseException) -> dict[str, Any]:
    """An export failure's error body, with the user's file and line where one is known."""
    err = error_body(kind, exc)
    locate_error(exc, err)
    err["message"] = "\n".join(str(exc).strip().splitlines()[:MESSAGE_LINES])
    return err


def _describe(artifact: torch.jit.ScriptModule, path: str) -> tuple[dict[str, Any], Walk | None]:
    """A saved artifact's entry: its code, constants, submodules and device pins."""
    entry: dict[str, Any] = {"ok": True, "path": path, "args": forward_args(artifact)}
    entry["defaults"] = {k: encode(v, "default", None) for k, v in forward_defaults(artifact).items()}
    try:
        entry["code"], entry["constants"] = code_constants(artifact)
        entry["modules"] = submodule_code(artifact)
        walk = Walk(artifact.inlined_graph)
        entry["device_pins"] = walk.pins
    except Exception as exc:  # noqa: BLE001 - saved, but not printable
        entry["code_error"] = f"{type(exc).__name__}: {exc}"
        return entry, None
    return entry, walk


def export_variant(
    model: torch.nn.Module, inputs: list[Arg], variant: Variant, out_dir: str
) -> tuple[dict[str, Any], Walk | None]:
    """Export one variant of a fresh deep copy of `model`, save it, and describe it. A failure is
    data (an entry with `ok: false`), never an exception."""
    exporter = variant.exporter
    path = os.path.join(out_dir, f"{variant.name}{exporter.suffix}")
    if os.path.exists(path):
        os.remove(path)
    start = time.perf_counter()
    with capture_warnings() as records:
        try:
            module, example = exporter.arguments(copy.deepcopy(model), inputs)
            artifact = exporter.make(module, example, variant.options)
            if exporter.keep_file:
                shutil.copyfile(variant.options["path"], path)
            else:
                exporter.save(artifact, path)
            if exporter.describe is not None:
                entry, walk = {"ok": True, "path": path, **exporter.describe(artifact)}, None
            else:
                entry, walk = _describe(artifact, path)
            entry["bound"] = bound_names(module)
        except HarnessError:
            raise
        except Exception as exc:  # noqa: BLE001 - an export failure is data
            entry, walk = {"ok": False, "error": exporter.failure(exc)}, None
    entry["warnings"] = records
    entry["seconds"] = time.perf_counter() - start
    return entry, walk


def export_all(
    model: torch.nn.Module, inputs: list[Arg], variants: list[Variant], out_dir: str, dims: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Walk]]:
    """An `export` reply body, and the walk of each exported variant's graph, by name (a re-trace
    is compared with its variant's). The evidence compares the first `trace` and first `script`
    variants."""
    os.makedirs(out_dir, exist_ok=True)
    before = state_digest(model)
    exports: dict[str, Any] = {}
    first: dict[str, Walk | None] = {}  # method -> the walk of its first variant
    walks: dict[str, Walk] = {}
    for variant in variants:
        exports[variant.name], walk = export_variant(model, inputs, variant, out_dir)
        first.setdefault(variant.method, walk)
        if walk is not None:
            walks[variant.name] = walk
    reply = {
        "exports": exports,
        "eager_state_changed": before != state_digest(model),
        "evidence": static_evidence(first.get("trace"), first.get("script"), dims),
    }
    return reply, walks
