"""Importing the package's modules has no side effects: no fd juggling, no warnings filters."""

import subprocess
import sys
from pathlib import Path

PACKAGE_PARENT = Path(__file__).resolve().parent.parent

CHECK = """
import os, sys, warnings
import torch, safetensors.torch  # they install filters of their own
filters = list(warnings.filters)
stdout_fd = os.fstat(1)
stdin = sys.stdin
import harness_worker.__main__, harness_worker.main, harness_worker.worker
import harness_worker.warmup, harness_worker.graph
assert warnings.filters == filters, "warnings filters changed"
assert sys.stdin is stdin and os.fstat(1) == stdout_fd
print("clean")
"""


def test_importing_every_module_is_harmless() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=PACKAGE_PARENT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "clean"
