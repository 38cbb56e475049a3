"""The worker as the Rust harness starts it: `python -u -m harness_worker` with the package's
parent directory on PYTHONPATH, the protocol on stdin/stdout."""

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness_worker.protocol import PROTOCOL

PACKAGE_PARENT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60

LOUD = """
import os
import sys

import torch

print("printed at import")
sys.stdout.flush()
os.write(1, b"written to fd 1 at import\\n")


class Model(torch.nn.Module):
    def forward(self, x):
        return x
"""

DIES = """
import os

os._exit(3)
"""


class Client:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.next_id = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def line(self) -> dict[str, Any]:
        """The next protocol line: every line on the channel must be JSON."""
        return json.loads(self.lines.get(timeout=TIMEOUT_S))

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        self.next_id += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "id": self.next_id, **fields}).encode() + b"\n")
        self.proc.stdin.flush()
        reply = self.line()
        assert reply["id"] == self.next_id, reply
        return reply


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Client]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_PARENT), env.get("PYTHONPATH")) if p)
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    stderr = open(tmp_path / "stderr.txt", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "harness_worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=tmp_path,
        env=env,
    )
    try:
        yield Client(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT_S)
        stderr.close()


def test_hello_fork_end_shutdown(worker: Client, tmp_path: Path) -> None:
    hello = worker.call("hello")
    assert (
        hello["ok"]
        and hello["protocol"] == PROTOCOL == 7
        and hello["site"]
        and hello["pid"] == worker.proc.pid
    )

    # A case's child: prints from the model reach stderr, never the channel.
    (tmp_path / "loud.py").write_text(LOUD)
    child = worker.call("fork")
    assert child["ok"] and child["pid"] != worker.proc.pid
    load = worker.call("load", case="c", source=str(tmp_path / "loud.py"), entry="Model")
    assert load["ok"] and load["class"] == "Model", load
    assert worker.call("hello")["pid"] == child["pid"]
    assert worker.call("end")["ok"]
    assert worker.call("hello")["pid"] == worker.proc.pid

    # A child that dies is reported by the server, which goes on serving.
    (tmp_path / "dies.py").write_text(DIES)
    dying = worker.call("fork")
    worker.next_id += 1
    assert worker.proc.stdin is not None
    request = {
        "op": "load",
        "id": worker.next_id,
        "case": "d",
        "source": str(tmp_path / "dies.py"),
        "entry": "M",
    }
    worker.proc.stdin.write(json.dumps(request).encode() + b"\n")
    worker.proc.stdin.flush()
    assert worker.line() == {"event": "child_exit", "pid": dying["pid"], "code": 3}
    assert worker.call("hello")["pid"] == worker.proc.pid

    assert worker.call("shutdown") == {"id": worker.next_id, "ok": True}
    assert worker.proc.wait(timeout=TIMEOUT_S) == 0
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "printed at import" in stderr and "written to fd 1 at import" in stderr
