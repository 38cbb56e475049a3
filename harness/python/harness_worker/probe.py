"""The device probe: eager and the saved artifacts, run with inputs on another device."""

import copy
import time
from collections.abc import Callable
from typing import Any

import torch

from harness_worker import program
from harness_worker.calls import Arg, call, call_artifact, load_args, on_device
from harness_worker.eager import encode
from harness_worker.errors import ErrorKind, error_body


def _attempt(make: Callable[[], Any], inputs: list[Arg], artifact: bool) -> dict[str, Any]:
    """Run what `make` returns on the inputs (as eager is called, or as libtorch calls an
    artifact); describe the output (no data: meta tensors have none) or the failure, which is the
    data here."""
    try:
        with torch.no_grad():
            fn = make()
            output = call_artifact(fn, inputs) if artifact else call(fn, inputs)
            return {"ok": True, "output": encode(output, "o", None)}
    except Exception as exc:  # noqa: BLE001 - a failure here is the data
        return {"ok": False, "error": error_body(ErrorKind.DEVICE, exc)}


def device_probe(model: torch.nn.Module, req: dict[str, Any]) -> dict[str, Any]:
    """A `device_probe` request: eager on a copy of the model, then each artifact loaded onto
    the device (meta or cuda)."""
    device = req["device"]
    inputs = on_device(load_args(req["input"], req["names"]), device)
    reply: dict[str, Any] = {}
    start = time.perf_counter()
    reply["eager"] = _attempt(lambda: copy.deepcopy(model).to(device), inputs, artifact=False)
    for variant, path in (req.get("artifacts") or {}).items():
        if path.endswith(".pt2"):  # a torch.export program: called as eager is
            reply[variant] = _attempt(lambda path=path: program.load(path).to(device), inputs, artifact=False)
        else:
            reply[variant] = _attempt(lambda path=path: load_on(path, device), inputs, artifact=True)
    reply["seconds"] = time.perf_counter() - start
    return reply


def load_on(path: str, device: str) -> torch.jit.ScriptModule:
    """An artifact as a deployment would hold it on `device`: its state there (parameters,
    buffers, and tensor attributes its methods read, such as an RNN's `_flat_weights`). On meta,
    its graph's tensor constants stay on the CPU where they were saved: `map_location="meta"`
    would move them too, and a graph that copies a constant back (`torch.to(c0, cpu)`, as
    advanced indexing with a constant index does) then fails only because meta tensors have no
    data, which on a real device it would not."""
    if device != "meta":
        return torch.jit.load(path, map_location=device)
    module = torch.jit.load(path, map_location="cpu")
    for sub in module.modules():
        for name in _state_names(sub):
            value = sub._c.getattr(name)
            if isinstance(value, torch.Tensor):
                sub._c.setattr(name, value.to(device))
            elif isinstance(value, list) and value and all(isinstance(t, torch.Tensor) for t in value):
                sub._c.setattr(name, [t.to(device) for t in value])
    return module


def _state_names(sub: torch.jit.ScriptModule) -> set[str]:
    """A module's parameters and buffers, and the attributes its own methods read."""
    names = {n for n, _ in sub.named_parameters(recurse=False)}
    names |= {n for n, _ in sub.named_buffers(recurse=False)}
    for method in sub._c._method_names():
        for node in sub._c._get_method(method).graph.nodes():
            if node.kind() == "prim::GetAttr":
                names.add(node.s("name"))
    return {n for n in names if sub._c.hasattr(n)}
