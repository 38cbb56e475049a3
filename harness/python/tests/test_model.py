"""Loading models as a team's repository has them: files inside packages, weights files, and
which imported files are the user's (installed libraries, layered environments, editable installs)."""

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from harness_worker import frames
from harness_worker.errors import ErrorKind, HarnessError
from harness_worker.frames import site_dirs
from harness_worker.model import ModelLoader, load_weights, package_of, user_files


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


@pytest.fixture
def fresh_sites(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """sys.path to add folders to, as a `.pth` does at start-up; the site folders are found again
    at the next ask, and the modules imported under `sites_` names are forgotten after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    frames._site_folders.cache_clear()
    yield sys.path
    frames._site_folders.cache_clear()
    for name in [n for n in sys.modules if n.startswith("sites_")]:
        del sys.modules[name]


def _layered_site(folder: Path, dist: str, files: dict[str, str]) -> Path:
    """A site folder of another environment: `files` installed by `dist`, with its RECORD."""
    for name, text in files.items():
        _write(folder / name, text)
    record = "".join(f"{name},sha256=x,1\n" for name in files) + f"{dist}-1.0.dist-info/RECORD,,\n"
    _write(folder / f"{dist}-1.0.dist-info/RECORD", record)
    return folder


def _file_of(name: str) -> str:
    importlib.invalidate_caches()
    return importlib.import_module(name).__file__ or ""


def test_a_layered_environments_packages_are_installed_not_the_users(
    tmp_path: Path, fresh_sites: list[str]
) -> None:
    base = _layered_site(tmp_path / "base/site-packages", "foo", {"sites_foo/__init__.py": "X = 1\n"})
    fresh_sites.append(str(base))  # as a `.pth` naming the base environment's site-packages does
    _file_of("sites_foo")
    assert str(base) in site_dirs()  # the harness hashes what is installed there
    assert user_files({"sites_foo"}) == set()


@pytest.mark.parametrize("egg_info", [False, True])
def test_an_editable_installs_source_is_the_users(
    tmp_path: Path, fresh_sites: list[str], egg_info: bool
) -> None:
    src = tmp_path / "proj/src"
    _write(src / "sites_mypkg/__init__.py", "X = 1\n")
    if egg_info:  # what setuptools' `egg_info` (and `setup.py develop`) leaves beside the package
        _write(src / "sites_mypkg.egg-info/SOURCES.txt", "src/sites_mypkg/__init__.py\n")
    fresh_sites.append(str(src))  # as the install's `__editable__.sites_mypkg-1.0.pth` does
    file = _file_of("sites_mypkg")
    assert str(src) not in site_dirs()
    assert user_files({"sites_mypkg"}) == {file}  # hashed: an edit re-runs the case


def test_the_users_files_beside_installed_distributions_stay_the_users(
    tmp_path: Path, fresh_sites: list[str]
) -> None:
    # `pip install --target .` into the folder of the user's own code.
    folder = _layered_site(tmp_path / "app", "bar", {"sites_bar.py": "X = 1\n"})
    _write(folder / "sites_helper.py", "Y = 2\n")
    fresh_sites.append(str(folder))
    _file_of("sites_bar")
    helper = _file_of("sites_helper")
    assert str(folder) in site_dirs()
    assert user_files({"sites_bar", "sites_helper"}) == {helper}


def test_a_folder_put_on_sys_path_after_start_up_stays_the_users(
    tmp_path: Path, fresh_sites: list[str]
) -> None:
    first = site_dirs()  # the worker's `hello`: the folders the harness hashes
    late = _layered_site(tmp_path / "late", "baz", {"sites_baz/__init__.py": ""})
    fresh_sites.append(str(late))  # as a model's import may do
    file = _file_of("sites_baz")
    assert site_dirs() == first
    assert user_files({"sites_baz"}) == {file}
