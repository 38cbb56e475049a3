"""Loading models as a team's repository has them: files inside packages, and weights files."""

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from harness_worker.errors import ErrorKind, HarnessError
from harness_worker.model import ModelLoader, load_weights, package_of


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    ("files", "source", "expect"),
    [
        (["pkg/__init__.py", "pkg/sub/__init__.py"], "pkg/sub/m.py", ("", "pkg.sub.m")),
        (["pkg/__init__.py"], "pkg/__init__.py", ("", "pkg")),
        ([], "loose/m.py", ("loose", None)),
        (["pkg/sub/__init__.py"], "pkg/sub/m.py", ("pkg", "sub.m")),
    ],
)
def test_a_file_is_imported_as_part_of_its_packages(
    tmp_path: Path, files: list[str], source: str, expect: tuple[str, str | None]
) -> None:
    for f in [*files, source]:
        _write(tmp_path / f, "")
    top, dotted = package_of(str(tmp_path / source))
    assert (top, dotted) == (str(tmp_path / expect[0]).rstrip("/"), expect[1])


def test_relative_imports_of_a_package_file_work_and_its_helpers_are_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    _write(tmp_path / "teampkg_a/__init__.py", "")
    helper = _write(tmp_path / "teampkg_a/util.py", "K = 3\n")
    model = _write(tmp_path / "teampkg_a/net.py", "from .util import K\n\nclass Net:\n    k = K\n")
    module, files = ModelLoader().from_source(str(model))
    assert module.Net.k == 3
    assert str(helper) in files and str(model) in files
    assert module.__name__ == "teampkg_a.net"


def test_a_package_already_imported_from_elsewhere_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    _write(tmp_path / "one/teampkg_b/__init__.py", "")
    _write(tmp_path / "one/teampkg_b/net.py", "")
    sys.path.insert(0, str(tmp_path / "one"))
    importlib.import_module("teampkg_b.net")
    _write(tmp_path / "two/teampkg_b/__init__.py", "")
    other = _write(tmp_path / "two/teampkg_b/net.py", "")
    try:
        with pytest.raises(HarnessError, match="found .*one/teampkg_b/net.py first on sys.path"):
            ModelLoader().from_source(str(other))
    finally:
        for name in ("teampkg_b", "teampkg_b.net"):
            sys.modules.pop(name, None)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_load_from_either_format(tmp_path: Path, suffix: str) -> None:
    state = {k: torch.full_like(v, 7.0) for k, v in _net().state_dict().items()}
    path = tmp_path / f"w{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": state, "epoch": 3}, path)  # a training checkpoint
    else:
        save_file(state, path)
    model = _net()
    load_weights(model, str(path), strict=True)
    assert torch.equal(model[0].weight, torch.full((2, 2), 7.0))


def test_strict_weights_list_missing_and_unexpected_keys(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"0.weight": torch.zeros(2, 2), "head.weight": torch.zeros(1)}, path)
    with pytest.raises(HarnessError) as err:
        load_weights(_net(), str(path), strict=True)
    assert err.value.kind == ErrorKind.MODEL_WEIGHTS
    assert "missing keys: 0.bias; unexpected keys: head.weight" in err.value.message
    model = _net()
    load_weights(model, str(path), strict=False)  # the keys that match are loaded
    assert torch.equal(model[0].weight, torch.zeros(2, 2))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a pickle", "cannot read the weights file"),
        (None, "holds a list, not a state_dict of tensors"),
        ({"0.weight": torch.zeros(3, 3), "0.bias": torch.zeros(2)}, "does not fit: Error"),
    ],
)
def test_unusable_weights_files_say_why(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "w.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save([1, 2] if content is None else content, path)
    with pytest.raises(HarnessError, match=message):
        load_weights(_net(), str(path), strict=True)
