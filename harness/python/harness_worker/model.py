"""Importing models: from a source path or an import name, then the entry point and its kwargs."""

import importlib
import importlib.util
import os
import re
import sys
from types import ModuleType
from typing import Any

import torch

from harness_worker.errors import ErrorKind, HarnessError, traceback_tail
from harness_worker.frames import is_user_frame, modules_mark, modules_since


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
        """The module of a source file and the user's files it imported. A file inside a package
        (its folder has `__init__.py`) is imported as part of it, so its relative imports work."""
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise HarnessError(ErrorKind.MODEL_IMPORT, f"model source {path} does not exist")
        key = (path, os.stat(path).st_mtime_ns)
        if key in self.modules:
            return self.modules[key], self.deps[key]
        top, dotted = package_of(path)
        if top not in sys.path:
            sys.path.insert(0, top)
        before = modules_mark()
        if dotted is not None:
            module = self._import_package_module(path, dotted)
        else:
            module = self._exec_file(path)
        # The user's files this model imported (its own and siblings): the harness caches
        # results by them, so an edit to any of them re-runs the case.
        files = {path} | user_files(set(modules_since(before)))
        self.modules[key] = module
        self.deps[key] = sorted(files)
        return module, self.deps[key]

    def _import_package_module(self, path: str, dotted: str) -> ModuleType:
        try:
            module = importlib.import_module(dotted)
        except BaseException as exc:  # noqa: BLE001 - a model may raise anything, SystemExit too
            raise _import_failed(path, exc) from exc
        found = os.path.abspath(getattr(module, "__file__", "") or "")
        if found != path:
            raise HarnessError(
                ErrorKind.MODEL_IMPORT,
                f"importing {dotted} for {path} found {found or 'a namespace'} first on sys.path: "
                "rename one of them, or put its root first in harness.toml's `roots`",
            )
        return module

    def _exec_file(self, path: str) -> ModuleType:
        name = self._module_name(path)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # torch.jit.script looks classes up through sys.modules
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:  # noqa: BLE001 - a model may raise anything, SystemExit too
            sys.modules.pop(name, None)
            raise _import_failed(path, exc) from exc
        return module

    def by_name(self, name: str) -> tuple[ModuleType, list[str]]:
        """An importable module and its file (the only dependency recorded for it)."""
        try:
            module = importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001
            raise _import_failed(name, exc) from exc
        file = getattr(module, "__file__", None)
        return module, [os.path.abspath(file)] if file and is_user_frame(file, allow_site=False) else []


def package_of(path: str) -> tuple[str, str | None]:
    """The folder to import a source file from, and its dotted module name when it is part of a
    package: the folders above it that hold `__init__.py` are its packages (as pytest's
    `prepend` import mode finds them). A file outside any package is imported from its folder."""
    folder = os.path.dirname(path)
    parts = [os.path.splitext(os.path.basename(path))[0]]
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        parts.insert(0, os.path.basename(folder))
        folder = os.path.dirname(folder)
    if len(parts) == 1:
        return folder, None
    if parts[-1] == "__init__":
        parts.pop()
    return folder, ".".join(parts)


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


def seed(value: int) -> None:
    """`torch.manual_seed`, without its cost where no accelerator can ever run: with CUDA not
    initialized, torch queues a lazy CUDA seeding and records the Python stack for it (3 ms a
    case). Without CUDA or XPU the queued call can never run, so seeding the CPU generator is
    the same thing (MPS likewise)."""
    xpu = getattr(torch, "xpu", None)
    mps = torch.backends.mps.is_available()
    if torch.cuda.is_available() or mps or (xpu is not None and xpu.is_available()):
        torch.manual_seed(value)
    else:
        torch.default_generator.manual_seed(value)


def construct(module: ModuleType, where: str, req: dict[str, Any]) -> torch.nn.Module:
    """The model of a `load` request: seeded, built from its entry and kwargs, in eval mode unless
    the request says otherwise."""
    entry = req["entry"]
    factory = _entry(module, where, entry)
    seed(int(req.get("seed", 0)))
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
    if req.get("weights"):
        load_weights(model, req["weights"], bool(req.get("weights_strict", True)))
    if req.get("eval", True):
        model.eval()
    return model


def _read_state_dict(path: str) -> Any:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    # A training checkpoint ({"state_dict": ..., "epoch": ...}) holds the state_dict inside.
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        return state["state_dict"]
    return state


def _key_list(keys: list[str], most: int = 8) -> str:
    shown = ", ".join(keys[:most])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > most else shown


def load_weights(model: torch.nn.Module, path: str, strict: bool) -> None:
    """Load a state_dict file (`.pt`/`.pth` via torch.load with weights_only, or `.safetensors`)
    into the model. Strict: every key of the model and of the file must match, and the error
    lists the missing and unexpected keys."""
    try:
        state = _read_state_dict(path)
    except Exception as exc:  # noqa: BLE001 - any reading error is the weights file's
        raise HarnessError(
            ErrorKind.MODEL_WEIGHTS, f"cannot read the weights file {path}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HarnessError(
            ErrorKind.MODEL_WEIGHTS,
            f"the weights file {path} holds a {type(state).__name__}, not a state_dict of tensors",
        )
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not fit raise even when not strict
        raise HarnessError(ErrorKind.MODEL_WEIGHTS, f"the weights file {path} does not fit: {exc}") from exc
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if strict and (missing or unexpected):
        parts = [f"missing keys: {_key_list(missing)}"] if missing else []
        parts += [f"unexpected keys: {_key_list(unexpected)}"] if unexpected else []
        raise HarnessError(
            ErrorKind.MODEL_WEIGHTS,
            f"the weights file {path} does not fit {type(model).__name__} ({'; '.join(parts)}); "
            "set `model.weights_strict: false` to load the keys that match",
        )
