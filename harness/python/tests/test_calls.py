"""calls.py: input kinds on the wire, eager calls, the trace of a model with bound non-tensor and
keyword inputs, and an artifact called by its forward's argument names."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from harness_worker.calls import Arg, call, call_artifact, load_args, parse_name, traceable
from harness_worker.errors import HarnessError
from harness_worker.worker import Worker

SCALED = """
    from typing import Optional

    import torch


    class Model(torch.nn.Module):
        def forward(self, x, k: int, flag: bool, mask: Optional[torch.Tensor] = None, scale: float = 1.0):
            y = x * k * scale
            if mask is not None:
                y = y + mask
            return -y if flag else y
"""
NAMES = ["x", "k:int", "flag:bool", "mask:none=", "scale:float="]


def test_wire_names_say_kind_and_keyword() -> None:
    assert parse_name("x") == ("x", "tensor", False)
    assert parse_name("images[]") == ("images", "list", False)
    assert parse_name("k:int") == ("k", "int", False)
    assert parse_name("mask:none=") == ("mask", "none", True)
    assert parse_name("m=") == ("m", "tensor", True)
    with pytest.raises(HarnessError):
        parse_name("k:str")


@pytest.fixture
def sample(write_inputs: Callable[..., dict[str, str]]) -> dict[str, str]:
    return write_inputs(
        {
            "s0": {
                "x": torch.ones(2, 3),
                "k": torch.tensor(3),
                "flag": torch.tensor(True),
                "scale": torch.tensor(0.5, dtype=torch.float64),
            }
        }
    )


def test_inputs_go_to_the_cases_device_and_scalars_stay_python(sample: dict[str, str]) -> None:
    """A case run on another device gets its tensors there (meta stands in for CUDA here) and
    its scalars as Python values, as eager takes them."""
    args = load_args(sample, NAMES, device="meta")
    assert args[0].value.device.type == "meta" and args[0].value.shape == (2, 3)
    assert (args[1].value, args[2].value, args[3].value, args[4].value) == (3, True, None, 0.5)
    assert load_args(sample, NAMES)[0].value.device.type == "cpu"


def test_exact_numerics_turn_tf32_off_and_cudnn_deterministic() -> None:
    from harness_worker.eager import exact_numerics

    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
    )
    torch.backends.cudnn.deterministic = False
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        exact_numerics()  # what a CUDA case's child sets before it moves the model
        assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.backends.cudnn.deterministic = saved[2]


def test_a_cpu_case_traces_convolutions_with_torchs_own_flags() -> None:
    """The snapshots of CPU cases are what a team's trace makes: the default flags, which a trace
    records in every convolution."""
    Worker()
    conv = torch.nn.Conv1d(2, 2, 1)
    code = torch.jit.trace(conv, torch.ones(1, 2, 3)).code
    assert "False, False, True, True)" in code, code


def test_scalars_none_and_keywords_reach_eager(sample: dict[str, str]) -> None:
    args = load_args(sample, NAMES)
    assert [(a.name, a.kind, a.keyword) for a in args][1:] == [
        ("k", "int", False),
        ("flag", "bool", False),
        ("mask", "none", True),
        ("scale", "float", True),
    ]
    assert (args[1].value, args[2].value, args[3].value, args[4].value) == (3, True, None, 0.5)
    seen: dict[str, Any] = {}

    def fn(*pos: Any, **kw: Any) -> None:
        seen.update(pos=pos, kw=kw)

    call(fn, args)
    assert seen["pos"][1:] == (3, True) and seen["kw"] == {"mask": None, "scale": 0.5}


def test_the_trace_binds_non_tensors_and_names_the_tensors(
    loaded: Callable[[str], tuple[Worker, str, dict[str, Any]]], sample: dict[str, str], tmp_path: Path
) -> None:
    worker, case, _ = loaded(SCALED)
    args = load_args(sample, NAMES)
    module, example = traceable(worker.models[case], args)
    assert len(example) == 1
    traced = torch.jit.trace(module, example, check_trace=False)
    assert [a.name for a in traced.forward.schema.arguments] == ["self", "x"]
    # The trace-time k, flag and scale are baked in: -(x * 3 * 0.5).
    assert torch.equal(traced(torch.ones(1, 3)), torch.full((1, 3), -1.5))
    assert torch.equal(call_artifact(traced, args), torch.full((2, 3), -1.5))
    # Only tensors, all positional: the model itself is traced.
    plain = load_args(sample, ["x"])
    assert traceable(worker.models[case], plain)[0] is worker.models[case]

    reply = worker.op_export(
        {
            "case": case,
            "input": sample,
            "names": NAMES,
            "variants": [
                {"name": "traced", "method": "trace", "options": {}},
                {"name": "scripted", "method": "script", "options": {}},
            ],
            "dims": {},
            "out_dir": str(tmp_path / "out"),
        }
    )
    traced, scripted = reply["exports"]["traced"], reply["exports"]["scripted"]
    assert traced["ok"] and traced["args"] == ["x"] and traced["bound"] == ["k", "flag", "mask", "scale"]
    assert scripted["args"] == ["x", "k", "flag", "mask", "scale"] and scripted["bound"] == []
    assert scripted["defaults"] == {"mask": {"t": "none"}, "scale": {"t": "float", "v": "1.0"}}
    loaded_scripted = torch.jit.load(scripted["path"])
    assert torch.equal(call_artifact(loaded_scripted, args), torch.full((2, 3), -1.5))
    retrace = worker.op_retrace({"case": case, "input": sample, "names": NAMES, "variant": "traced"})
    assert retrace["traced"] and retrace["same_ops"]


def test_an_artifact_named_otherwise_gets_its_inputs_by_position() -> None:
    class Sub(torch.nn.Module):
        def forward(self, input: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
            return input - other

    scripted = torch.jit.script(Sub())
    xs = [Arg("a", "tensor", False, torch.tensor(5)), Arg("b", "tensor", False, torch.tensor(2))]
    assert call_artifact(scripted, xs).item() == 3
    swapped = [Arg("other", "tensor", False, torch.tensor(5)), Arg("input", "tensor", False, torch.tensor(2))]
    assert call_artifact(scripted, swapped).item() == -3
