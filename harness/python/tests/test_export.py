"""op_load, op_export (protocol 5), op_retrace and op_eager end to end, in process."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import BRANCHY

from harness_worker.errors import ErrorKind, HarnessError
from harness_worker.variants import EXPORTERS, Exporter
from harness_worker.worker import Worker

TRACED = {"name": "traced", "method": "trace", "options": {}}
SCRIPTED = {"name": "scripted", "method": "script", "options": {}}
ENTRY_FIELDS = {
    "ok",
    "path",
    "args",
    "defaults",
    "bound",
    "code",
    "constants",
    "modules",
    "device_pins",
    "warnings",
    "seconds",
}

Load = Callable[[str], tuple[Worker, str, dict[str, Any]]]


def export(
    worker: Worker, case: str, ref: dict[str, str], out: Path, *variants: dict[str, Any]
) -> dict[str, Any]:
    req = {
        "op": "export",
        "id": 1,
        "case": case,
        "input": ref,
        "names": ["x"],
        "variants": list(variants),
        "dims": {"B": 5},
        "out_dir": str(out),
    }
    return worker.op_export(req)


def test_load(loaded: Load) -> None:
    _, _, reply = loaded(BRANCHY)
    assert reply["class"] == "Model"
    assert len(reply["files"]) == 1 and reply["files"][0].endswith("_model.py")
    assert len(reply["state"]) == 64


def test_load_lists_every_user_file_an_import_pulls_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`import: pkg.model`, whose module imports a helper and whose constructor imports another:
    all three are the case's files (the cache keys on them), torch and the stdlib are not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("def double(x):\n    return x * 2\n")
    (pkg / "late.py").write_text("SCALE = 3\n")
    (pkg / "model.py").write_text(
        "import json\nimport torch\nfrom pkg.helper import double\n\n"
        "class M(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        from pkg import late\n"
        "        self.scale = late.SCALE\n\n"
        "    def forward(self, x):\n"
        "        return double(x) * self.scale\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reply = Worker().op_load({"case": "c", "import": "pkg.model", "entry": "M", "kwargs": {}, "seed": 0})
    assert sorted(os.path.basename(f) for f in reply["files"]) == [
        "__init__.py",
        "helper.py",
        "late.py",
        "model.py",
    ]
    assert all(f.startswith(str(tmp_path)) for f in reply["files"])


def test_both_variants(loaded: Load, write_inputs: Callable[..., dict[str, str]], tmp_path: Path) -> None:
    worker, case, _ = loaded(BRANCHY)
    ref = write_inputs({"s0": {"x": torch.ones(5, 3)}})
    reply = export(worker, case, ref, tmp_path / "out", TRACED, SCRIPTED)
    assert set(reply) == {"exports", "eager_state_changed", "evidence"}
    assert list(reply["exports"]) == ["traced", "scripted"]
    assert reply["eager_state_changed"] is False
    for name, entry in reply["exports"].items():
        assert set(entry) == ENTRY_FIELDS, name
        assert entry["ok"] and entry["path"] == str(tmp_path / "out" / f"{name}.pt")
        assert os.path.isfile(entry["path"])
    traced = reply["exports"]["traced"]
    assert any(
        w["category"] == "TracerWarning" and w["file"].endswith("_model.py") for w in traced["warnings"]
    )
    assert traced["modules"][0]["name"] == "fc"
    evidence = reply["evidence"]
    assert evidence["traced_control_flow"] == {"if": 0, "loop": 0}
    assert evidence["scripted_control_flow"] == {"if": 1, "loop": 0}
    assert any(
        c.get("note") == "equals the trace-time value of dim B" for c in evidence["traced_only_constants"]
    )

    # The re-trace compares with the first trace variant's graph.
    other = write_inputs({"s1": {"x": torch.ones(7, 3)}}, "other.safetensors")
    retrace = worker.op_retrace({"case": case, "input": other, "names": ["x"], "variant": "traced"})
    assert retrace["traced"] and retrace["same_ops"]
    assert {(c["before"], c["after"]) for c in retrace["changed_constants"]} == {("5", "7")}


def test_a_scratch_exporter_is_one_function_and_one_entry(
    loaded: Load, write_inputs: Callable[..., dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def freeze(fresh: torch.nn.Module, inputs: tuple[Any, ...], options: dict[str, Any]) -> Any:
        return torch.jit.freeze(torch.jit.script(fresh.eval()))

    monkeypatch.setitem(EXPORTERS, "freeze", Exporter(freeze))
    worker, case, _ = loaded(BRANCHY)
    ref = write_inputs({"s0": {"x": torch.ones(5, 3)}})
    checked = {"name": "checked", "method": "trace", "options": {"check_trace": True}}
    frozen = {"name": "frozen", "method": "freeze", "options": {}}
    reply = export(worker, case, ref, tmp_path, frozen, checked)
    assert reply["exports"]["frozen"]["ok"]
    assert "fc" not in reply["exports"]["frozen"]["code"]  # freezing inlined the Linear
    assert reply["exports"]["checked"]["ok"]
    # Evidence: a trace variant, no script variant.
    assert set(reply["evidence"]) == {"traced_control_flow", "traced_only_constants"}
    assert os.path.isfile(tmp_path / "frozen.pt")

    def broken(fresh: torch.nn.Module, inputs: tuple[Any, ...], options: dict[str, Any]) -> Any:
        raise RuntimeError("cannot export")

    monkeypatch.setitem(EXPORTERS, "broken", Exporter(broken))
    reply = export(worker, case, ref, tmp_path, {"name": "b", "method": "broken"})
    assert reply["exports"]["b"]["ok"] is False
    assert reply["exports"]["b"]["error"]["kind"] == ErrorKind.EXPORT_ERROR.value
    assert reply["evidence"] == {}


RANDOM = """
    import torch


    class Model(torch.nn.Module):
        def forward(self, x):
            return x + torch.rand_like(x)
