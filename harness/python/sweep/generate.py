#!/usr/bin/env python3
"""Generate a sweep of harness cases from PyTorch's own test databases.

    python harness/python/sweep/generate.py --out DIR [--limit N] [--ops REGEX]
        [--modules REGEX] [--no-modules] [--no-ops] [--module-samples K]
        [--include-nondeterministic]

For every op of `torch.testing._internal.common_methods_invocations.op_db` (CPU, float32 sample
inputs) and every module of `torch.testing._internal.common_modules.module_db` (CPU, float32,
eval-mode inputs) it picks one sample input (K for modules) and writes:

- `DIR/sweep_models.py`: one `torch.nn.Module` class per case whose `forward` calls the op (or
  the wrapped module) with the sample's non-tensor arguments written out as Python literals,
  so the model is scriptable and imports in milliseconds (no op_db import at verify time);
- `DIR/<case>.yaml`: the case file (format version 1 of the harness), one per op/module;
- `DIR/skipped.tsv`: every op or module left out, with the reason;
- `DIR/manifest.tsv`: case name, kind, op/module name, sample index, and the sample's shapes.

The tensors of a sample become the case's positional inputs (in order: the sample's input,
then the tensors in its args, then in its kwargs; tensors nested in lists or tuples too) with
the sample's shapes. The first dim is made symbolic (`B`, trace = its size, min 1, max size+3)
only where that is plausible: unary and binary elementwise ops (UnaryUfuncInfo,
BinaryUfuncInfo) and modules whose tensor inputs are all batched alike; everything else has
fixed shapes. Value ranges: float inputs take the op's `domain` when it has one, otherwise the
range of the sample's own values (op_db's sample functions encode the constraints an op needs,
e.g. probabilities in [0, 1]; make_tensor's default is [-9, 9]) or uniform [-1, 1] when the
sample's values give no range; integer inputs the range of the sample's own values (indices
stay valid); bool inputs {bool: 0.5}.

The output folder can be anywhere: a case's model file must lie inside the case's git
repository, or its own folder when it is in none, so the model file is written next to the
cases.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

MAX_ELEMENTS = 10_000  # per sample, over all its tensors
SAMPLES = 6
TIMEOUT_S = 60
RTOL = 1.0e-5
ATOL = 1.0e-5
SAMPLES_SCANNED = 40  # sample inputs looked at per op before giving up

# Ops whose eager result is random (trivially knowable from the name): eager cannot be run twice
# deterministically, so nothing can be judged.
RANDOM_NAMES = re.compile(
    r"(^|\.)(rand\w*|normal|bernoulli|multinomial|uniform|cauchy|exponential|geometric|"
    r"log_normal|poisson|rrelu|gumbel_softmax|\w*lowrank|fractional_?max_?pool\dd|\w*dropout(\dd)?|"
    r"\w*empty\w*)($|\.)",
    re.IGNORECASE,
)


def is_random(name: str) -> bool:
    """Random by name (signal.windows.exponential is a window, not a distribution)."""
    return not name.startswith("signal.") and RANDOM_NAMES.search(name) is not None


HARNESS_DTYPES = {
    "torch.float32": "float32",
    "torch.float64": "float64",
    "torch.float16": "float16",
    "torch.bfloat16": "bfloat16",
    "torch.uint8": "uint8",
    "torch.int8": "int8",
    "torch.int16": "int16",
    "torch.int32": "int32",
    "torch.int64": "int64",
    "torch.bool": "bool",
}


class Unrenderable(Exception):
    """A sample argument that cannot be written as a TorchScript-compatible literal."""


@dataclass
class Rendered:
    """Tensors found in a sample (in order) and the literal text of each argument."""

    tensors: list[Any] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def tensor(self, t: Any) -> str:
        import torch

        if t.layout != torch.strided:
            raise Unrenderable(f"{t.layout} tensor")
        if t.is_complex():
            raise Unrenderable("complex tensor")
        if t.is_quantized:
            raise Unrenderable("quantized tensor")
        if str(t.dtype) not in HARNESS_DTYPES:
            raise Unrenderable(f"dtype {t.dtype} not generatable by the harness")
        if t.device.type != "cpu":
            raise Unrenderable(f"tensor on {t.device}")
        for i, seen in enumerate(self.tensors):
            if seen is t:  # the same tensor passed twice: one input
                return self.names[i]
        name = f"x{len(self.tensors)}"
        self.tensors.append(t)
        self.names.append(name)
        return name


def _callable_name(f: Any) -> str | None:
    """A dotted name under `torch` that resolves to `f`, if any."""
    import torch

    mod = getattr(f, "__module__", None) or ""
    name = getattr(f, "__name__", None)
    if not name or name == "<lambda>":
        return None
    candidates = []
    if mod.startswith("torch"):
        candidates.append(f"{mod}.{name}")
    candidates += [f"torch.{name}", f"torch.nn.functional.{name}"]
    for c in candidates:
        obj: Any = sys.modules.get("torch")
        for part in c.split(".")[1:]:
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is f:
            return c
    del torch
    return None


def lit(v: Any, r: Rendered, const_tensors: bool = False) -> str:
    """`v` as Python source; tensors become input names (or literals when const_tensors)."""
    import numpy as np
    import torch

    if isinstance(v, torch.Tensor):
        if const_tensors:
            if v.is_complex() or v.layout != torch.strided:
                raise Unrenderable("complex or sparse constant tensor")
            # module_db builds some constructor tensors in float64 whatever the test dtype
            dtype = torch.float32 if v.is_floating_point() else v.dtype
            return f"torch.tensor({v.tolist()!r}, dtype={dtype})"
        return r.tensor(v)
    if v is None or isinstance(v, (bool, str)):
        return repr(v)
    if isinstance(v, (np.integer,)):
        return repr(int(v))
    if isinstance(v, (np.floating,)):
        v = float(v)
    if isinstance(v, int):
        return repr(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "float('nan')"
        if math.isinf(v):
            return "float('inf')" if v > 0 else "float('-inf')"
        return repr(v)
    if isinstance(v, complex):
        raise Unrenderable("complex scalar")
    if isinstance(v, torch.Size):
        return repr(tuple(v))
    if isinstance(v, tuple) and hasattr(v, "_fields"):
        raise Unrenderable(f"namedtuple {type(v).__name__}")
    if isinstance(v, tuple):
        items = [lit(x, r, const_tensors) for x in v]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(v, list):
        return "[" + ", ".join(lit(x, r, const_tensors) for x in v) + "]"
    if isinstance(v, (torch.dtype, torch.layout, torch.memory_format)):
        return str(v)
    if isinstance(v, torch.device):
        if v.type != "cpu":
            raise Unrenderable(f"device {v}")
        return "torch.device('cpu')"
    if v is Ellipsis:
        return "..."
    if callable(v):
        name = _callable_name(v)
        if name is None:
            raise Unrenderable(f"callable {v!r}")
        return name
    raise Unrenderable(f"{type(v).__name__} argument")


def index_lit(v: Any, r: Rendered) -> str:
    """An indexing expression: slices and Ellipsis written with subscript syntax."""
    if isinstance(v, slice):
        parts = ["" if x is None else lit(x, r) for x in (v.start, v.stop, v.step)]
        s = f"{parts[0]}:{parts[1]}"
        return s + (f":{parts[2]}" if v.step is not None else "")
    if isinstance(v, tuple):
        if not v:
            return "()"
        return ", ".join(index_lit(x, r) for x in v) + ("," if len(v) == 1 else "")
    return lit(v, r)


def call_args(args: Any, kwargs: dict[str, Any], r: Rendered) -> str:
    parts = [lit(a, r) for a in args]
    for k, v in kwargs.items():
        if not k.isidentifier():
            raise Unrenderable(f"keyword {k!r}")
        parts.append(f"{k}={lit(v, r)}")
    return ", ".join(parts)


REVERSED_OPERATORS = {
    "__radd__": "+",
    "__rsub__": "-",
    "__rmul__": "*",
    "__rdiv__": "/",
    "__rmod__": "%",
    "__rpow__": "**",
    "__rmatmul__": "@",
    "__rand__": "&",
    "__ror__": "|",
    "__rxor__": "^",
}


def _special(op_name: str, s: Any, r: Rendered) -> str | None:
    """Ops op_db calls through a lambda that only reorders arguments: written as a user would."""
    if op_name == "__getitem__":
        (idx,) = s.args
        return f"{lit(s.input, r)}[{index_lit(idx, r)}]"
    if op_name in REVERSED_OPERATORS:
        x = lit(s.input, r)
        (other,) = s.args
        return f"{lit(other, r)} {REVERSED_OPERATORS[op_name]} {x}"
    if op_name == "einsum":
        (eq,) = s.args
        return f"torch.einsum({eq!r}, {lit(s.input, r)})"
    if op_name in ("nn.functional.embedding", "nn.functional.embedding_bag"):
        weight = lit(s.input, r)
        idx, *rest = s.args
        idx_s = lit(idx, r)
        rest_s = call_args(tuple(rest), s.kwargs, r)
        return f"torch.{op_name}({idx_s}, {weight}" + (f", {rest_s})" if rest_s else ")")
    if op_name == "nn.functional.scaled_dot_product_attention":
        if s.kwargs.get("dropout_p", 0.0):
            raise Unrenderable("dropout_p > 0 (random)")
        return f"torch.{op_name}({call_args((s.input, *s.args), s.kwargs, r)})"
    return None


SPECIAL = {
    "__getitem__",
    "einsum",
    "nn.functional.embedding",
    "nn.functional.embedding_bag",
    "nn.functional.scaled_dot_product_attention",
    *REVERSED_OPERATORS,
}


def op_callee(op: Any) -> tuple[str, str] | None:
    """How to call an op: ("fn", "torch.x.y") or ("method", name) or ("aten", "torch.ops...")."""
    import torch

    if op.name in SPECIAL:
        return ("special", op.name)

    if isinstance(op.op, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        # TorchScript resolves `torch.ops.aten.name` (the packet), not an overload attribute.
        packet = str(op.op).split(".")[:2]
        return ("aten", "torch.ops." + ".".join(packet))
    obj: Any = torch
    for part in op.name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            break
    if obj is not None and obj is op.op:
        return ("fn", "torch." + op.name)
    if isinstance(op.op, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return ("aten", "torch.ops." + str(op.op))
    if op.method_variant is not None and not op.name.startswith("__"):
        if getattr(torch.Tensor, op.name, None) is op.method_variant:
            return ("method", op.name)
    if op.name in ("T", "H", "mT", "mH"):
        return ("attr", op.name)
    return None


def tensors_numel(ts: list[Any]) -> int:
    return sum(t.numel() for t in ts)


def value_spec(t: Any, domain: tuple[Any, Any] | None) -> str | None:
    """The `values` of an input, or None for the harness's default."""
    import torch

    if t.dtype == torch.bool:
        return "{bool: 0.5}"
    if not t.is_floating_point():
        if t.numel() == 0:
            return "{int: [0, 3]}"
        lo, hi = int(t.min()), int(t.max())
        return f"{{int: [{lo}, {hi}]}}"
    if domain is not None and (domain[0] is not None or domain[1] is not None):
        lo, hi = domain
        lo = -1.0 if lo is None else float(lo)
        hi = (lo + 2.0 if lo >= -1.0 else 1.0) if hi is None else float(hi)
        if domain[1] is None:
            hi = max(hi, 1.0)
        if domain[0] is None:
            lo = min(lo, hi - 2.0)
        span = hi - lo
        # open domains: keep away from the boundaries
        lo, hi = lo + 0.05 * span, hi - 0.05 * span
        return f"{{uniform: [{lo:.4g}, {hi:.4g}]}}"
    finite = t[torch.isfinite(t)] if t.numel() else t
    if finite.numel() >= 1 and float(finite.min()) >= 0.0:
        # The sample is non-negative (probabilities, variances, positive-only inputs): keep it so.
        lo = math.floor(float(finite.min()) * 10) / 10
        hi = max(math.ceil(float(finite.max()) * 10) / 10, lo + 0.1)
        if hi <= 1.0:
            lo, hi = (lo if lo > 0 else 0.0), 1.0
        return f"{{uniform: [{lo:.4g}, {hi:.4g}]}}"
    return "{uniform: [-1.0, 1.0]}"


