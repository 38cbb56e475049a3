"""The `export` method (program.py) with real torch: a `Dim` per case dim, failures classified
and summarized, the program described, saved, loaded and run as eager is run; and the
FutureWarnings torch's own export calls raise kept out of the user's warnings.

The models are defined here, so a failure's file and line are this file's."""

import inspect
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from harness_worker import program
from harness_worker.calls import Arg
from harness_worker.errors import ErrorKind, HarnessError
from harness_worker.frames import capture_warnings
from harness_worker.probe import device_probe
from harness_worker.variants import export_all, parse_variants
from harness_worker.worker import Worker

B_1_9 = {"B": {"min": 1, "max": 9}}
NOISE = ("TORCH_LOGS", "TORCHDYNAMO", "docs.google.com", "draft_export", "Caused by", "guard_or_false")


class Cell(torch.nn.Module):
    """A recurrent cell: x and h share the batch dim B."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(torch.cat([x, h], 1)))


class DataDependentBranch(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x + 1
        return x - 1


class ArangeOfLen(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.arange(len(x))


class NumpyRoundTrip(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(x.numpy() * 2)


class Keywords(torch.nn.Module):
    def forward(self, x: torch.Tensor, k: int, h: torch.Tensor | None = None) -> torch.Tensor:
        assert h is not None
        return x * k + h.T


class Stack(torch.nn.Module):
    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(xs).sum(0)


class StarArgs(torch.nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, 1)


class Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class Pinned(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.ones(x.shape, device="cpu")


def line_in(cls: type, text: str) -> int:
    """The line of this file where `cls.forward` has `text`."""
    lines, start = inspect.getsourcelines(cls.forward)
    return start + next(i for i, line in enumerate(lines) if text in line)


def tensors(**values: torch.Tensor) -> list[Arg]:
    return [Arg(name, "tensor", False, value) for name, value in values.items()]


def exported(model: torch.nn.Module, args: list[Arg], options: dict[str, Any], out: Path) -> dict[str, Any]:
    """The `exported` entry of an `export_all` reply with one export variant."""
    variants = parse_variants([{"name": "exported", "method": "export", "options": options}])
    reply, walks = export_all(model, args, variants, str(out), {"B": 4})
    assert walks == {}  # a program has no TorchScript graph to re-trace against
    return reply["exports"]["exported"]


def spec_names(shapes: dict[str, Any]) -> dict[str, Any]:
    """`_dynamic_shapes`' output with each Dim as its name."""

    def names(spec: Any) -> Any:
        if isinstance(spec, list | tuple):
            return type(spec)(names(s) for s in spec)
        return {axis: dim.__name__ for axis, dim in spec.items()} if spec else spec

    return {param: names(spec) for param, spec in shapes.items()}


def test_a_cell_exports_with_B_dynamic_and_its_pt2_runs_at_another_batch(tmp_path: Path) -> None:
    model = Cell()
    args = tensors(x=torch.randn(4, 3), h=torch.randn(4, 3))
    entry = exported(model, args, {"dims": B_1_9, "shapes": {"x": ["B", None], "h": ["B", None]}}, tmp_path)
    assert set(entry) == {"ok", "path", "code", "device_pins", "bound", "warnings", "seconds"}
    assert entry["ok"] and entry["path"] == str(tmp_path / "exported.pt2")
    # x and h share B: one line for it.
    assert entry["code"].splitlines()[0] == "# dims: x.shape[0] in [1, 9]"
    assert entry["device_pins"] == [] and entry["bound"] == []
    x, h = torch.randn(7, 3), torch.randn(7, 3)
    torch.testing.assert_close(program.load(entry["path"])(x, h), model(x, h))


