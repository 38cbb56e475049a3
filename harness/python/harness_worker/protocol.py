"""The protocol channel, its line-delimited JSON codec, and the request loop (fork server, case
children, probe server).

Protocol version 3. The Rust harness starts `python -u -m harness_worker` and sends it
line-delimited JSON requests on stdin; each request gets exactly one JSON reply line on the
*protocol* channel. Before anything else (torch included) is imported, the worker moves the
protocol channel to private file descriptors and points fd 1 at stderr, so whatever a model
prints (from Python or from C) can never corrupt the protocol. Tensors never travel in JSON:
inputs arrive as safetensors files written by the harness, eager outputs leave as safetensors
files plus a small JSON tree that describes their structure (tuple, list, dict, scalars) and names
the tensor leaves by key.

Requests: hello, fork, probe_server, load, export, eager, retrace, device_probe, end, preload,
shutdown.
Every reply has "id" (echoed) and "ok"; a failed reply carries "error": {"kind", "message",
"traceback"} (kinds: errors.ErrorKind). A line that is not a JSON object gets a `protocol` error with
"id": null. The process is a fork server: `fork` starts a child (a copy of the warm server) that
serves one case's requests until `end`; a child that dies otherwise is reported by the server as
a line {"event": "child_exit", "pid", "code" | "signal"}. `probe_server` forks a second fork
server, the probe server, which talks through three FIFOs the harness made and warms the meta
device's kernels (they import torch._dynamo, about 0.6 s) so that the first server, on every
case's critical path, never pays for them.

`export` (changed in version 2) names its variants as data:
    {"op": "export", "id", "case", "input": {"file", "sample"}, "names": [...],
     "variants": [{"name": "traced", "method": "trace", "options": {}}, ...],
     "dims": {...}, "out_dir": "..."}
and each variant's artifact is `<out_dir>/<name>.pt`. The reply:
    {"id", "ok": true, "exports": {"<name>": {ok, path, code, constants, modules, device_pins,
     code_error, error, warnings, seconds}, ...}, "eager_state_changed": bool, "evidence": {...}}
The methods are variants.EXPORTERS (trace, script); an unknown method is a `protocol` error. The
evidence and the re-trace's baseline come from the first `trace` and first `script` variants.

Version 3: `hello` also replies "site" (the folders installed libraries live in), and `load`'s
"files" lists every user file the import and the constructor pulled in, transitively (helpers,
PYTHONPATH and editable installs), not only the model's own: the harness keys cached verdicts by
both. A tensor leaf that travels in another form than its dtype (complex as `view_as_real`, wide
unsigned ints as int64, float8 as float32, quantized dequantized) says its dtype:
{"t": "tensor", "key", "dtype": "complex64"}. An `eager` sample may say "fill_uninitialized": true
(the determinism repeat): it runs with uninitialized memory filled, as torch's deterministic mode
does, so a model that reads memory it never wrote differs from its plain run.

Version 8: `end` replies {"libraries": [...]}, the installed modules (libraries, torch's own, the
standard library; never the user's files) the child imported that its server had not, in import
order; `preload` {"modules": [...]} imports such modules in the fork server between cases, so the
children that follow start with them (torchvision imports torch._dynamo: 1.3 s a case), and
replies {"imported", "seconds"}. The server never imports the user's code.

Version 9: `load` may say "device" ("cpu", the default, or "cuda"): the case's child moves the
model there, and its `export`, `retrace` and `eager` requests run with their inputs there (each
artifact is made on that device, as a team exporting on a GPU makes it). A tensor leaf of an
output not on the CPU says where it was: {"t": "tensor", "key", "device": "cuda:0"}.
"""

import contextlib
import io
import json
import os
import signal
import sys
from typing import IO, Any

from harness_worker.errors import ErrorKind, HarnessError, error_body

PROTOCOL = 9