def yaml_str(s: str) -> str:
    return json.dumps(s)  # JSON strings are YAML strings


def case_yaml(
    name: str,
    description: str,
    entry: str,
    tensors: list[Any],
    input_names: list[str],
    values: list[str | None],
    symbolic: bool,
) -> str:
    lines = [f"description: {yaml_str(description)}"]
    lines.append("model:")
    lines.append("  source: sweep_models.py")
    lines.append(f"  entry: {entry}")
    lines.append("inputs:")
    for t, n, v in zip(tensors, input_names, values, strict=True):
        shape = [str(s) for s in t.shape]
        if symbolic and shape:
            shape[0] = "B"
        fields = [f"name: {n}", f"shape: [{', '.join(shape)}]"]
        fields.append(f"dtype: {HARNESS_DTYPES[str(t.dtype)]}")
        if v is not None:
            fields.append(f"values: {v}")
        lines.append("  - {" + ", ".join(fields) + "}")
    if symbolic:
        b = int(tensors[0].shape[0])
        lines.append("dims:")
        lines.append(f"  B: {{trace: {b}, min: 1, max: {b + 3}}}")
    lines.append(
        f"check: {{samples: {SAMPLES}, seed: 0, rtol: {RTOL:.1e}, atol: {ATOL:.1e}, timeout_s: {TIMEOUT_S}}}"
    )
    return "\n".join(lines) + "\n"


