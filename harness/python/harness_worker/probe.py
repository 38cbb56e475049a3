"""The device probe: eager and the saved artifacts, run with inputs on another device."""

import copy
import time
from collections.abc import Callable
from typing import Any

import torch

from harness_worker.eager import encode, load_inputs, to_device
from harness_worker.errors import ErrorKind, error_body


def _attempt(make: Callable[[], Any], inputs: list[Any]) -> dict[str, Any]:
    """Run what `make` returns on the inputs; describe the output (no data: meta tensors have
    none) or the failure, which is the data here."""
    try:
        with torch.no_grad():
            return {"ok": True, "output": encode(make()(*inputs), "o", None)}
    except Exception as exc:  # noqa: BLE001 - a failure here is the data
        return {"ok": False, "error": error_body(ErrorKind.DEVICE, exc)}


def device_probe(model: torch.nn.Module, req: dict[str, Any]) -> dict[str, Any]:
    """A `device_probe` request: eager on a copy of the model, then each artifact loaded onto
    the device (meta or cuda)."""
    device = req["device"]
    inputs = [to_device(t, device) for t in load_inputs(req["input"], req["names"])]
    reply: dict[str, Any] = {}
    start = time.perf_counter()
    reply["eager"] = _attempt(lambda: copy.deepcopy(model).to(device), inputs)
    for variant, path in (req.get("artifacts") or {}).items():
        reply[variant] = _attempt(lambda path=path: torch.jit.load(path, map_location=device), inputs)
    reply["seconds"] = time.perf_counter() - start
    return reply
