"""Shared fixtures: model files, input files, and a Worker with a model loaded."""

import itertools
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from harness_worker.worker import Worker

_CASES = itertools.count()

# A model with data-dependent control flow, a frozen dim, a float constant and a device pin.
BRANCHY = """
    import torch


    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 3)

        def forward(self, x):
            n = int(x.shape[0])
            y = self.fc(x) * 2.5
            if x.sum() > 0:
                y = y + torch.arange(x.shape[1], device="cpu")
            return y.reshape(n, -1).cpu()
"""


@pytest.fixture
def write_model(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a model source file (dedented) and return its path."""

    def write(source: str, name: str = "model.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source).lstrip())
        return path

    return write


@pytest.fixture
def write_inputs(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """Write sample tensors (`<sample>/<name>`) to one file; return the `input` ref of the first."""

    def write(
        samples: dict[str, dict[str, torch.Tensor]], name: str = "inputs.safetensors"
    ) -> dict[str, str]:
        path = tmp_path / name
        tensors = {f"{sid}/{n}": t.contiguous() for sid, ts in samples.items() for n, t in ts.items()}
        save_file(tensors, str(path))
        return {"file": str(path), "sample": next(iter(samples))}

    return write


@pytest.fixture
def loaded(write_model: Callable[[str, str], Path]) -> Callable[[str], tuple[Worker, str, dict[str, Any]]]:
    """A Worker with a model loaded from source: (worker, case, load reply)."""

    def load(source: str) -> tuple[Worker, str, dict[str, Any]]:
        case = f"case{next(_CASES)}"
        path = write_model(source, f"{case}_model.py")
        worker = Worker()
        reply = worker.op_load({"case": case, "source": str(path), "entry": "Model", "seed": 0})
        return worker, case, reply

    return load