def sanitize(s: str) -> str:
    return re.sub(r"\W", "_", s)


@dataclass
class Generated:
    name: str
    cls_src: str
    yaml: str
    manifest: str


def pick_sample(samples: Any, render: Any, allow_dummy: bool = False) -> tuple[int, Any, Any] | str:
    """The first sample input that renders, is small and has at least one tensor; ndim >= 1
    and non-empty tensors preferred. Returns (index, sample, rendered) or the last reason."""
    reason = "no sample inputs"
    fallback = None
    for i, s in enumerate(samples):
        if i >= SAMPLES_SCANNED:
            break
        try:
            out = render(s)
        except Unrenderable as e:
            reason = f"sample not renderable: {e}"
            continue
        except Exception as e:  # noqa: BLE001 - op_db's own functions
            reason = f"rendering raised {type(e).__name__}: {e}"
            continue
        r = out[0]
        if not r.tensors:
            if not allow_dummy:
                reason = "sample has no tensor inputs"
                continue
            # A factory op: the model takes one unused input (the harness needs one).
            import torch

            r.tensors.append(torch.zeros(1))
            r.names.append("unused")
            return i, s, out
        if tensors_numel(r.tensors) > MAX_ELEMENTS:
            reason = f"sample too large ({tensors_numel(r.tensors)} elements)"
            continue
        nice = all(t.numel() > 0 and t.dim() >= 1 for t in r.tensors)
        if nice:
            return i, s, out
        if fallback is None:
            fallback = (i, s, out)
    return fallback if fallback is not None else reason


