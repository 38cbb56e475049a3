"""torch.export: the `export` method's program, its description, what its failures are, and
loading a saved program back to run it; the `aoti` method compiles the same program with
AOTInductor.

The program is made with a `Dim` per case dim (its `min` and `max`) on every axis the case names
it, so torch must prove the graph good over the case's whole range or say why not. A failure
is classified by the exception torch raises: a guard on tensor data (a branch or a size computed
from values) is `export_data_dependent`, a dim torch had to specialize or narrow is
`export_constraint` (its message names the dim and torch's suggested fix), anything else
`export_error`. The saved `.pt2` is loaded back with `torch.export.load` and run as
`ExportedProgram.module()`, as a Python deployment of it would.
"""

import inspect
import re
from typing import Any

import torch

from harness_worker.calls import Arg
from harness_worker.errors import ErrorKind

# Lines of torch's export messages that point at logs and docs, not at the model.
_NOISE = re.compile(
    r"For more information, run with|The error above occurred when calling torch\.export|"
    r"If you would like to view some more information|get a list of all other errors|"
    r"replace your `export\(\)` call with `draft_export\(\)`|consider using data-dependent friendly|"
    r"For extended logs|If you suspect the guard|For more debugging help|For C\+\+ stack trace|"
    r"^Caused by: \(|TORCHDYNAMO_EXTENDED_DEBUG|docs\.google\.com"
)
_OP = re.compile(r"aten\.\w+\.\w+")
_SIZE = re.compile(r"L\['(\w+)'\]\.size\(\)\[(\d+)\]")
_MARKED = re.compile(r"You marked (\w+) as dynamic but your code (.*)$")
_DATA_DEPENDENT = (
    "GuardOnDataDependentSymNode",
    "DataDependentOutputException",
    "DynamicOutputShapeException",
)


def _dims(options: dict[str, Any]) -> dict[str, Any]:
    """A `Dim` per dynamic case dim, shared by every axis that names it."""
    return {
        name: torch.export.Dim(name, min=r["min"], max=r["max"])
        for name, r in options.get("dims", {}).items()
    }


def _shape(arg: Arg, axes: list[str | None] | None, dims: dict[str, Any]) -> Any:
    """One input's dynamic shape: `{axis: Dim}` for a tensor, a list of those for a list."""
    if not arg.is_tensor or not axes:
        return None
    spec = {i: dims[name] for i, name in enumerate(axes) if name in dims} or None
    return [spec for _ in arg.value] if arg.kind == "list" else spec


def _dynamic_shapes(model: torch.nn.Module, args: list[Arg], options: dict[str, Any]) -> Any:
    """The dynamic shapes of forward's arguments, by parameter name (keyword inputs included)."""
    dims = _dims(options)
    shapes = options.get("shapes", {})
    specs = {a.name: _shape(a, shapes.get(a.name), dims) for a in args}
    positional = [a for a in args if not a.keyword]
    try:
        bound = inspect.signature(model.forward).bind(
            *[a.name for a in positional], **{a.name: a.name for a in args if a.keyword}
        )
    except TypeError:  # inputs the signature does not take: by position
        return tuple(specs[a.name] for a in positional)
    return {param: _bound_spec(names, specs) for param, names in bound.arguments.items()}


def _bound_spec(names: Any, specs: dict[str, Any]) -> Any:
    """A parameter's spec: its input's, or for `*args` a tuple of those of the inputs it takes
    (torch matches the structure of the inputs). None for `**kwargs` (torch 2.13 cannot take a
    spec for the inputs it takes)."""
    if isinstance(names, tuple):
        return tuple(specs[n] for n in names)
    return specs[names] if isinstance(names, str) else None


def export_program(model: torch.nn.Module, args: list[Arg], options: dict[str, Any]) -> Any:
    """`torch.export.export` of the model on the trace input, positional and keyword inputs as
    eager gets them, every case dim dynamic over its range."""
    positional = tuple(a.value for a in args if not a.keyword)
    keywords = {a.name: a.value for a in args if a.keyword}
    shapes = _dynamic_shapes(model, args, options)
    if not any(s is not None for s in (shapes.values() if isinstance(shapes, dict) else shapes)):
        shapes = None
    return torch.export.export(
        model, positional, keywords, dynamic_shapes=shapes, strict=bool(options.get("strict", False))
    )


def classify(exc: BaseException) -> ErrorKind:
    """The error kind of an export failure, from the exception or its cause."""
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if name in _DATA_DEPENDENT:
            return ErrorKind.EXPORT_DATA_DEPENDENT
        if name == "UserError" and "CONSTRAINT_VIOLATION" in str(getattr(seen, "error_type", "")):
            return ErrorKind.EXPORT_CONSTRAINT
        seen = seen.__cause__
    return ErrorKind.EXPORT_ERROR


def clean_message(message: str) -> str:
    """torch's message without its pointers to logs and docs (a line keeps what comes before
    one), blank runs collapsed."""
    kept: list[str] = []
    for line in message.splitlines():
        found = _NOISE.search(line)
        line = (line[: found.start()] if found else line).rstrip()
        if found and not line:
            continue
        if line or (kept and kept[-1]):
            kept.append(line)
    return "\n".join(kept).strip()


