import warnings

import pytest
import torch

from harness_worker.graph import Walk, describe_constant, static_evidence, submodule_code, trace_diff


class Branchy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        y = self.fc(x) * 2.5
        if x.sum() > 0:
            y = y + torch.arange(x.shape[1], device="cpu")
        return y.reshape(n, -1).cpu()


@pytest.fixture(scope="module")
def walks() -> tuple[Walk, Walk]:
    model = Branchy().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(model, (torch.ones(5, 3),), check_trace=False)
        scripted = torch.jit.script(model)
    return Walk(traced.inlined_graph), Walk(scripted.inlined_graph)


def test_control_flow_is_counted(walks: tuple[Walk, Walk]) -> None:
    traced, scripted = walks
    assert traced.ops.count("prim::If") == 0
    assert scripted.ops.count("prim::If") == 1
    assert "prim::Constant" not in traced.ops


def test_device_pins(walks: tuple[Walk, Walk]) -> None:
    traced, scripted = walks
    # The trace records `torch.arange(..., device="cpu")` and `.cpu()` as Device constants, at
    # this file's lines; the scripted graph keeps `.cpu()` as an op.
    assert traced.pins == [f'device("cpu") constant at {__file__}:{line}' for line in (18, 19)]
    assert "aten::cpu" in scripted.pins
    assert len(traced.pins) == len(set(traced.pins))


def test_constants(walks: tuple[Walk, Walk]) -> None:
    traced, scripted = walks
    ints = [c for c in traced.consts if c["type"] == "int" and c["value"] == "5"]
    assert ints and all(c["where"].startswith(__file__) for c in ints)
    assert any(c["type"] == "float" and c["value"] == "2.5" for c in scripted.consts)


def test_static_evidence(walks: tuple[Walk, Walk]) -> None:
    traced, scripted = walks
    evidence = static_evidence(traced, scripted, {"B": 5, "F": 1})
    assert evidence["traced_control_flow"] == {"if": 0, "loop": 0}
    assert evidence["scripted_control_flow"] == {"if": 1, "loop": 0}
    frozen = evidence["traced_only_constants"]
    dims = [c for c in frozen if c.get("note") == "equals the trace-time value of dim B"]
    assert dims and dims[0]["value"] == "5"
    # The trace baked the scalar 2.5 into a tensor constant; the scripted graph has a float.
    assert {"type": "Tensor", "value": "2.5", "where": f"{__file__}:16"} in frozen
    # Constants the scripted graph holds too, and ints that equal no dim, are left out.
    assert not any(c["type"] in ("int", "bool") and c["value"] in ("1", "-1", "False") for c in frozen)


def test_static_evidence_without_variants(walks: tuple[Walk, Walk]) -> None:
    traced, scripted = walks
    assert static_evidence(None, None, {}) == {}
    assert set(static_evidence(None, scripted, {})) == {"scripted_control_flow"}
    only_traced = static_evidence(traced, None, {})
    assert set(only_traced) == {"traced_control_flow", "traced_only_constants"}
    assert any(c["value"] == "2.5" for c in only_traced["traced_only_constants"])


def test_trace_diff(walks: tuple[Walk, Walk]) -> None:
    traced, _ = walks
    same = trace_diff((traced.ops, traced.consts), traced)
    assert same["same_ops"] and not same["kinds_differ"] and same["changed_constants"] == []
    consts = [dict(c) for c in traced.consts]
    for c in consts:
        if c["value"] == "5":
            c["value"] = "7"
    diff = trace_diff((traced.ops + ["aten::relu"], consts), traced)
    assert not diff["same_ops"] and diff["kinds_differ"]
    assert diff["first_difference"] == {"index": len(traced.ops), "before": "aten::relu", "after": None}
    assert {(c["before"], c["after"]) for c in diff["changed_constants"]} == {("7", "5")}


def test_describe_constant_and_submodules() -> None:
    assert describe_constant(torch.tensor([1.0, 2.0])) == "tensor(float32, [2], [1.0, 2.0])"
    assert describe_constant(torch.zeros(20)).startswith("tensor(float32, [20], sha256 ")
    assert describe_constant(3) == "3"
    modules = submodule_code(torch.jit.script(Branchy()))
    assert [m["name"] for m in modules] == ["fc"]
    assert "linear" in modules[0]["code"]