def gen_op(op: Any, include_nondet: bool) -> Generated | str:
    import torch
    from torch.testing._internal.opinfo.core import BinaryUfuncInfo, UnaryUfuncInfo

    full = op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")
    if not include_nondet:
        if is_random(full):
            return "random op (by name): eager is not deterministic"
        if getattr(op, "has_nondeterministic_output", False):
            return "has_nondeterministic_output (uninitialized memory)"
    if full.startswith("jiterator"):
        return "CUDA-only (jiterator)"
    if torch.float32 not in op.supported_dtypes("cpu"):
        return "float32 not supported on CPU"
    callee = op_callee(op)
    if callee is None:
        return "op_db calls it through a lambda or private wrapper (no public callable)"
    kind, target = callee

    def render(s: Any) -> tuple[Rendered, str]:
        r = Rendered()
        if kind == "attr":
            if s.args or s.kwargs:
                raise Unrenderable("attribute with arguments")
            return r, f"{lit(s.input, r)}.{target}"
        if kind == "special":
            expr = _special(target, s, r)
            assert expr is not None
            return r, expr
        if kind == "method":
            if not isinstance(s.input, torch.Tensor):
                raise Unrenderable("method on a non-tensor")
            x = lit(s.input, r)
            return r, f"{x}.{target}({call_args(s.args, s.kwargs, r)})"
        return r, f"{target}({call_args((s.input, *s.args), s.kwargs, r)})"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            samples = op.sample_inputs("cpu", torch.float32, requires_grad=False)
        except Exception as e:  # noqa: BLE001
            return f"sample_inputs raised {type(e).__name__}: {e}"
        picked = pick_sample(samples, render, allow_dummy=True)
    if isinstance(picked, str):
        return picked
    idx, s, (r, expr) = picked
    name = "op__" + sanitize(full)
    cls = name
    params = ", ".join(f"{n}: torch.Tensor" for n in r.names)
    src = (
        f"class {cls}(torch.nn.Module):\n"
        f"    # op_db {full!r}, sample {idx}\n"
        f"    def forward(self, {params}):\n"
        f"        return {expr}\n"
    )
    elementwise = isinstance(op, (UnaryUfuncInfo, BinaryUfuncInfo))
    firsts = {t.shape[0] if t.dim() else None for t in r.tensors}
    symbolic = (
        elementwise
        and len(firsts) == 1
        and None not in firsts
        and next(iter(firsts)) > 0
        and not getattr(s, "broadcasts_input", False)
    )
    domain = getattr(op, "domain", None)
    values = []
    for j, t in enumerate(r.tensors):
        # The domain is the first input's (unary ops); the others keep their sample's range.
        values.append(value_spec(t, domain if j == 0 else None))
    desc = f"op_db {full}, sample input {idx}: {expr}"
    y = case_yaml(name, desc, cls, r.tensors, r.names, values, symbolic)
    shapes = ";".join(
        f"{n}:{HARNESS_DTYPES[str(t.dtype)]}{list(t.shape)}" for n, t in zip(r.names, r.tensors, strict=True)
    )
    return Generated(name, src, y, f"{name}\top\t{full}\t{idx}\t{shapes}\t{symbolic}")


