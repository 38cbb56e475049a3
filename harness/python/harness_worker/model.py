"""Importing models: from a source path or an import name, then the entry point and its kwargs."""

import importlib
import importlib.util
import os
import re
import site
import sys
import sysconfig
from types import ModuleType
from typing import Any

import torch

from harness_worker.errors import ErrorKind, HarnessError, traceback_tail
from harness_worker.frames import is_user_frame


def _import_failed(where: str, exc: BaseException) -> HarnessError:
    return HarnessError(
        ErrorKind.MODEL_IMPORT,
        f"importing {where} failed: {type(exc).__name__}: {exc}",
        traceback_tail(exc),
    )


class ModelLoader:
    """Imports model modules, once per (path, mtime), and remembers the user's files each one
    imported."""

    def __init__(self) -> None:
        self.modules: dict[tuple[str, int], ModuleType] = {}
        self.deps: dict[tuple[str, int], list[str]] = {}  # the user's files it imported
        self.module_names: dict[str, str] = {}  # module name -> path

    def _module_name(self, path: str) -> str:
        """A module name for a source file, unique per path."""
        stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
        name = stem
        n = 1
        while self.module_names.get(name, path) != path:
            n += 1
            name = f"{stem}_{n}"
        self.module_names[name] = path
        return name

    def from_source(self, path: str) -> tuple[ModuleType, list[str]]:
        """The module of a source file and the user's files it imported."""
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise HarnessError(ErrorKind.MODEL_IMPORT, f"model source {path} does not exist")
        key = (path, os.stat(path).st_mtime_ns)
        if key in self.modules:
            return self.modules[key], self.deps[key]
        name = self._module_name(path)
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # torch.jit.script looks classes up through sys.modules
        before = set(sys.modules)
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:  # noqa: BLE001 - a model may raise anything, SystemExit too
            sys.modules.pop(name, None)
            raise _import_failed(path, exc) from exc
        # The user's files this model imported (its own and siblings): the harness caches
        # results by them, so an edit to any of them re-runs the case.
        files = {path}
        for mod_name in set(sys.modules) - before:
            f = getattr(sys.modules.get(mod_name), "__file__", None)
            if f and is_user_frame(f, allow_site=False):
                files.add(os.path.abspath(f))
        self.modules[key] = module
        self.deps[key] = sorted(files)
        return module, self.deps[key]

    def by_name(self, name: str) -> tuple[ModuleType, list[str]]:
        """An importable module and its file (the only dependency recorded for it)."""
        try:
            module = importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001
            raise _import_failed(name, exc) from exc
        file = getattr(module, "__file__", None)
        return module, [os.path.abspath(file)] if file and is_user_frame(file, allow_site=False) else []


def user_files(module_names: set[str]) -> set[str]:
    """The files of these modules that are the user's (not torch, the standard library, an
    installed library or the worker): their own code, helpers, PYTHONPATH and editable
    installs."""
    files = set()
    for name in module_names:
        f = getattr(sys.modules.get(name), "__file__", None)
        if f and is_user_frame(f, allow_site=False) and os.path.isfile(f):
            files.add(os.path.abspath(f))
    return files


def site_dirs() -> list[str]:
    """The folders installed libraries live in: the harness keys cached verdicts by what is
    installed there, so an install or upgrade re-runs the cases."""
    dirs = set(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.add(site.getusersitepackages())
    for key in ("purelib", "platlib"):
        dirs.add(sysconfig.get_paths()[key])
    return sorted(os.path.abspath(d) for d in dirs if os.path.isdir(d))


def _entry(module: ModuleType, where: str, entry: str) -> Any:
    """The callable `entry` (a dotted attribute path) of a module."""
    factory: Any = module
    for part in entry.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise HarnessError(ErrorKind.MODEL_ENTRY, f"{where} has no attribute {entry!r}")
    if not callable(factory):
        raise HarnessError(ErrorKind.MODEL_ENTRY, f"{where}:{entry} is not callable")
    return factory


def construct(module: ModuleType, where: str, req: dict[str, Any]) -> torch.nn.Module:
    """The model of a `load` request: seeded, built from its entry and kwargs, in eval mode unless
    the request says otherwise."""
    entry = req["entry"]
    factory = _entry(module, where, entry)
    torch.manual_seed(int(req.get("seed", 0)))
    try:
        model = factory(**(req.get("kwargs") or {}))
    except BaseException as exc:  # noqa: BLE001
        raise HarnessError(
            ErrorKind.MODEL_CONSTRUCT,
            f"{entry}(**kwargs) raised {type(exc).__name__}: {exc}",
            traceback_tail(exc),
        ) from exc
    if not isinstance(model, torch.nn.Module):
        raise HarnessError(
            ErrorKind.MODEL_ENTRY, f"{entry} returned {type(model).__name__}, not a torch.nn.Module"
        )
    if req.get("eval", True):
        model.eval()
    return model
