"""forward's arguments: the inputs a request names, loaded from a sample's tensor file, and the
three ways they are passed on: to eager (positionally, or by keyword), to `torch.jit.trace` (a
module whose forward takes only the tensors, with the scalar and `None` inputs bound to their
trace-time values, as users wrap a model to trace it) and to a saved artifact (by the argument
names of its forward's schema).

A name on the wire says its kind: `x` a tensor, `images[]` a list of tensors (`images.0`,
`images.1`, ... in the file), `k:int`, `r:float`, `flag:bool` a scalar (a 0-d tensor `k` in the
file), `mask:none` None (nothing in the file); a trailing `=` passes the input by keyword.
"""

from dataclasses import dataclass
from typing import Any

import torch
from safetensors import safe_open

from harness_worker.errors import ErrorKind, HarnessError

SCALARS = {"int": int, "float": float, "bool": bool}
TENSOR_KINDS = ("tensor", "list")


@dataclass(frozen=True)
class Arg:
    """One input of forward: its name, kind, whether it goes by keyword, and its value."""

    name: str
    kind: str  # tensor, list, int, float, bool or none
    keyword: bool
    value: Any

    @property
    def is_tensor(self) -> bool:
        return self.kind in TENSOR_KINDS


def parse_name(wire: str) -> tuple[str, str, bool]:
    """`mask:none=` -> ("mask", "none", True); `images[]` -> ("images", "list", False)."""
    keyword = wire.endswith("=")
    wire = wire.removesuffix("=")
    if wire.endswith("[]"):
        return wire[:-2], "list", keyword
    name, _, kind = wire.partition(":")
    kind = kind or "tensor"
    if kind not in ("tensor", "none", *SCALARS):
        raise HarnessError(ErrorKind.PROTOCOL, f"input {wire!r}: unknown kind {kind!r}")
    return name, kind, keyword


def _value(f: Any, keys: set[str], prefix: str, name: str, kind: str) -> Any:
    """One input's value from an open tensor file (copies: a model may write into its input)."""
    if kind == "none":
        return None
    if kind == "list":
        base, items = f"{prefix}/{name}", []
        while f"{base}.{len(items)}" in keys:
            items.append(f.get_tensor(f"{base}.{len(items)}").clone())
        return items
    key = f"{prefix}/{name}"
    if key not in keys:
        raise HarnessError(ErrorKind.PROTOCOL, f"the sample file lacks input {name!r} of sample {prefix}")
    tensor = f.get_tensor(key).clone()
    return SCALARS[kind](tensor.item()) if kind in SCALARS else tensor


def load_args(
    ref: dict[str, str], names: list[str], files: dict[str, Any] | None = None, device: str = "cpu"
) -> list[Arg]:
    """forward's inputs for one sample, from {"file", "sample"}: a tensor file holding the
    sample's tensors under `<sample>/<name>` (one file holds every sample of a case), with their
    tensors on `device` (the case's). `files` keeps files open across samples."""
    path, prefix = ref["file"], ref["sample"]
    f = files.get(path) if files is not None else None
    if f is None:
        f = safe_open(path, framework="pt")
        if files is not None:
            files[path] = f
    keys = set(f.keys())
    args = []
    for wire in names:
        name, kind, keyword = parse_name(wire)
        args.append(Arg(name, kind, keyword, _value(f, keys, prefix, name, kind)))
    return args if device == "cpu" else on_device(args, device)


def call(fn: Any, args: list[Arg]) -> Any:
    """Call eager (or anything Python) as the case says: positional inputs in order, keyword
    inputs by name."""
    positional = [a.value for a in args if not a.keyword]
    return fn(*positional, **{a.name: a.value for a in args if a.keyword})


def on_device(args: list[Arg], device: str) -> list[Arg]:
    """The inputs with their tensors on another device."""

    def move(a: Arg) -> Any:
        if a.kind == "list":
            return [t.to(device) for t in a.value]
        return a.value.to(device) if a.kind == "tensor" else a.value

    return [Arg(a.name, a.kind, a.keyword, move(a)) for a in args]


class Bound(torch.nn.Module):
    """A model with its scalar, `None` and keyword inputs bound: forward takes the tensor inputs
    by position, under their own names (so the traced artifact's schema names them), and calls
    the model as eager is called, with the bound values fixed at trace time."""

    def __init__(self, model: torch.nn.Module, args: list[Arg]) -> None:
        super().__init__()
        self.model = model
        self._inputs = [Arg(a.name, a.kind, a.keyword, None if a.is_tensor else a.value) for a in args]

    def _call(self, tensors: dict[str, Any]) -> Any:
        args = [
            Arg(a.name, a.kind, a.keyword, tensors[a.name] if a.is_tensor else a.value) for a in self._inputs
        ]
        return call(self.model, args)


def _bound_class(tensor_names: list[str]) -> type[Bound]:
    """A subclass of Bound whose forward's parameters are the tensor inputs' names."""
    params = ", ".join(tensor_names)
    mapping = ", ".join(f"{n!r}: {n}" for n in tensor_names)
    source = f"def forward(_bound{', ' if params else ''}{params}):\n    return _bound._call({{{mapping}}})\n"
    scope: dict[str, Any] = {}
    exec(source, scope)  # noqa: S102 - the names are Python identifiers (checked by the case file)
    return type("Bound", (Bound,), {"forward": scope["forward"]})


def traceable(model: torch.nn.Module, args: list[Arg]) -> tuple[torch.nn.Module, tuple[Any, ...]]:
    """What torch.jit.trace gets: the model and its inputs when they are all positional tensors
    (or lists), else a Bound module and the tensor inputs."""
    tensors = tuple(a.value for a in args if a.is_tensor)
    if all(a.is_tensor and not a.keyword for a in args):
        return model, tensors
    return _bound_class([a.name for a in args if a.is_tensor])(model, args), tensors


def forward_args(artifact: torch.jit.ScriptModule) -> list[str] | None:
    """The names of the arguments an artifact's forward takes, without `self` (None: unknown)."""
    try:
        return [a.name for a in artifact.forward.schema.arguments][1:]
    except Exception:  # noqa: BLE001 - a module without a scriptable forward
        return None


def forward_defaults(artifact: torch.jit.ScriptModule) -> dict[str, Any]:
    """The default values of forward's arguments that have a plain one (None, a bool, int, float
    or str), which libtorch is given where the case leaves such an argument out."""
    try:
        arguments = artifact.forward.schema.arguments[1:]
    except Exception:  # noqa: BLE001 - a module without a scriptable forward
        return {}
    plain = (type(None), bool, int, float, str)
    return {
        a.name: a.default_value
        for a in arguments
        if a.has_default_value() and isinstance(a.default_value, plain)
    }


def bound_names(module: torch.nn.Module) -> list[str]:
    """The inputs a module made by `traceable` bound to their trace-time values."""
    return [a.name for a in module._inputs if not a.is_tensor] if isinstance(module, Bound) else []


def call_artifact(artifact: torch.jit.ScriptModule, args: list[Arg]) -> Any:
    """Run a saved artifact as libtorch does: by name when its forward names every tensor input
    (a trace bound the others), the inputs it names; else every input by position."""
    names = set(forward_args(artifact) or [])
    if all(a.name in names for a in args if a.is_tensor):
        return artifact(**{a.name: a.value for a in args if a.name in names})
    return artifact(*[a.value for a in args])
