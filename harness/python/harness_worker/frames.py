"""Where in the user's code something happened: user frames, warnings, error locations."""

import contextlib
import functools
import importlib.util
import linecache
import os
import re
import sysconfig
import traceback
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

# Every file of this package is the harness's, never the user's.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_LOCATION = re.compile(r'File "([^"]+)", line (\d+)')


@functools.cache
def _dirs() -> tuple[str, str, tuple[str, ...]]:
    """(torch's directory, the standard library's, the site directories), found without
    importing torch."""
    spec = importlib.util.find_spec("torch")
    origin = spec.origin if spec is not None and spec.origin else "<no torch>"
    torch_dir = os.path.dirname(os.path.abspath(origin)) + os.sep
    paths = sysconfig.get_paths()
    stdlib = os.path.abspath(paths["stdlib"]) + os.sep
    site = tuple(os.path.abspath(p) + os.sep for p in {paths["purelib"], paths["platlib"]})
    return torch_dir, stdlib, site


def is_user_frame(filename: str, allow_site: bool) -> bool:
    """Whether a file is the user's: not this package, torch, the standard library, nor (unless
    `allow_site`) another installed library."""
    torch_dir, stdlib, site = _dirs()
    path = os.path.abspath(filename)
    if path.startswith((PACKAGE_DIR, torch_dir)) or filename.startswith("<"):
        return False
    if path.startswith(site):
        return allow_site
    return not path.startswith(stdlib)


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
        ufile, uline = user_location(traceback.extract_stack()[:-1])
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