"""


def test_trace_options_pass_through(
    loaded: Load, write_inputs: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    worker, case, _ = loaded(RANDOM)
    ref = write_inputs({"s0": {"x": torch.ones(4)}})
    checked = {"name": "checked", "method": "trace", "options": {"check_trace": True}}
    reply = export(worker, case, ref, tmp_path, TRACED, checked)
    assert reply["exports"]["traced"]["ok"]  # check_trace=False by default
    assert reply["exports"]["traced"]["warnings"] == []
    # The checker ran: it re-ran the function and saw other random numbers.
    checks = reply["exports"]["checked"]["warnings"]
    assert any("does not match the corresponding output" in w["message"] for w in checks)


SCRIPT_FAILS = """
    import torch


    class Model(torch.nn.Module):
        def forward(self, x):
            try:
                return x + 1
            except Exception:
                return x
"""


def test_script_compile_error_names_the_users_line(
    loaded: Load, write_inputs: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    worker, case, load = loaded(SCRIPT_FAILS)
    ref = write_inputs({"s0": {"x": torch.ones(2)}})
    reply = export(worker, case, ref, tmp_path, TRACED, SCRIPTED)
    assert reply["exports"]["traced"]["ok"]
    failed = reply["exports"]["scripted"]
    assert set(failed) == {"ok", "error", "warnings", "seconds"} and failed["ok"] is False
    err = failed["error"]
    assert err["kind"] == "script_compile_error"
    assert err["file"] == load["files"][0]
    assert err["line"] == 6 and err["source_line"] == "try:"
    assert "try blocks aren't supported" in err["message"]
    assert not os.path.exists(tmp_path / "scripted.pt")
    assert "scripted_control_flow" not in reply["evidence"]


@pytest.mark.parametrize(
    "variants",
    [
        [{"name": "x", "method": "onnx"}],
        [{"name": "../up", "method": "trace"}],
        [TRACED, {"name": "traced", "method": "script"}],
        [{"name": "t", "method": "trace", "options": {"no_such_option": 1}}],
        "traced",
    ],
)
def test_bad_variants_are_protocol_errors(
    variants: Any, loaded: Load, write_inputs: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    worker, case, _ = loaded(BRANCHY)
    ref = write_inputs({"s0": {"x": torch.ones(5, 3)}})
    with pytest.raises(HarnessError) as info:
        export(worker, case, ref, tmp_path / "out", *([variants] if isinstance(variants, str) else variants))
    assert info.value.kind is ErrorKind.PROTOCOL
    assert not os.path.exists(tmp_path / "out")  # checked before anything is exported


def test_eager_and_retrace_before_trace(
    loaded: Load, write_inputs: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    worker, case, _ = loaded(BRANCHY)
    ref = write_inputs({"s0": {"x": torch.ones(5, 3)}, "s1": {"x": -torch.ones(2, 3)}})
    with pytest.raises(HarnessError) as info:
        worker.op_retrace({"case": case, "input": ref, "names": ["x"], "variant": "traced"})
    assert info.value.kind is ErrorKind.PROTOCOL
    samples = [{"id": s, "input": {"file": ref["file"], "sample": s}} for s in ("s0", "s1")]
    reply = worker.op_eager(
        {"case": case, "names": ["x"], "samples": samples, "out_dir": str(tmp_path / "e")}
    )
    results = reply["results"]
    assert [r["id"] for r in results] == ["s0", "s1"] and all(r["ok"] for r in results)
    assert results[0]["output"] == {"t": "tensor", "key": "s0/o"}
    assert results[0]["path"].endswith("eager-1.safetensors")
