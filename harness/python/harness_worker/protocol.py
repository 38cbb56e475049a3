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

Requests: hello, fork, probe_server, load, export, eager, retrace, device_probe, end, shutdown.
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
"""

import io
import json
import os
import sys
from typing import IO, Any

from harness_worker.errors import ErrorKind, HarnessError, error_body

PROTOCOL = 7


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


def _fork_case(worker: object, channel: Channel, rid: Any) -> None:
    """`fork`: a child serves one case's requests on the same channel until `end`, while the
    server waits for it."""
    _flush_std()
    pid = os.fork()
    if pid == 0:
        channel.buffer_requests()
        channel.write({"id": rid, "ok": True, "pid": os.getpid()})
        serve(worker, channel, child=True)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    event = _child_exit(pid, status)
    if event is not None:
        channel.write(event)


def _become_probe_server(worker: object, channel: Channel, req: dict[str, Any]) -> None:
    """In a child forked by `probe_server`: drop the first server's channel, take the FIFOs the
    harness made, warm the meta kernels and serve as a fork server of its own. Never returns."""
    try:
        channel.close()
        fifos = Channel.from_fifos(req)
        from harness_worker.warmup import warm_up_meta  # torch, already imported by the server

        warm_up_meta()
        serve(worker, fifos, child=False)
    finally:
        _flush_std()
        os._exit(0)


def _fork_probe_server(worker: object, channel: Channel, req: dict[str, Any]) -> None:
    """`probe_server`: fork the probe server and answer with its pid at once."""
    _flush_std()
    pid = os.fork()
    if pid == 0:
        _become_probe_server(worker, channel, req)
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


def serve(worker: object, channel: Channel, child: bool) -> None:
    """The request loop. The fork server answers `fork` by forking a child that serves the
    case's requests on the same channel until `end` (then exits), while the server waits; if the
    child dies another way, the server says so with a `child_exit` event line. The fork server
    forks only between cases: it never runs a case itself."""
    while True:
        line = channel.read_line()
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
            _fork_case(worker, channel, rid)
        elif op == "probe_server" and not child:
            _fork_probe_server(worker, channel, req)
        elif op == "end" and child:
            channel.write({"id": rid, "ok": True})
            _flush_std()
            os._exit(0)
        else:
            channel.write(dispatch(worker, req))
