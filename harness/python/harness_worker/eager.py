"""Eager runs: inputs from tensor files, outputs as a JSON tree plus a tensor file."""

import contextlib
import hashlib
import os
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from safetensors.torch import save_file

from harness_worker.calls import Arg, call, load_args
from harness_worker.errors import ErrorKind, HarnessError, error_body


def state_digest(model: torch.nn.Module) -> str:
    """A digest of parameters and buffers: tracing or scripting must never change the eager model."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        t = t.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _encode_items(
    values: list[Any] | tuple[Any, ...], key: str, tensors: dict[str, torch.Tensor] | None
) -> list[Any]:
    return [encode(v, f"{key}.{i}", tensors) for i, v in enumerate(values)]


def _encode_tensor(value: torch.Tensor, key: str, tensors: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    if tensors is None:  # describe only: no data (meta tensors have none)
        return {
            "t": "tensor_desc",
            "shape": list(value.shape),
            "dtype": str(value.dtype).replace("torch.", ""),
            "device": str(value.device),
        }
    node: dict[str, Any] = {"t": "tensor", "key": key}
    if value.device.type != "cpu":
        node["device"] = str(value.device)  # the harness compares where the output is, too
        value = value.cpu()
    value, dtype = transportable(value.detach())
    tensors[key] = value.clone().contiguous()
    if dtype is not None:
        node["dtype"] = dtype
    return node


def transportable(t: torch.Tensor) -> tuple[torch.Tensor, str | None]:
    """A tensor safetensors and the harness's libtorch can carry, and the dtype it stands for when
    that is another one: complex as `view_as_real` (real and imaginary parts, a last dim of 2),
    unsigned ints wider than 8 bits as int64, float8s as float32, quantized as dequantized, sparse
    as dense (`sparse_coo:float32`). The
    harness turns the variant's outputs of these dtypes into the same form before comparing."""
    dtype = str(t.dtype).replace("torch.", "")
    if t.layout != torch.strided:  # sparse: compared as its dense values, named by its layout
        dense, inner = transportable(t.to_dense())
        return dense, f"{str(t.layout).replace('torch.', '')}:{inner or dtype}"
    if t.is_complex():
        return torch.view_as_real(t.resolve_conj()), dtype
    if t.dtype in (torch.uint16, torch.uint32, torch.uint64):
        return t.to(torch.int64), dtype
    if dtype.startswith("float8"):
        return t.to(torch.float32), dtype
    if t.is_quantized:
        return t.dequantize(), dtype
    return t, None


def encode(value: Any, key: str, tensors: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    """Describe an output as a JSON tree; tensor leaves go into `tensors` under their key."""
    if isinstance(value, torch.Tensor):
        return _encode_tensor(value, key, tensors)
    if isinstance(value, bool):
        return {"t": "bool", "v": value}
    if isinstance(value, int):
        return {"t": "int", "v": value}
    if isinstance(value, float):
        return {"t": "float", "v": repr(value)}
    if isinstance(value, str):
        return {"t": "str", "v": value}
    if value is None:
        return {"t": "none"}
    if isinstance(value, tuple):
        return {"t": "tuple", "items": _encode_items(value, key, tensors)}
    if isinstance(value, list):
        return {"t": "list", "items": _encode_items(value, key, tensors)}
    if isinstance(value, dict):
        items = []
        for i, (k, v) in enumerate(value.items()):
            if not isinstance(k, str | int | bool | float):
                raise TypeError(f"dict key of type {type(k).__name__} cannot be compared")
            items.append([encode(k, f"{key}.k{i}", tensors), encode(v, f"{key}.{i}", tensors)])
        return {"t": "dict", "items": items}
    raise TypeError(f"output of type {type(value).__name__} cannot be compared")


def _run_sample(
    model: torch.nn.Module, sid: str, inputs: list[Arg], path: str, outputs: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """One sample's result; its output tensors go into `outputs`."""
    start = time.perf_counter()
    try:
        with torch.no_grad():
            output = call(model, inputs)
    except Exception as exc:  # noqa: BLE001 - reported per sample
        return {"id": sid, "ok": False, "error": error_body(ErrorKind.EAGER_RAISED, exc)}
    seconds = time.perf_counter() - start
    tensors: dict[str, torch.Tensor] = {}
    try:
        tree = encode(output, f"{sid}/o", tensors)
    except TypeError as exc:
        return {"id": sid, "ok": False, "error": error_body(ErrorKind.UNSUPPORTED_OUTPUT, exc)}
    outputs.update(tensors)
    return {"id": sid, "ok": True, "output": tree, "path": path, "seconds": seconds}


def run_eager(model: torch.nn.Module, req: dict[str, Any], path: str, device: str = "cpu") -> dict[str, Any]:
    """An `eager` request: every sample, with all of their outputs in one file at `path`
    (`<sample>/o`, `<sample>/o.0`, ...). `model` is the eager model, or the loaded program the
    request names (`program`), which runs the same way, on inputs on `device` (the case's)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    results = []
    files: dict[str, Any] = {}
    outputs: dict[str, torch.Tensor] = {}
    for sample in req["samples"]:
        sid = sample["id"]
        try:
            inputs = load_args(sample["input"], req["names"], files, device)
        except Exception as exc:  # noqa: BLE001
            raise HarnessError(ErrorKind.PROTOCOL, f"cannot read sample {sid}: {exc}") from exc
        with _filled_uninitialized(bool(sample.get("fill_uninitialized"))):
            results.append(_run_sample(model, sid, inputs, path, outputs))
    save_file(outputs, path)
    return {"results": results}


@contextlib.contextmanager
def _filled_uninitialized(on: bool) -> Iterator[None]:
    """Run with uninitialized memory filled (NaN, or the largest integer), as torch's
    deterministic mode does: a determinism repeat run this way differs from the plain run exactly
    when the model reads memory it never wrote (`torch.empty_like`), which two plain runs can hide
    by getting the same garbage twice."""
    if not on:
        yield
        return
    was = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    fill = torch.utils.deterministic.fill_uninitialized_memory
    _deterministic(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ops without a deterministic kernel only warn
            yield
    finally:
        _deterministic(was[0], warn_only=was[1])
        torch.utils.deterministic.fill_uninitialized_memory = fill


def exact_numerics() -> None:
    """The numerics a GPU run is judged with, the same the harness gives libtorch
    (engine/csrc/numerics.cpp): no TF32 in cuBLAS or cuDNN (it rounds float32 matmuls and
    convolutions to 10 mantissa bits), cuDNN deterministic and not benchmarking. Set in a case's
    child when the case runs on CUDA; the trace then records them in its convolutions."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _deterministic(mode: bool, warn_only: bool) -> None:
    """`torch.use_deterministic_algorithms` for eager runs. torch's own function also sets
    inductor's flag, importing `torch._inductor.config` to do so: torch._dynamo and about 900
    modules, 1.4 s and 150 MB in every fork server. Eager needs only the flag in C; inductor's
    is set too where a model already imported it (a model that compiles)."""
    torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = mode