@pytest.mark.parametrize(
    ("model", "kind", "first_line", "located"),
    [
        (
            DataDependentBranch,
            ErrorKind.EXPORT_DATA_DEPENDENT,
            "forward could not guard on data-dependent expression Eq(u0, 1)",
            "if x.sum() > 0:",
        ),
        (
            ArangeOfLen,
            ErrorKind.EXPORT_CONSTRAINT,
            "B: the model's code specialized it to be a constant (4) (torch suggests: B = 4)",
            None,
        ),
        (
            NumpyRoundTrip,
            ErrorKind.EXPORT_ERROR,
            ".numpy() is not supported for tensor subclasses.",
            "x.numpy()",
        ),
    ],
    ids=["data_dependent", "constraint", "error"],
)
def test_each_failure_has_its_kind_a_summary_and_the_users_line(
    model: type, kind: ErrorKind, first_line: str, located: str | None, tmp_path: Path
) -> None:
    entry = exported(model(), tensors(x=torch.ones(4)), {"dims": B_1_9, "shapes": {"x": ["B"]}}, tmp_path)
    assert entry["ok"] is False and not os.path.exists(tmp_path / "exported.pt2")
    err = entry["error"]
    assert err["kind"] == kind.value
    assert err["message"].splitlines()[0] == first_line
    assert not any(noise in err["message"] for noise in NOISE)
    if located is not None:
        assert (err["file"], err["line"]) == (__file__, line_in(model, located))


def test_keyword_and_scalar_inputs_get_their_shapes_by_parameter_name(tmp_path: Path) -> None:
    """`h` is passed by keyword and named first, `k` is an int: each spec goes to its parameter."""
    model = Keywords()
    args = [
        Arg("h", "tensor", True, torch.randn(3, 4)),
        Arg("x", "tensor", False, torch.randn(4, 3)),
        Arg("k", "int", False, 2),
    ]
    options = {"dims": B_1_9, "shapes": {"x": ["B", None], "h": [None, "B"]}}
    assert spec_names(program._dynamic_shapes(model, args, options)) == {
        "x": {0: "B"},
        "k": None,
        "h": {1: "B"},
    }
    entry = exported(model, args, options, tmp_path)
    assert entry["ok"], entry
    x, h = torch.randn(7, 3), torch.randn(3, 7)
    torch.testing.assert_close(program.load(entry["path"])(x, 2, h=h), model(x, 2, h=h))


def test_a_list_input_gets_a_spec_per_item(tmp_path: Path) -> None:
    model = Stack()
    args = [Arg("xs", "list", False, [torch.randn(4, 3), torch.randn(4, 3)])]
    options = {"dims": B_1_9, "shapes": {"xs": ["B", None]}}
    assert spec_names(program._dynamic_shapes(model, args, options)) == {"xs": [{0: "B"}, {0: "B"}]}
    entry = exported(model, args, options, tmp_path)
    assert entry["ok"], entry
    assert entry["code"].startswith("# dims: xs_0.shape[0] in [1, 9]\n")
    xs = [torch.randn(6, 3), torch.randn(6, 3)]
    torch.testing.assert_close(program.load(entry["path"])(xs), model(xs))


def test_star_args_get_a_spec_per_input(tmp_path: Path) -> None:
    """`forward(self, *xs)` binds both inputs to `xs`: a tuple of their specs (it was None, which
    exported every axis static)."""
    model = StarArgs()
    args = tensors(x=torch.randn(4, 3), h=torch.randn(4, 2))
    options = {"dims": B_1_9, "shapes": {"x": ["B", None], "h": ["B", None]}}
    assert spec_names(program._dynamic_shapes(model, args, options)) == {"xs": ({0: "B"}, {0: "B"})}
    entry = exported(model, args, options, tmp_path)
    assert entry["ok"], entry
    assert entry["code"].startswith("# dims: xs_0.shape[0] in [1, 9]\n")
    x, h = torch.randn(6, 3), torch.randn(6, 2)
    torch.testing.assert_close(program.load(entry["path"])(x, h), model(x, h))


@pytest.mark.parametrize(
    ("dims", "axes", "spec"),
    [
        # What the Rust side sends for a dim with min == max (`dynamic_dims`): absent from
        # `dims`, null on its axes.
        ({}, [None, None], None),
        # An axis naming a dim that is not in `dims` is static too.
        ({}, ["B", "T"], None),
        (B_1_9, ["B", None], {0: "B"}),
        (B_1_9, ["B", "T"], {0: "B"}),
    ],
)
def test_an_axis_without_a_dynamic_dim_stays_static(
    dims: dict[str, Any], axes: list[str | None], spec: Any, tmp_path: Path
) -> None:
    model = Double()
    options = {"dims": dims, "shapes": {"x": axes}}
    args = tensors(x=torch.randn(4, 3))
    assert spec_names(program._dynamic_shapes(model, args, options)) == {"x": spec}
    entry = exported(model, args, options, tmp_path)
    assert entry["ok"], entry
    assert entry["code"].startswith("# dims: x.shape[0] in [1, 9]\n") == (spec is not None)
    loaded = program.load(entry["path"])
    with pytest.raises(Exception, match="Guard failed"):  # axis 1 is static: 3
        loaded(torch.randn(4, 5))
    if spec is None:
        with pytest.raises(Exception, match="Guard failed"):
            loaded(torch.randn(6, 3))


