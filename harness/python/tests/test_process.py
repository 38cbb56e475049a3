"""The worker as the Rust harness starts it: `python -u -m harness_worker` with the package's
parent directory on PYTHONPATH, the protocol on stdin/stdout."""

import json
import os
import queue
import subprocess
import sys
import threading
import time
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


def _load_dying(worker: Client, tmp_path: Path) -> None:
    """Ask the case's child to load `dies.py` (which exits at import), without waiting for a
    reply: the server's `child_exit` event comes instead."""
    worker.next_id += 1
    assert worker.proc.stdin is not None
    source = str(tmp_path / "dies.py")
    request = {"op": "load", "id": worker.next_id, "case": "d", "source": source, "entry": "M"}
    worker.proc.stdin.write(json.dumps(request).encode() + b"\n")
    worker.proc.stdin.flush()


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
        and hello["protocol"] == PROTOCOL == 9
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
    _load_dying(worker, tmp_path)
    assert worker.line() == {"event": "child_exit", "pid": dying["pid"], "code": 3}
    assert worker.call("hello")["pid"] == worker.proc.pid

    assert worker.call("shutdown") == {"id": worker.next_id, "ok": True}
    assert worker.proc.wait(timeout=TIMEOUT_S) == 0
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "printed at import" in stderr and "written to fd 1 at import" in stderr


COUNTED = """
import colorsys  # a standard-library module the fork server has not imported: a library

import torch

with open(LOG, "a") as f:
    f.write("imported\\n")

BUILT = []  # module state a case changes


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        BUILT.append(1)
        self.register_buffer("built", torch.tensor(float(len(BUILT))))

    def forward(self, x):
        return x * self.built
"""

THREADED = """
import threading
import time
import time

import torch

with open(LOG, "a") as f:
    f.write("imported\\n")
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()


class Model(torch.nn.Module):
    def forward(self, x):
        return x
"""


def _case(worker: Client, path: Path, **load: Any) -> dict[str, Any]:
    """One case of the model in `path` through its zygote: fork, load, end; the load reply, with
    the end reply's libraries."""
    child = worker.call("fork", module={"source": str(path)})
    assert child["ok"] and child["pid"] != worker.proc.pid, child
    loaded = worker.call("load", case="c", source=str(path), entry="Model", **load)
    assert loaded["ok"], loaded
    ended = worker.call("end")
    assert ended["ok"], ended
    return {**loaded, "libraries": ended["libraries"]}


def _model(tmp_path: Path, name: str, text: str) -> tuple[Path, Path]:
    log = tmp_path / f"{name}.log"
    path = tmp_path / f"{name}.py"
    path.write_text(f"LOG = {str(log)!r}\n" + text)
    return path, log


def test_cases_of_one_module_share_its_import_but_never_its_state(worker: Client, tmp_path: Path) -> None:
    worker.call("hello")
    path, log = _model(tmp_path, "counted", COUNTED)
    first, second, third, fourth = (_case(worker, path) for _ in range(4))
    # The first case imports the module itself; from the second on, a zygote imported it once
    # and each case is a fresh fork of it: the constructor's append to module state never
    # reaches the next case.
    assert log.read_text() == "imported\n" * 2
    assert first["state"] == second["state"] == third["state"] == fourth["state"]
    assert first["files"] == second["files"] == [str(path)]
    # A request other than a fork of this module goes back to the server; the zygote waits.
    assert worker.call("hello")["pid"] == worker.proc.pid
    # The libraries a case pulled in are preloaded once.
    assert "colorsys" in first["libraries"]
    assert worker.call("preload", modules=first["libraries"])["imported"] >= 1
    assert worker.call("preload", modules=first["libraries"])["imported"] == 0
    _case(worker, path)
    assert log.read_text() == "imported\n" * 2
    # An edited file is imported again.
    path.write_text(path.read_text().replace('"imported', '"edited'))
    os.utime(path, ns=(1, 1))
    _case(worker, path)
    assert log.read_text() == "imported\nimported\nedited\n"


def test_an_import_that_starts_threads_is_imported_per_case(worker: Client, tmp_path: Path) -> None:
    worker.call("hello")
    path, log = _model(tmp_path, "threaded", THREADED)
    for _ in range(2):
        _case(worker, path)
    # A fork loses threads (OpenMP's pool would hang the child): the zygote tried on the second
    # case refuses, once for the run, and each case imports the module itself.
    assert log.read_text() == "imported\n" * 3
    _case(worker, path)
    assert log.read_text() == "imported\n" * 4


def test_a_case_child_of_a_zygote_that_dies_is_reported_and_the_next_case_runs(
    worker: Client, tmp_path: Path
) -> None:
    worker.call("hello")
    path, log = _model(tmp_path, "counted", COUNTED)
    _case(worker, path)  # the first case of a module makes no zygote
    dying = worker.call("fork", module={"source": str(path)})
    (tmp_path / "dies.py").write_text(DIES)
    _load_dying(worker, tmp_path)
    assert worker.line() == {"event": "child_exit", "pid": dying["pid"], "code": 3}
    assert _case(worker, path)["class"] == "Model"
    assert log.read_text() == "imported\n" * 2
    assert worker.call("shutdown")["ok"]
    assert worker.proc.wait(timeout=TIMEOUT_S) == 0


def _gone(pid: int) -> bool:
    """Exited (or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_killed_server_takes_its_zygote_and_case_child_with_it(worker: Client, tmp_path: Path) -> None:
    worker.call("hello")
    path, _ = _model(tmp_path, "counted", COUNTED)
    _case(worker, path)
    child = worker.call("fork", module={"source": str(path)})["pid"]
    with open(f"/proc/{child}/stat") as f:
        zygote = int(f.read().rsplit(")", 1)[1].split()[1])
    assert zygote != worker.proc.pid  # the case's child is the zygote's
    worker.proc.kill()
    worker.proc.wait(timeout=TIMEOUT_S)
    deadline = time.monotonic() + 10
    while not (_gone(zygote) and _gone(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(zygote) and _gone(child)


def test_zygotes_of_modules_whose_cases_alternate_stay(worker: Client, tmp_path: Path) -> None:
    worker.call("hello")
    a, log_a = _model(tmp_path, "a", COUNTED)
    b, log_b = _model(tmp_path, "b", COUNTED)
    for _ in range(3):
        _case(worker, a)
        _case(worker, b)
    # Each module: its first case imports it, its zygote once; the zygotes wait while the other
    # module's cases run.
    assert log_a.read_text() == log_b.read_text() == "imported\n" * 2


HELPED = """
import torch

from helper_mod import SCALE


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(SCALE)))

    def forward(self, x):
        return x * self.scale
"""


def test_a_helper_edited_between_two_cases_of_a_zygote_is_imported_again(
    worker: Client, tmp_path: Path
) -> None:
    worker.call("hello")
    helper = tmp_path / "helper_mod.py"
    helper.write_text("SCALE = 2\n")
    path, _ = _model(tmp_path, "helped", HELPED)
    before = [_case(worker, path) for _ in range(3)]  # the second and third from the zygote
    assert before[1]["files"] == sorted([str(path), str(helper)])
    helper.write_text("SCALE = 3\n")
    os.utime(helper, ns=(1, 1))
    after = _case(worker, path)  # the next fork, with no other request between: still seen
    assert after["state"] != before[2]["state"]
