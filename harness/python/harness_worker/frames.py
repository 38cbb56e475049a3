"""Whose files are whose, and where in the user's code something happened: the folders installed
libraries live in, user frames, warnings, error locations."""

import contextlib
import functools
import glob
import importlib.util
import linecache
import os
import re
import site
import sys
import sysconfig
import traceback
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

# Every file of this package is the harness's, never the user's.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_LOCATION = re.compile(r'File "([^"]+)", line (\d+)')


@functools.cache
def _dirs() -> tuple[str, str]:
    """(torch's directory, the standard library's), found without importing torch."""
    spec = importlib.util.find_spec("torch")
    origin = spec.origin if spec is not None and spec.origin else "<no torch>"
    torch_dir = os.path.dirname(os.path.abspath(origin)) + os.sep
    return torch_dir, os.path.abspath(sysconfig.get_paths()["stdlib"]) + os.sep


def _installed_names(folder: str) -> frozenset[str]:
    """The top-level names (`foo`, `foo.py`) the distributions installed in a folder put there,
    from their `*.dist-info/RECORD`s. Empty for an editable install's source folder: it holds the
    user's package, and at most a `mypkg.egg-info` setuptools left there, which installs nothing."""
    names: set[str] = set()
    for record in glob.glob(os.path.join(glob.escape(folder), "*.dist-info", "RECORD")):
        with contextlib.suppress(OSError), open(record, encoding="utf-8", errors="replace") as f:
            names.update(line.split(",", 1)[0].split("/", 1)[0] for line in f)
    return frozenset(names)


@functools.cache
def _site_folders() -> tuple[tuple[str, ...], tuple[tuple[str, frozenset[str]], ...]]:
    """(the interpreter's site-packages folders, every other folder on sys.path that holds installed
    distributions with the names they put there), each ending in a separator. Found once, at the
    worker's `hello`, before any model is imported (its children inherit it): a folder a model
    puts on sys.path is not one the harness hashes, so the files there stay the user's."""
    paths = sysconfig.get_paths()
    found = [*site.getsitepackages(), paths["purelib"], paths["platlib"]]
    if site.ENABLE_USER_SITE:
        found.append(site.getusersitepackages())
    std = {_folder(d) for d in found if os.path.isdir(d)}
    others = {_folder(p) for p in sys.path if p and os.path.isdir(p)} - std
    layered = ((d, _installed_names(d)) for d in sorted(others))
    return tuple(sorted(std)), tuple((d, names) for d, names in layered if names)


def _folder(path: str) -> str:
    """A folder's absolute path ending in a separator: a prefix of every file in it."""
    return os.path.join(os.path.abspath(path), "")


def site_dirs() -> list[str]:
    """The folders installed libraries live in: the harness keys cached verdicts by what is
    installed there, so an install or upgrade re-runs the cases. Besides site-packages, a folder a
    `.pth` names that holds installed distributions (a layered base environment's)."""
    std, layered = _site_folders()
    return sorted(os.path.normpath(d) for d in [*std, *(d for d, _ in layered)])


def _installed(path: str) -> bool:
    """Whether a file is an installed library's: in site-packages, or in another site folder under
    a name a distribution installed there put (a user's file beside them stays the user's)."""
    std, layered = _site_folders()
    if path.startswith(std):
        return True
    return any(path.startswith(d) and path[len(d) :].split(os.sep, 1)[0] in names for d, names in layered)


def is_user_frame(filename: str, allow_site: bool) -> bool:
    """Whether a file is the user's: not this package, torch, the standard library, nor (unless
    `allow_site`) another installed library."""
    torch_dir, stdlib = _dirs()
    path = os.path.abspath(filename)
    if path.startswith((PACKAGE_DIR, torch_dir)) or filename.startswith("<"):
        return False
    if _installed(path):
        return allow_site
    return not path.startswith(stdlib)


def modules_mark() -> str | None:
    """A mark of what `sys.modules` holds now, for `modules_since`: its newest name."""
    return next(reversed(sys.modules), None)


def modules_since(mark: str | None) -> list[str]:
    """The modules imported since `mark` (`modules_mark`), in import order: `sys.modules` keeps
    import order, so they are the names after the mark, read from its end, and a fresh fork does
    not touch, and copy, the pages of every module name the fork server imported (a set of all
    1,200 took 3 ms in a case's child). If the marked module was removed meanwhile, every module
    is returned: a superset, which the callers filter (user files, installed libraries), never
    one that misses a module."""
    names: list[str] = []
    for name in reversed(sys.modules):
        if name == mark:
            return names[::-1]
        names.append(name)
    return list(sys.modules)


def is_library(module: object) -> bool:
    """Whether a loaded module is installed code a fork server may import ahead of a case:
    torch's, the standard library's or an installed library's file, never the user's (their
    files, PYTHONPATH, editable installs) nor this package's."""
    filename = getattr(module, "__file__", None)
    if not isinstance(filename, str) or not filename:
        return False
    return not os.path.abspath(filename).startswith(PACKAGE_DIR) and not is_user_frame(
        filename, allow_site=False
    )


def user_location(stack: Iterable[traceback.FrameSummary]) -> tuple[str | None, int | None]:
    """The innermost frame of the user's code: their files first, then other libraries."""
    stack = list(stack)
    for allow_site in (False, True):
        frames = [f for f in stack if is_user_frame(f.filename, allow_site)]
        if frames:
            return frames[-1].filename, frames[-1].lineno
    return None, None


def locate_error(exc: BaseException, err: dict[str, Any]) -> None:
    """Add the user's file, line and source line to an error body: from the message first (script
    errors carry `File "...", line N`), then from the traceback, innermost frame first."""
    candidates = _LOCATION.findall(str(exc)) + [
        (f.filename, f.lineno) for f in reversed(traceback.extract_tb(exc.__traceback__))
    ]
    for file, line in candidates:
        if is_user_frame(file, allow_site=True):
            err["file"] = os.path.abspath(file)
            err["line"] = int(line)
            err["source_line"] = linecache.getline(file, int(line)).strip()
            return


@contextlib.contextmanager
def capture_warnings() -> Iterator[list[dict[str, Any]]]:
    """Record every non-deprecation warning with the user's file and line, merging duplicates.
    The yielded list is filled when the block ends."""
    merged: dict[tuple[str, str, int, str], dict[str, Any]] = {}

    def hook(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, DeprecationWarning):
            return
        stack = traceback.extract_stack()[:-1]
        if issubclass(category, FutureWarning) and not any(is_user_frame(f.filename, False) for f in stack):
            return  # a library's deprecation inside torch's own calls: nothing the user can do
        ufile, uline = user_location(stack)
        if ufile is None or uline is None:
            ufile, uline = filename, lineno
        key = (category.__name__, ufile, uline, str(message))
        if key in merged:
            merged[key]["count"] += 1
            return
        merged[key] = {
            "category": category.__name__,
            "message": str(message).strip(),
            "file": os.path.abspath(ufile),
            "line": uline,
            "source_line": linecache.getline(ufile, uline).strip(),
            "count": 1,
        }

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.showwarning = hook
        records: list[dict[str, Any]] = []
        yield records
        records.extend(merged.values())