# torch 2.13's messages, as `str(exc)` of the export failures above.
DATA_DEPENDENT = (
    "Could not guard on data-dependent expression Eq(u0, 1) (unhinted: Eq(u0, 1)).  (Size-like symbols: "
    "none)\n\nconsider using data-dependent friendly APIs such as guard_or_false, guard_or_true and "
    "statically_known_true.\nCaused by: (_export/non_strict_utils.py:1205 in __torch_function__)\nFor "
    'more information, run with TORCH_LOGS="dynamic"\nFor extended logs when we create symbols, also '
    'add TORCHDYNAMO_EXTENDED_DEBUG_CREATE_SYMBOL="u0"\nIf you suspect the guard was triggered from '
    "C++, add TORCHDYNAMO_EXTENDED_DEBUG_CPP=1\nFor more debugging help, see "
    "https://docs.google.com/document/d/1HSuTTVvYH1pTew89Rtpeu84Ht3nQEFTYhAX3Ypa_xJs/edit?usp=sharing"
    "\n\nFor C++ stack trace, run with TORCHDYNAMO_EXTENDED_DEBUG_CPP=1\n\nThe following call raised "
    'this error:\n  File "/src/model.py", line 9, in forward\n    if x.sum() > 0:\n\n\nThe error above '
    "occurred when calling torch.export.export. If you would like to view some more information about "
    "this error, and get a list of all other errors that may occur in your export call, you can "
    "replace your `export()` call with `draft_export()`."
)
SPECIALIZED_INTEGER = (
    "Could not extract specialized integer from data-dependent expression TruncToInt(zuf0) (unhinted: "
    "TruncToInt(zuf0)).  (Size-like symbols: none)\n\n\nCaused by: (src/model.py:8 in forward)\nFor more "
    'information, run with TORCH_LOGS="dynamic"\nFor extended logs when we create symbols, also add '
    'TORCHDYNAMO_EXTENDED_DEBUG_CREATE_SYMBOL="zuf0"\nIf you suspect the guard was triggered from C++, '
    "add TORCHDYNAMO_EXTENDED_DEBUG_CPP=1\nFor more debugging help, see "
    "https://docs.google.com/document/d/1HSuTTVvYH1pTew89Rtpeu84Ht3nQEFTYhAX3Ypa_xJs/edit?usp=sharing"
    "\n\nFor C++ stack trace, run with TORCHDYNAMO_EXTENDED_DEBUG_CPP=1\n\nThe error above occurred "
    "when calling torch.export.export. If you would like to view some more information about this "
    "error, and get a list of all other errors that may occur in your export call, you can replace "
    "your `export()` call with `draft_export()`."
)
SPECIALIZED = (
    'Constraints violated (B)! For more information, run with TORCH_LOGS="+dynamic".\n  - You marked B '
    "as dynamic but your code specialized it to be a constant (4). If you're using mark_dynamic, either "
    "remove it or use maybe_mark_dynamic. If you're using Dim.DYNAMIC, replace it with either "
    "Dim.STATIC or Dim.AUTO.\nSuggested fixes:\n  B = 4\n\nThe error above occurred when calling "
    "torch.export.export. If you would like to view some more information about this error, and get a "
    "list of all other errors that may occur in your export call, you can replace your `export()` call "
    "with `draft_export()`."
)
NARROWED = (
    'Constraints violated (H)! For more information, run with TORCH_LOGS="+dynamic".\n  - Not all '
    "values of H = L['x'].size()[3] in the specified range H <= 96 satisfy the generated guard 33 <= "
    "L['x'].size()[3] and L['x'].size()[3] <= 96\nSuggested fixes:\n  H = Dim('H', min=33, max=96)\n\n"
    "The error above occurred when calling torch.export.export. If you would like to view some more "
    "information about this error, and get a list of all other errors that may occur in your export "
    "call, you can replace your `export()` call with `draft_export()`."
)