def summarize(message: str) -> str:
    """The cleaned message with a first line that says what happened: for a constraint
    violation, each dim torch could not keep dynamic and why, and its suggested fix; for a
    data-dependent guard, the guard without torch's internal annotations."""
    message = clean_message(message)
    lines = message.splitlines()
    if not lines:
        return message
    first = lines[0]
    if first.startswith("Constraints violated"):
        reasons = [_reason(line) for line in lines[1:] if line.lstrip().startswith("- ")]
        fixes = _suggested_fixes(lines)
        first = "; ".join(reasons) or first
        if fixes:
            first += f" (torch suggests: {', '.join(fixes)})"
    elif first.startswith(("Could not guard on data-dependent", "Could not extract specialized integer")):
        first = "forward " + first[0].lower() + first[1:].split(" (unhinted")[0].rstrip(".")
    elif _OP.fullmatch(first):  # DataDependentOutputException: the message is the op's name
        first = f"forward calls {first}, whose output depends on the values of its inputs"
    return "\n".join([first, *lines[1:]])


def _reason(bullet: str) -> str:
    """One constraint bullet in a sentence, without torch's advice on other APIs."""
    text = bullet.strip().removeprefix("- ").strip()
    text = text.split(" If you're using")[0].strip().rstrip(".")
    text = _SIZE.sub(r"\1.shape[\2]", text)
    marked = _MARKED.match(text)
    if not marked:
        return text
    dim, what = marked.groups()
    small = re.search(r"constant \(([01])\)$", what)
    if small:  # not the model's doing: torch.export specializes an example's sizes 0 and 1
        return (
            f"{dim}: torch.export specialized it to the example's size ({small.group(1)}): the "
            "case's trace input has that size there, and torch.export specializes sizes 0 and 1 "
            "(give the dim a trace size of 2 or more)"
        )
    return f"{dim}: the model's code {what}"


def _suggested_fixes(lines: list[str]) -> list[str]:
    """The `Suggested fixes:` block's lines (`B = 4`, `H = Dim('H', min=33, max=96)`)."""
    if "Suggested fixes:" not in lines:
        return []
    fixes = []
    for line in lines[lines.index("Suggested fixes:") + 1 :]:
        if not line.startswith("  ") or not line.strip():
            break
        fixes.append(line.strip())
    return fixes


class SaveError(Exception):
    """The program exported, but the step after (saving, compiling) failed: said so first."""


def save(program: Any, path: str) -> None:
    try:
        torch.export.save(program, path)
    except Exception as exc:
        raise SaveError(f"the program exported, but torch.export.save cannot save it: {exc}") from exc


def compile_aoti(program: Any, path: str) -> None:
    """The program compiled ahead of time by AOTInductor (C++ with the machine's compiler) into
    a package at `path`: what a libtorch deployment moving off TorchScript loads."""
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=path)
    except Exception as exc:
        raise SaveError(f"the program exported, but AOTInductor cannot compile it: {exc}") from exc


def load(path: str, method: str = "export") -> Any:
    """A saved program as a callable, the way a deployment loads it: a torch.export program as
    `ExportedProgram.module()`, an AOTInductor package with `aoti_load_package` (its compiled
    model runs in C++)."""
    if method == "aoti":
        return torch._inductor.aoti_load_package(path)
    return torch.export.load(path).module()


def describe(program: Any) -> dict[str, Any]:
    """The program's entry: its graph's code, the ranges of its dims by the case's names, and
    what in it names a device."""
    code = program.graph_module.code.strip("\n") + "\n"
    ranges = _ranges(program)
    if ranges:
        code = "# dims: " + ", ".join(ranges) + "\n" + code
    return {"code": code, "device_pins": _device_pins(program)}


def _ranges(program: Any) -> list[str]:
    """`B = x.shape[0] in [1, 9]` for each input axis the program keeps symbolic."""
    ranges, seen = [], set()
    inputs = [n for n in program.graph.nodes if n.op == "placeholder"]
    user_inputs = set(program.graph_signature.user_inputs)
    for node in inputs:
        val = node.meta.get("val")
        if node.name not in user_inputs or not isinstance(val, torch.Tensor):
            continue
        for axis, size in enumerate(val.shape):
            if isinstance(size, torch.SymInt) and str(size) not in seen:
                seen.add(str(size))
                r = program.range_constraints.get(size.node.expr)
                bounds = f"[{r.lower}, {r.upper}]" if r is not None else "?"
                ranges.append(f"{node.name}.shape[{axis}] in {bounds}")
    return ranges


def _device_pins(program: Any) -> list[str]:
    """Calls with a fixed `device=` (torch records the export-time device of every factory)."""
    pins: list[str] = []
    for node in program.graph.nodes:
        device = node.kwargs.get("device") if node.op == "call_function" else None
        if isinstance(device, torch.device):
            where = _node_source(node)
            pin = f"{node.target} on {device}" + (f" at {where}" if where else "")
            if pin not in pins:
                pins.append(pin)
    return pins[:8]


def _node_source(node: Any) -> str | None:
    """The user's file:line of a node, from its recorded stack trace."""
    trace = node.meta.get("stack_trace") or ""
    found = re.findall(r'File "([^"]+)", line (\d+)', trace)
    return f"{found[-1][0]}:{found[-1][1]}" if found else None