class Channel:
    """The protocol channel: requests in (bytes, a line each), replies out (a JSON line each)."""

    def __init__(self, requests: IO[bytes], replies: IO[str]) -> None:
        self.requests = requests
        self.replies = replies

    @classmethod
    def claim(cls) -> "Channel":
        """Take fds 0 and 1 for the protocol, where user code cannot reach them: stdin becomes
        /dev/null and fd 1 (Python's and C's stdout) goes to stderr."""
        req_fd = os.dup(0)
        rep_fd = os.dup(1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)  # prints from models (Python or C) land on stderr
        sys.stdin = open(os.devnull)
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
        requests = os.fdopen(req_fd, "rb", buffering=0)
        replies = os.fdopen(rep_fd, "w", buffering=1, encoding="utf-8")
        return cls(requests, replies)

    @classmethod
    def from_fifos(cls, req: dict[str, Any]) -> "Channel":
        """The probe server's channel: the FIFOs a `probe_server` request names, opened in the
        order the harness opens them (stderr, then replies, then requests)."""
        err = os.open(req["stderr"], os.O_WRONLY)
        os.dup2(err, 2)
        os.dup2(err, 1)
        os.close(err)
        replies = open(req["replies"], "w", buffering=1, encoding="utf-8")
        requests = open(req["requests"], "rb", buffering=0)
        return cls(requests, replies)

    def read_line(self) -> bytes:
        """The next request line; empty at the end of the channel."""
        return self.requests.readline()

    def write(self, obj: dict[str, Any]) -> None:
        """Send one reply or event line."""
        self.replies.write(encode_reply(obj))
        self.replies.flush()

    def buffer_requests(self) -> None:
        """In a case's child: read requests through a buffer. The server reads its channel a byte
        at a time (an unbuffered readline), so that what follows a `fork` line stays in the pipe
        for the child; that costs a system call per byte, milliseconds for an `eager` request
        with many samples. The child is the channel's only reader until it exits, and the harness
        sends nothing after `end` until the child has answered it, so reading ahead loses
        nothing."""
        self.requests = io.BufferedReader(self.requests, buffer_size=1 << 16)  # type: ignore[arg-type]

    def close(self) -> None:
        self.requests.close()
        self.replies.close()


def decode_request(line: bytes | str) -> dict[str, Any]:
    """A request from its line; a line that is not a JSON object is a `protocol` error."""
    try:
        req = json.loads(line)
    except ValueError as exc:
        body = error_body(ErrorKind.PROTOCOL, exc)
        raise HarnessError(ErrorKind.PROTOCOL, body["message"], body["traceback"]) from exc
    if not isinstance(req, dict):
        raise HarnessError(ErrorKind.PROTOCOL, f"a request is a JSON object, not {type(req).__name__}")
    return req


def encode_reply(obj: dict[str, Any]) -> str:
    """One reply line (NaN is not JSON; anything else unknown becomes its str)."""
    return json.dumps(obj, allow_nan=False, default=str) + "\n"


def _flush_std() -> None:
    sys.stdout.flush()
    sys.stderr.flush()


def _child_exit(pid: int, status: int) -> dict[str, Any] | None:
    """The `child_exit` event for a child that did not exit cleanly, else None."""
    if os.WIFSIGNALED(status):
        return {"event": "child_exit", "pid": pid, "signal": os.WTERMSIG(status)}
    if os.WEXITSTATUS(status) != 0:
        return {"event": "child_exit", "pid": pid, "code": os.WEXITSTATUS(status)}
    return None


# The pipe ends this process holds to talk to its own children (spares, zygotes): a child forked
# from it must not hold them, or a pipe would never see its end when its owner dies.
_PRIVATE: set[int] = set()

# Zygotes a fork server keeps at most (cases of these modules alternate in its queue).
ZYGOTES = 4


def _fork_child() -> int:
    """fork(); in the child, the parent's private pipe ends are closed and forgotten."""
    _flush_std()
    pid = os.fork()
    if pid == 0:
        for fd in list(_PRIVATE):
            with contextlib.suppress(OSError):
                os.close(fd)
        _PRIVATE.clear()
    return pid


def _keep(*fds: int) -> None:
    _PRIVATE.update(fds)


def _close(*fds: int) -> None:
    for fd in fds:
        _PRIVATE.discard(fd)
        with contextlib.suppress(OSError):
            os.close(fd)


class Piped:
    """A child forked with two private pipes to it: `go` (this process writes) and `done` (the
    child writes); the child runs `body(go_r, done_w)` and never returns."""

    def __init__(self, body: Any) -> None:
        go_r, go_w = os.pipe()
        done_r, done_w = os.pipe()
        self.pid = _fork_child()
        if self.pid == 0:
            os.close(go_w)
            os.close(done_r)
            body(go_r, done_w)
        os.close(go_r)
        os.close(done_w)
        self.go, self.done = go_w, done_r
        _keep(go_w, done_r)

    def discard(self) -> None:
        """Kill the child (never started, or no longer wanted) and reap it."""
        _close(self.go, self.done)
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def _send(fd: int, tag: bytes, payload: bytes = b"") -> None:
    """One framed message on a private pipe: a tag byte, a length, the payload."""
    os.write(fd, tag + len(payload).to_bytes(8, "big") + payload)