ELEMENTWISE_MODULES = {
    "CELU",
    "ELU",
    "GELU",
    "Hardshrink",
    "Hardswish",
    "Hardtanh",
    "LeakyReLU",
    "LogSigmoid",
    "Mish",
    "PReLU",
    "ReLU",
    "ReLU6",
    "SELU",
    "SiLU",
    "Sigmoid",
    "Softplus",
    "Softshrink",
    "Softsign",
    "Tanh",
    "Tanhshrink",
    "Threshold",
}


def gen_module(mi: Any, k: int, include_nondet: bool) -> list[Generated | str]:
    import torch

    short = mi.name.split(".")[-1]
    if not include_nondet and is_random(mi.name):
        return ["random module (by name): eager is not deterministic"]
    if torch.float32 not in mi.supported_dtypes("cpu"):
        return ["float32 not supported on CPU"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inputs = mi.module_inputs_func(
                mi, device="cpu", dtype=torch.float32, requires_grad=False, training=False
            )
    except Exception as e:  # noqa: BLE001
        return [f"module_inputs_func raised {type(e).__name__}: {e}"]
    out: list[Generated | str] = []
    reasons: list[str] = []
    for idx, mod_in in enumerate(inputs):
        if len([o for o in out if isinstance(o, Generated)]) >= k:
            break
        r = Rendered()
        try:
            ctor = (
                call_args(mod_in.constructor_input.args, mod_in.constructor_input.kwargs, Rendered())
                if not _has_tensor(mod_in.constructor_input)
                else _ctor_with_consts(mod_in)
            )
            fwd = call_args(mod_in.forward_input.args, mod_in.forward_input.kwargs, r)
        except Unrenderable as e:
            reasons.append(f"input {idx} not renderable: {e}")
            continue
        if not r.tensors:
            reasons.append(f"input {idx} has no tensor inputs")
            continue
        if tensors_numel(r.tensors) > MAX_ELEMENTS:
            reasons.append(f"input {idx} too large")
            continue
        if any(t.numel() == 0 for t in r.tensors):
            reasons.append(f"input {idx} has an empty tensor")
            continue
        name = f"mod__{sanitize(mi.name)}__{idx}"
        cls = name
        params = ", ".join(f"{n}: torch.Tensor" for n in r.names)
        lazy = short.startswith("Lazy")
        init_fwd = ""
        if lazy:
            # Lazy modules are materialized by a first forward; do it at construction, as a
            # deployment must before exporting (deep copies of an unmaterialized module would
            # each draw their own weights).
            zeros = ", ".join(f"torch.zeros({tuple(t.shape)!r}, dtype={t.dtype})" for t in r.tensors)
            init_fwd = f"        with torch.no_grad():\n            self.m({zeros})\n"
        src = (
            f"class {cls}(torch.nn.Module):\n"
            f"    # module_db {mi.name!r}, module input {idx}\n"
            f"    def __init__(self):\n"
            f"        super().__init__()\n"
            f"        self.m = torch.{mi.name}({ctor})\n"
            f"{init_fwd}"
            f"    def forward(self, {params}):\n"
            f"        return self.m({fwd})\n"
        )
        firsts = {t.shape[0] if t.dim() else None for t in r.tensors}
        ndims = {t.dim() for t in r.tensors}
        batched = (
            len(firsts) == 1
            and None not in firsts
            and (min(ndims) >= 3 or short in ELEMENTWISE_MODULES)
            and not lazy
        )
        values = [value_spec(t, None) for t in r.tensors]
        desc = f"module_db {mi.name}, module input {idx}: torch.{mi.name}({ctor})({fwd})"
        y = case_yaml(name, desc, cls, r.tensors, r.names, values, batched)
        shapes = ";".join(
            f"{n}:{HARNESS_DTYPES[str(t.dtype)]}{list(t.shape)}"
            for n, t in zip(r.names, r.tensors, strict=True)
        )
        out.append(Generated(name, src, y, f"{name}\tmodule\t{mi.name}\t{idx}\t{shapes}\t{batched}"))
    if not out:
        return [reasons[-1] if reasons else "no module inputs"]
    return out


def _has_tensor(fi: Any) -> bool:
    import torch

    def walk(v: Any) -> bool:
        if isinstance(v, torch.Tensor):
            return True
        if isinstance(v, (list, tuple)):
            return any(walk(x) for x in v)
        if isinstance(v, dict):
            return any(walk(x) for x in v.values())
        return False

    return walk(list(fi.args)) or walk(fi.kwargs)


def _ctor_with_consts(mod_in: Any) -> str:
    """Constructor arguments with tensors (e.g. a loss's class weights) as literal constants."""
    r = Rendered()
    parts = [lit(a, r, const_tensors=True) for a in mod_in.constructor_input.args]
    parts += [f"{k}={lit(v, r, const_tensors=True)}" for k, v in mod_in.constructor_input.kwargs.items()]
    return ", ".join(parts)


HEADER = '''"""Generated by harness/python/sweep/generate.py from torch's op_db and module_db: one
module per case. Do not edit; re-run the generator."""

import torch
import torch.nn.functional  # noqa: F401
import torch.linalg  # noqa: F401
import torch.special  # noqa: F401
import torch.fft  # noqa: F401

'''


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True, help="folder to write the cases into")
    ap.add_argument("--limit", type=int, default=None, help="at most N ops and N modules")
    ap.add_argument("--ops", default=None, help="only ops whose name matches this regex")
    ap.add_argument("--modules", default=None, help="only modules whose name matches this regex")
    ap.add_argument("--no-ops", action="store_true")
    ap.add_argument("--no-modules", action="store_true")
    ap.add_argument("--module-samples", type=int, default=1, help="cases per module (default 1)")
    ap.add_argument(
        "--include-nondeterministic",
        action="store_true",
        help="do not skip random ops and ops with uninitialized outputs (to check the harness's "
        "nondeterministic_eager handling)",
    )
    a = ap.parse_args(argv)
    if argv is None and os.environ.get("PYTHONHASHSEED") != "0":
        # Some sample functions iterate over sets of strings (meshgrid's indexing modes): fix
        # the hash seed so the same torch gives the same sweep.
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)

    os.environ.setdefault("PYTORCH_TESTING_DEVICE_ONLY_FOR", "cpu")
    import torch

    torch.manual_seed(0)  # op_db's sample functions draw with torch's global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.testing._internal.common_methods_invocations import op_db
        from torch.testing._internal.common_modules import module_db

    os.makedirs(a.out, exist_ok=True)
    gens: list[Generated] = []
    skipped: list[tuple[str, str, str]] = []
    if not a.no_ops:
        n = 0
        for op in op_db:
            full = op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")
            if a.ops and not re.search(a.ops, full):
                continue
            if a.limit is not None and n >= a.limit:
                break
            torch.manual_seed(0)
            g = gen_op(op, a.include_nondeterministic)
            if isinstance(g, str):
                skipped.append(("op", full, g))
            else:
                gens.append(g)
                n += 1
    if not a.no_modules:
        n = 0
        for mi in module_db:
            if a.modules and not re.search(a.modules, mi.name):
                continue
            if a.limit is not None and n >= a.limit:
                break
            torch.manual_seed(0)
            for g in gen_module(mi, a.module_samples, a.include_nondeterministic):
                if isinstance(g, str):
                    skipped.append(("module", mi.name, g))
                else:
                    gens.append(g)
                    n += 1

    seen: set[str] = set()
    for g in gens:
        assert g.name not in seen, g.name
        seen.add(g.name)
    # Remove cases of an earlier run so the folder is exactly this sweep.
    for f in os.listdir(a.out):
        if (f.startswith("op__") or f.startswith("mod__")) and f.endswith(".yaml"):
            os.remove(os.path.join(a.out, f))
    with open(os.path.join(a.out, "sweep_models.py"), "w") as f:
        f.write(HEADER)
        for g in gens:
            f.write("\n" + g.cls_src + "\n")
    for g in gens:
        with open(os.path.join(a.out, g.name + ".yaml"), "w") as f:
            f.write(g.yaml)
    with open(os.path.join(a.out, "skipped.tsv"), "w") as f:
        f.write("kind\tname\treason\n")
        for kind, name, why in skipped:
            f.write(f"{kind}\t{name}\t{why.replace(chr(9), ' ').replace(chr(10), ' ')}\n")
    with open(os.path.join(a.out, "manifest.tsv"), "w") as f:
        f.write("case\tkind\tname\tsample\tinputs\tsymbolic_B\n")
        for g in gens:
            f.write(g.manifest + "\n")
    ops = sum(g.name.startswith("op__") for g in gens)
    print(
        f"wrote {ops} op cases and {len(gens) - ops} module cases to {a.out}; "
        f"skipped {len(skipped)} (see skipped.tsv)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
