import io
import json
from pathlib import Path
from typing import Any

import pytest

from harness_worker.errors import ErrorKind, HarnessError
from harness_worker.protocol import Channel, decode_request, encode_reply, serve


class FakeWorker:
    def op_echo(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"echo": req["value"]}

    def op_refuse(self, req: dict[str, Any]) -> dict[str, Any]:
        raise HarnessError(ErrorKind.MODEL_ENTRY, "refused")

    def op_crash(self, req: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("boom")


def run(*lines: str | bytes) -> list[dict[str, Any]]:
    """Serve the lines as a fork server would, up to their end; the reply lines, parsed."""
    data = b"".join(line if isinstance(line, bytes) else line.encode() + b"\n" for line in lines)
    replies = io.StringIO()
    serve(FakeWorker(), Channel(io.BytesIO(data), replies), child=False)
    text = replies.getvalue()
    assert text.endswith("\n") or not text
    return [json.loads(line) for line in text.splitlines()]


def test_a_request_line_in_a_reply_line_out() -> None:
    assert run('{"op": "echo", "id": 7, "value": [1, "a"]}') == [{"echo": [1, "a"], "id": 7, "ok": True}]


def test_codec() -> None:
    assert decode_request(b'{"op": "hello", "id": 1}\n') == {"op": "hello", "id": 1}
    line = encode_reply({"id": 1, "ok": True, "path": Path("/x"), "text": "a\nb"})
    assert line == '{"id": 1, "ok": true, "path": "/x", "text": "a\\nb"}\n'
    with pytest.raises(ValueError):
        encode_reply({"x": float("nan")})
    for bad in (b"not json\n", b"[1, 2]\n"):
        with pytest.raises(HarnessError) as info:
            decode_request(bad)
        assert info.value.kind is ErrorKind.PROTOCOL


def test_bad_lines_get_a_protocol_error_and_the_loop_goes_on() -> None:
    replies = run("this is not json", "3", '{"op": "echo", "id": 2, "value": 1}')
    assert [r["id"] for r in replies] == [None, None, 2]
    for r in replies[:2]:
        assert r["ok"] is False and r["error"]["kind"] == "protocol"
    assert replies[0]["error"]["message"].startswith("JSONDecodeError")


def test_errors() -> None:
    replies = run('{"op": "nope", "id": 1}', '{"op": "refuse", "id": 2}', '{"op": "crash", "id": 3}')
    assert replies[0]["error"] == {"kind": "protocol", "message": "unknown op 'nope'", "traceback": []}
    assert replies[1]["error"]["kind"] == "model_entry"
    assert replies[2]["error"]["kind"] == "internal"
    assert replies[2]["error"]["message"] == "RuntimeError: boom"


def test_server_only_ops() -> None:
    # `end` belongs to a case's child; in the server it is an unknown op, as before.
    replies = run(
        '{"op": "end", "id": 1}', '{"op": "shutdown", "id": 2}', '{"op": "echo", "id": 3, "value": 0}'
    )
    assert replies[0]["error"]["kind"] == "protocol"
    assert replies[1] == {"id": 2, "ok": True}
    assert len(replies) == 2  # nothing is served after shutdown