def _recv(fd: int) -> tuple[bytes, bytes] | None:
    """The next framed message, or None at the pipe's end (its writer exited)."""
    head = _read_exactly(fd, 9)
    if head is None:
        return None
    payload = _read_exactly(fd, int.from_bytes(head[1:], "big"))
    return None if payload is None else (head[:1], payload)


def _read_exactly(fd: int, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class Spare(Piped):
    """A child forked ahead of its case: it waits on a private pipe (`go`) for the request id of
    the `fork` that hands it the case, then serves the channel; when the case ends it says so on
    another (`done`) before exiting, so the server takes the channel back without waiting for
    the exit. A fork (about 10 ms with torch loaded) and the last child's teardown (about 8 ms)
    thus happen while a case runs, not between cases."""

    def __init__(self, worker: object, channel: Channel) -> None:
        super().__init__(lambda go_r, done_w: _wait_and_serve(worker, channel, go_r, done_w))

    def start(self, rid: Any) -> None:
        """Hand the spare its case: it answers the `fork` itself."""
        os.write(self.go, json.dumps(rid).encode())
        _close(self.go)

    def finish(self) -> dict[str, Any] | None:
        """Wait until the case's child gives the channel back: None, or (when it died without
        doing so) its `child_exit` event. A child that gave it back is reaped later."""
        released = os.read(self.done, 1)
        _close(self.done)
        if released:
            return None
        _, status = os.waitpid(self.pid, 0)
        return _child_exit(self.pid, status)


def _wait_and_serve(worker: object, channel: Channel, go_r: int, done_w: int) -> None:
    """A spare's life: wait for its case (or the server's end), serve it, say it is done. It dies
    with its parent: a case child left behind would go on reading the channel."""
    _die_with_parent()
    rid = os.read(go_r, 4096)
    if not rid:
        os._exit(0)  # the server is gone
    os.close(go_r)
    worker.start_case()  # type: ignore[attr-defined]
    channel.buffer_requests()
    channel.write({"id": json.loads(rid), "ok": True, "pid": os.getpid()})
    serve(worker, channel, child=True, done=done_w)
    os._exit(0)


class Children:
    """A fork server's case children: the spare forked ahead and the finished ones not yet
    reaped; in the fork server, also its zygotes (by model module, least recently used first),
    the modules refused one, and how many cases of each module it has seen."""

    def __init__(self) -> None:
        self.spare: Spare | None = None
        self.finished: list[int] = []
        self.zygotes: dict[str, Zygote] = {}
        self.refused: set[str] = set()
        self.seen: dict[str, int] = {}

    def fork(self, worker: object, channel: Channel, rid: Any) -> None:
        """`fork`: the spare (or a child forked now) serves the case; the next spare is forked
        while it runs; the server then waits for the channel back, and reports a child that died
        with a `child_exit` event line."""
        self.reap()
        child = self.spare or Spare(worker, channel)
        child.start(rid)
        self.spare = Spare(worker, channel)
        event = child.finish()
        if event is None:
            self.finished.append(child.pid)  # reaped later (or already, if it died cleanly)
        else:
            channel.write(event)

    def reap(self) -> None:
        """Collect the finished children that have exited."""
        for pid in list(self.finished):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue
            self.finished.remove(pid)

    def discard_spare(self) -> None:
        """The server's state changed (a preload): the spare, forked before, would lack it."""
        if self.spare is not None:
            self.spare.discard()
            self.spare = None

    def discard_all(self) -> None:
        """The server stops: its spare and zygotes go with it."""
        self.discard_spare()
        for z in self.zygotes.values():
            z.discard()
        self.zygotes.clear()

    def forget(self) -> None:
        """In a child that becomes another server (the probe server): none of these are its
        own (their pipe ends were closed at its fork)."""
        self.spare = None
        self.finished = []
        self.zygotes = {}


def _become_probe_server(worker: object, channel: Channel, req: dict[str, Any], children: Children) -> None:
    """In a child forked by `probe_server`: drop the first server's channel and children, take
    the FIFOs the harness made, warm the meta kernels and serve as a fork server of its own.
    Never returns."""
    try:
        children.forget()
        channel.close()
        fifos = Channel.from_fifos(req)
        from harness_worker.warmup import warm_up_meta  # torch, already imported by the server

        warm_up_meta()
        serve(worker, fifos, child=False)
    finally:
        _flush_std()
        os._exit(0)


def _module_key(req: dict[str, Any]) -> str | None:
    """The model module a `fork` names (version 8), as a key: cases of one module share its
    import through a zygote."""
    module = req.get("module")
    return json.dumps(module, sort_keys=True) if isinstance(module, dict) and module else None


def _threads() -> int:
    """The process's OS threads (OpenMP's pool included), where /proc says."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


class Zygote(Piped):
    """A child of the fork server that imports one model module once and then forks the cases of
    that module from itself, so a models file shared by many cases is executed once per job, not
    once per case (a 2,400-line file of 400 models took 60 ms a case). Each case still runs in a
    fresh fork: what one case does to the module's state never reaches another. The import
    happens as it would in a case's child (same server state, the case's seed set only later, at
    construction). A zygote refuses (and the server forks the case plainly, as before) when the
    import fails or starts threads (a fork would lose them: OpenMP's pool started at import hangs
    the children). On any request but a `fork` of its module it hands the channel back to the
    server with that request and waits to be resumed with the next `fork` of its module; when
    the module's files changed it retires instead, and the server makes a new one.

    Messages from the zygote (framed, on `done`): R (refused), L + a request line (handed back),
    X + a request line (retired: files changed); its end without a message: it died."""

    def __init__(self, worker: object, channel: Channel, line: bytes) -> None:
        super().__init__(lambda go_r, done_w: _zygote_main(worker, channel, line, go_r, done_w))

    def resume(self, line: bytes) -> None:
        """Give the channel back to the zygote, with the `fork` it is to serve first."""
        _send(self.go, b"F", line)

    def wait(self) -> tuple[str, Any]:
        """Until the zygote gives the channel back: ("refused", None), ("line", the request it
        gave back), ("retired", the request), or ("died", its child_exit event or None)."""
        message = _recv(self.done)
        if message is None:
            _close(self.go, self.done)
            _, status = os.waitpid(self.pid, 0)
            return "died", _child_exit(self.pid, status)
        tag, payload = message
        if tag == b"L":
            return "line", payload
        _close(self.go, self.done)
        os.waitpid(self.pid, 0)
        return ("retired", payload) if tag == b"X" else ("refused", None)


def _die_with_parent() -> None:
    """End with the parent process: a zygote with its server (a server killed for a hang in the
    zygote's import must not leave it behind), a case's child with the server or zygote that
    forked it. Linux only; elsewhere a child ends when the channel does."""
    parent = os.getppid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)  # the parent died before the signal was asked for


def _file_stats(files: list[str]) -> list[tuple[str, int, int]]:
    stats = []
    for f in files:
        try:
            st = os.stat(f)
            stats.append((f, st.st_mtime_ns, st.st_size))
        except OSError:
            stats.append((f, -1, -1))
    return stats


def _zygote_main(worker: object, channel: Channel, line: bytes, go_r: int, done_w: int) -> None:
    """The zygote's life (see Zygote). Never returns."""
    _die_with_parent()
    _keep(go_r, done_w)  # its own pipes to the server: none of its children may hold them
    req = decode_request(line)
    key = _module_key(req)
    worker.start_case()  # type: ignore[attr-defined]  # its cases report libraries against the server's
    threads = _threads()
    try:
        files = worker.preimport(req["module"])  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - the case's own load reports the error, as before
        files = None
    if files is None or _threads() > threads:
        _send(done_w, b"R")
        os._exit(0)
    stats = _file_stats(files)

    def stale() -> bool:
        return _file_stats(files) != stats

    children = Children()
    try:
        while line:
            line, retire = _serve_forks(worker, channel, (key, stale), line, children)
            if retire:
                _send(done_w, b"X", line)
                break
            if not line:
                break
            _send(done_w, b"L", line)
            message = _recv(go_r)
            line = message[1] if message else b""
    finally:
        children.discard_spare()
        _flush_std()
        os._exit(0)


def _serve_forks(
    worker: object, channel: Channel, module: tuple[str | None, Any], line: bytes, children: Children
) -> tuple[bytes, bool]:
    """In a zygote: serve `fork`s of its module (its key, and whether its files changed) from the
    channel, starting with `line`; the first line that is not one (b"" at the channel's end), and
    whether the zygote must retire because a file it imported changed before that fork (checked
    before every fork: a helper edited between two cases must be imported again, or its case
    would run the old code while the cache keys the verdict on the new)."""
    key, stale = module
    while line:
        try:
            req = decode_request(line)
        except HarnessError:
            return line, False
        if req.get("op") != "fork" or _module_key(req) != key:
            return line, False
        if stale():
            return line, True
        children.fork(worker, channel, req.get("id"))
        line = channel.read_line()
    return line, False


def _fork_probe_server(worker: object, channel: Channel, req: dict[str, Any], children: Children) -> None:
    """`probe_server`: fork the probe server and answer with its pid at once."""
    pid = _fork_child()
    if pid == 0:
        _become_probe_server(worker, channel, req, children)
    channel.write({"id": req.get("id"), "ok": True, "pid": pid})


def dispatch(worker: object, req: dict[str, Any]) -> dict[str, Any]:
    """The reply to an ordinary op (not fork, probe_server, end, shutdown): the worker's
    `op_<op>` body, or its error."""
    rid = req.get("id")
    op = req.get("op")
    handler = getattr(worker, f"op_{op}", None)
    try:
        if handler is None:
            raise HarnessError(ErrorKind.PROTOCOL, f"unknown op {op!r}")
        body = handler(req)
        body.update({"id": rid, "ok": True})
        return body
    except HarnessError as exc:
        return {"id": rid, "ok": False, "error": exc.body()}
    except Exception as exc:  # noqa: BLE001 - the worker must answer, whatever happened
        return {"id": rid, "ok": False, "error": error_body(ErrorKind.INTERNAL, exc)}
    finally:
        _flush_std()


def serve(worker: object, channel: Channel, child: bool, done: int | None = None) -> None:
    """The request loop. The fork server answers `fork` by handing the case to a child (see
    `Children`, `Zygote`) that serves the case's requests on the same channel until `end` (then
    gives the channel back on `done` and exits), while the server waits; if the child dies another
    way, the server says so with a `child_exit` event line. The fork server forks only between
    cases: it never runs a case itself."""
    children = Children()
    try:
        _loop(worker, channel, child, done, children)
    finally:
        if not child:
            children.discard_all()


def _fork(worker: object, channel: Channel, line: bytes, children: Children) -> bytes | None:
    """`fork` in the fork server: a plain child for a case whose module has no zygote worth
    making (the first case of a module, a module refused one), else through the module's zygote,
    made on its second case. Returns the request line a zygote gave back, to be served next."""
    req = decode_request(line)
    key = _module_key(req)
    if key is not None:
        children.seen[key] = children.seen.get(key, 0) + 1
    if key is None or key in children.refused or (children.seen[key] < 2 and key not in children.zygotes):
        children.fork(worker, channel, req.get("id"))
        return None
    zygote = children.zygotes.pop(key, None)
    if zygote is None:
        if len(children.zygotes) >= ZYGOTES:  # the least recently used goes
            children.zygotes.pop(next(iter(children.zygotes))).discard()
        zygote = Zygote(worker, channel, line)
    else:
        zygote.resume(line)
    outcome, detail = zygote.wait()
    if outcome == "line":
        children.zygotes[key] = zygote  # the most recently used, last
        return detail
    if outcome == "retired":
        return detail  # served again: a new zygote imports the edited files
    if outcome == "refused":
        children.refused.add(key)
        children.fork(worker, channel, req.get("id"))
    elif detail is not None:
        channel.write(detail)
    return None


def _loop(worker: object, channel: Channel, child: bool, done: int | None, children: Children) -> None:
    pending: bytes | None = None
    while True:
        line, pending = (pending, None) if pending else (channel.read_line(), None)
        if not line:
            if child:
                os._exit(0)
            return
        try:
            req = decode_request(line)
        except HarnessError as exc:
            channel.write({"id": None, "ok": False, "error": exc.body()})
            continue
        rid, op = req.get("id"), req.get("op")
        if op == "shutdown":
            channel.write({"id": rid, "ok": True})
            if child:
                os._exit(0)
            return
        if op == "fork" and not child:
            pending = _fork(worker, channel, line, children)
        elif op == "probe_server" and not child:
            _fork_probe_server(worker, channel, req, children)
        elif op == "end" and child:
            channel.write({"id": rid, "ok": True, "libraries": worker.new_libraries()})  # type: ignore[attr-defined]
            _flush_std()
            if done is not None:
                os.write(done, b"1")
            os._exit(0)
        else:
            if op == "preload" and not child:
                children.discard_spare()
            channel.write(dispatch(worker, req))
