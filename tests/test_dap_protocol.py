"""DAP framing of `workbench dap`: Content-Length frames however the bytes arrive, and every malformed input
answered (an error response when its `seq` is known, else an `important` output event) with the server
still answering the next request; the loopback-only `--listen` address and the peer-uid lookup."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WORKBENCH
from workbench.dap.adapter import serve
from workbench.dap.listen import ListenError, parse_listen, peer_socket, refusal
from workbench.dap.protocol import Decoder, Malformed, encode


def _frame(msg: Any) -> bytes:
    body = json.dumps(msg).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _req(seq: int, command: str, **args: Any) -> dict[str, Any]:
    return {"seq": seq, "type": "request", "command": command, "arguments": args}


def test_frames_split_anywhere_or_several_in_one_read_and_any_header_case() -> None:
    data = _frame(_req(1, "initialize")) + b"content-LENGTH: 2\r\nContent-Type: application/json\r\n\r\n{}"
    data += _frame(_req(3, "threads"))
    one_by_one: list[Any] = []
    d = Decoder()
    for i in range(len(data)):
        one_by_one += d.feed(data[i:i + 1])
    at_once = Decoder().feed(data)
    assert one_by_one == at_once
    assert [m["command"] if isinstance(m, dict) else type(m).__name__ for m in at_once] == \
        ["initialize", "Malformed", "threads"]
    assert isinstance(at_once[1], Malformed) and "message type None" in at_once[1].why


def test_an_unfinished_frame_waits_for_the_rest() -> None:
    d = Decoder()
    frame = _frame(_req(7, "threads"))
    assert d.feed(frame[:-3]) == []
    assert d.feed(frame[-3:]) == [_req(7, "threads")]


@pytest.mark.parametrize(("data", "why", "seq"), [
    (b"Content-Length 12\r\n\r\n", "bad header line", None),
    (b"Content-Length: twelve\r\n\r\n", "bad Content-Length", None),
    (b"X-Other: 1\r\n\r\n", "without Content-Length", None),
    (b"Content-Length: 99999999999\r\n\r\n", "over the", None),
    (b"Content-Length: 5\r\n\r\n{nope", "not JSON", None),
    (b"Content-Length: 2\r\n\r\n\xff\xfe", "not UTF-8", None),
    (b"Content-Length: 2\r\n\r\n[]", "a JSON list, not an object", None),
    (_frame({"seq": 4, "type": "request"}), "without a `command`", 4),
    (_frame({"type": "request", "command": "threads"}), "without an integer `seq`", None),
    (_frame({"seq": 5, "type": "request", "command": "threads", "arguments": [1]}), "not an object", 5),
])
def test_malformed_input_is_answered_and_the_next_request_still_is(data: bytes, why: str, seq: int | None) -> None:
    out = _serve([data, _frame(_req(20, "threads"))])
    bad, good = out[0], out[1]
    if seq is None:
        assert bad["type"] == "event" and bad["body"]["category"] == "important", bad
        assert why in bad["body"]["output"], bad
    else:
        assert bad["type"] == "response" and not bad["success"] and bad["request_seq"] == seq, bad
        assert why in bad["message"], bad
    assert good["request_seq"] == 20 and good["success"] and good["body"]["threads"] == [{"id": 1, "name": "build"}]


def test_a_header_without_an_end_is_dropped_not_kept_growing() -> None:
    out = Decoder().feed(b"Content-Length: 5" + b"x" * 9000)
    assert len(out) == 1 and isinstance(out[0], Malformed) and "without an end" in out[0].why


def test_unknown_requests_and_requests_out_of_place_get_error_responses() -> None:
    out = _serve([_frame(_req(1, "frobnicate")), _frame(_req(2, "continue", threadId=1)),
                  _frame(_req(3, "variables", variablesReference=9)), _frame(_req(4, "evaluate", expression="ls")),
                  _frame(_req(5, "launch", args="--oops"))])
    assert [(m["request_seq"], m["success"]) for m in out] == [(n, False) for n in range(1, 6)], out
    assert out[0]["message"] == "unknown request 'frobnicate'"
    assert out[1]["message"] == out[3]["message"] == "the build is not stopped at a step"
    assert "expected a list of strings" in out[4]["message"]


def _serve(chunks: list[bytes]) -> list[dict[str, Any]]:
    """Run a session in-process on `chunks`, then EOF; the messages it wrote."""
    written = bytearray()
    todo = list(chunks)
    serve(lambda: todo.pop(0) if todo else b"", written.extend, engine=None)  # type: ignore[arg-type]
    return [m for m in Decoder(json.loads).feed(bytes(written))]  # type: ignore[misc]


def test_the_process_answers_garbage_and_writes_nothing_but_frames_on_stdout() -> None:
    proc = subprocess.Popen([*WORKBENCH, "dap"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, WORKBENCH_SERVER="0"))
    out, err = proc.communicate(b"garbage\r\n\r\n" + _frame(_req(1, "initialize")) + b"Content-Length: 3\r\n\r\n{x}"
                                + encode(_req(2, "disconnect")), timeout=60)
    assert proc.returncode == 0, err
    msgs = Decoder(json.loads).feed(out)
    assert Decoder(json.loads).feed(out) and sum(len(encode(m)) for m in msgs) == len(out)  # frames only
    kinds = [(m["type"], m.get("command") or m.get("event")) for m in msgs]  # type: ignore[union-attr]
    assert kinds == [("event", "output"), ("response", "initialize"), ("event", "initialized"),
                     ("event", "output"), ("response", "disconnect")], kinds


@pytest.mark.parametrize("value", ["0.0.0.0:4711", "192.168.1.5:1", "example.com:80", "[::]:0", "127.0.0.1"])
def test_listen_takes_loopback_addresses_only(value: str) -> None:
    with pytest.raises(ListenError) as e:
        parse_listen(value)
    assert "\n" not in str(e.value) and value in str(e.value)


def test_listen_loopback_spellings() -> None:
    assert parse_listen("localhost:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:4711") == ("::1", 4711)
    assert parse_listen("127.0.0.2:9") == ("127.0.0.2", 9)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_peer_uid_of_a_loopback_connection_is_found(host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as server:
        server.bind((host, 0))
        server.listen(1)
        client = socket.socket(family)
        threading.Thread(target=client.connect, args=(server.getsockname()[:2],)).start()
        conn, _ = server.accept()
        with conn, client:
            found = peer_socket(conn)
            assert found is not None and found[0] == os.getuid()
            assert refusal(conn) is None


def test_set_breakpoints_verifies_step_lines_only(tmp_path: Path) -> None:
    df = tmp_path / "Dockerfile"
    df.write_text("FROM busybox AS build\n# a comment\nRUN echo a \\\n    && echo b\n\nFROM scratch\n"
                  "COPY --from=build /x /x\nFROM build AS again\nENV A=1\nFROM scratch AS empty\n")
    out = _serve([_frame(_req(1, "setBreakpoints", source={"path": str(df)},
                               breakpoints=[{"line": n} for n in (1, 2, 4, 5, 6, 8, 9, 10)]))])
    bps = out[0]["body"]["breakpoints"]
    got = [(b["verified"], b["line"], b.get("message", "")) for b in bps]
    assert got[:3] == [(True, 1, ""), (False, 2, "no build step at line 2"), (True, 3, "")], got
    assert got[3] == (False, 5, "no build step at line 5")
    assert got[4] == (True, 7, "")  # FROM scratch: its stage's first step
    assert got[5][:2] == (False, 8) and "has no step to stop at" in got[5][2]  # FROM build without steps
    assert got[6] == (False, 9, "no build step at line 9")  # ENV makes no step
    assert got[7][:2] == (False, 10) and "break on the next step" in got[7][2]