@pytest.mark.parametrize(
    ("message", "cleaned", "summary"),
    [
        (
            DATA_DEPENDENT,
            "Could not guard on data-dependent expression Eq(u0, 1) (unhinted: Eq(u0, 1)).  "
            "(Size-like symbols: none)\n\nThe following call raised this error:\n"
            '  File "/src/model.py", line 9, in forward\n    if x.sum() > 0:',
            "forward could not guard on data-dependent expression Eq(u0, 1)",
        ),
        (
            SPECIALIZED_INTEGER,
            "Could not extract specialized integer from data-dependent expression TruncToInt(zuf0) "
            "(unhinted: TruncToInt(zuf0)).  (Size-like symbols: none)",
            "forward could not extract specialized integer from data-dependent expression TruncToInt(zuf0)",
        ),
        (
            SPECIALIZED,
            "Constraints violated (B)!\n  - You marked B as dynamic but your code specialized it to be a "
            "constant (4). If you're using mark_dynamic, either remove it or use maybe_mark_dynamic. "
            "If you're using Dim.DYNAMIC, replace it with either Dim.STATIC or Dim.AUTO.\n"
            "Suggested fixes:\n  B = 4",
            "B: the model's code specialized it to be a constant (4) (torch suggests: B = 4)",
        ),
        (
            NARROWED,
            "Constraints violated (H)!\n  - Not all values of H = L['x'].size()[3] in the specified "
            "range H <= 96 satisfy the generated guard 33 <= L['x'].size()[3] and L['x'].size()[3] <= 96"
            "\nSuggested fixes:\n  H = Dim('H', min=33, max=96)",
            "Not all values of H = x.shape[3] in the specified range H <= 96 satisfy the generated "
            "guard 33 <= x.shape[3] and x.shape[3] <= 96 (torch suggests: H = Dim('H', min=33, max=96))",
        ),
        (
            SPECIALIZED.replace("(4)", "(1)").replace("B = 4", "B = 1"),
            "Constraints violated (B)!\n  - You marked B as dynamic but your code specialized it to be a "
            "constant (1). If you're using mark_dynamic, either remove it or use maybe_mark_dynamic. "
            "If you're using Dim.DYNAMIC, replace it with either Dim.STATIC or Dim.AUTO.\n"
            "Suggested fixes:\n  B = 1",
            "B: torch.export specialized it to the example's size (1): the case's trace input has that "
            "size there, and torch.export specializes sizes 0 and 1 (give the dim a trace size of 2 or "
            "more) (torch suggests: B = 1)",
        ),
        (
            "aten.equal.default",
            "aten.equal.default",
            "forward calls aten.equal.default, whose output depends on the values of its inputs",
        ),
    ],
    ids=[
        "data_dependent",
        "specialized_integer",
        "specialized",
        "narrowed",
        "example_of_size_1",
        "op_output",
    ],
)
def test_torch_messages_lose_their_pointers_and_get_a_first_line_that_says_what_happened(
    message: str, cleaned: str, summary: str
) -> None:
    assert program.clean_message(message) == cleaned
    summarized = program.summarize(message)
    assert summarized.splitlines()[0] == summary
    # The rest is the cleaned message's.
    assert summarized.splitlines()[1:] == cleaned.splitlines()[1:]


def test_device_pins_name_a_factory_with_its_device_and_the_users_line(tmp_path: Path) -> None:
    ep = program.export_program(Pinned(), tensors(x=torch.ones(4)), {"dims": B_1_9, "shapes": {"x": ["B"]}})
    where = f"{__file__}:{line_in(Pinned, 'device=')}"
    assert program._device_pins(ep) == [f"aten.ones.default on cpu at {where}"]
    assert program.describe(ep)["device_pins"] == program._device_pins(ep)


def test_the_meta_probe_runs_a_pt2_program(
    write_inputs: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    model = Cell()
    args = tensors(x=torch.randn(4, 3), h=torch.randn(4, 3))
    entry = exported(model, args, {"dims": B_1_9, "shapes": {"x": ["B", None], "h": ["B", None]}}, tmp_path)
    ref = write_inputs({"s0": {"x": torch.randn(5, 3), "h": torch.randn(5, 3)}})
    req = {"device": "meta", "input": ref, "names": ["x", "h"], "artifacts": {"exported": entry["path"]}}
    reply = device_probe(model, req)
    meta = {"t": "tensor_desc", "shape": [5, 3], "dtype": "float32", "device": "meta"}
    assert reply["eager"] == {"ok": True, "output": meta}
    assert reply["exported"] == {"ok": True, "output": meta}


TANH = """
    import torch


    class Model(torch.nn.Module):
        def forward(self, x):
            return torch.tanh(x) * 2
"""


def test_op_eager_runs_the_program_and_a_raise_is_that_samples_failure(
    loaded: Callable[[str], tuple[Worker, str, dict[str, Any]]],
    write_inputs: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> None:
    worker, case, _ = loaded(TANH)
    ref = write_inputs(
        {"s0": {"x": torch.randn(4, 3)}, "s1": {"x": torch.randn(7, 3)}, "s2": {"x": torch.randn(12, 3)}}
    )
    variant = {
        "name": "exported",
        "method": "export",
        "options": {"dims": B_1_9, "shapes": {"x": ["B", None]}},
    }
    reply = worker.op_export(
        {
            "case": case,
            "input": ref,
            "names": ["x"],
            "variants": [variant],
            "dims": {"B": 4},
            "out_dir": str(tmp_path / "out"),
        }
    )
    path = reply["exports"]["exported"]["path"]
    samples = [{"id": s, "input": {"file": ref["file"], "sample": s}} for s in ("s0", "s1", "s2")]
    eager = {"case": case, "names": ["x"], "samples": samples, "out_dir": str(tmp_path / "e")}
    run = worker.op_eager({**eager, "program": {"path": path, "method": "export"}})["results"]
    assert [r["ok"] for r in run] == [True, True, False]
    assert run[2]["error"]["kind"] == "eager_raised" and "<= 9" in run[2]["error"]["message"]
    plain = worker.op_eager(eager)["results"]
    assert [r["ok"] for r in plain] == [True, True, True]  # eager itself has no range
    ours, theirs = load_file(run[0]["path"]), load_file(plain[0]["path"])
    for sid in ("s0", "s1"):
        torch.testing.assert_close(ours[f"{sid}/o"], theirs[f"{sid}/o"])


def test_op_eager_with_a_program_it_cannot_load_is_an_export_error(
    loaded: Callable[[str], tuple[Worker, str, dict[str, Any]]],
    write_inputs: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> None:
    worker, case, _ = loaded(TANH)
    ref = write_inputs({"s0": {"x": torch.randn(4, 3)}})
    samples = [{"id": "s0", "input": ref}]
    program_ref = {"path": "no.pt2", "method": "export"}
    req = {"case": case, "names": ["x"], "samples": samples, "out_dir": str(tmp_path), "program": program_ref}
    with pytest.raises(HarnessError) as info:
        worker.op_eager(req)
    assert info.value.kind is ErrorKind.EXPORT_ERROR and "no.pt2" in info.value.message


def _in_thread(fn: Callable[[], None]) -> None:
    """Run `fn` on a fresh thread, whose stack holds only `fn`'s frames and the threading module's."""
    t = threading.Thread(target=fn)
    t.start()
    t.join()


def test_a_future_warning_only_torchs_own_calls_raise_is_not_the_users() -> None:
    library: dict[str, Any] = {}
    exec(
        compile("import warnings\ndef lib():\n    warnings.warn('old', FutureWarning)\n", "<lib>", "exec"),
        library,
    )

    def users() -> None:
        warnings.warn("mine", FutureWarning, stacklevel=1)

    with capture_warnings() as records:
        _in_thread(library["lib"])
        _in_thread(users)
    assert [r["message"] for r in records] == ["mine"]


class TopK(torch.nn.Module):
    """Returns torch.topk's named tuple, which torch.export.save cannot write."""

    def forward(self, x: torch.Tensor) -> Any:
        return torch.topk(x, 2)


def test_a_program_that_exports_but_cannot_be_saved_says_so(tmp_path: Path) -> None:
    args = tensors(x=torch.randn(4, 5))
    variants = parse_variants(
        [{"name": "exported", "method": "export", "options": {"dims": {}, "shapes": {}}}]
    )
    entry = export_all(TopK(), args, variants, str(tmp_path), {})[0]["exports"]["exported"]
    assert entry["ok"] is False and entry["error"]["kind"] == "export_error"
    first = entry["error"]["message"].splitlines()[0]
    assert first.startswith("the program exported, but torch.export.save cannot save it: No registered"), (
        first
    )
