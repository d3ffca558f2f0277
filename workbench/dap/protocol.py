"""DAP framing: `Content-Length: N\\r\\n\\r\\n` then N bytes of UTF-8 JSON, in both directions.

`Decoder` is fed whatever a read returned (half a header, several frames at once) and hands back whole
messages; input it cannot use becomes a `Malformed` (with the request's `seq` when one could be read), so
that the session answers it and goes on, never stopping on it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_HEADER = 8 * 1024
MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class Malformed:
    """Input that is not a usable request: why, and the `seq` / `command` to answer when they were read."""

    why: str
    seq: int | None = None
    command: str = ""


Message = dict[str, Any]


class Decoder:
    """Cuts a byte stream into DAP messages."""

    def __init__(self, parse: Callable[[bytes], Message | Malformed] | None = None) -> None:
        self._buf = b""
        self._parse = parse or parse_body

    def feed(self, data: bytes) -> list[Message | Malformed]:
        self._buf += data
        out: list[Message | Malformed] = []
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEADER:
                    self._buf = b""
                    out.append(Malformed(f"a header longer than {MAX_HEADER} bytes without an end (\\r\\n\\r\\n)"))
                return out
            header, rest = self._buf[:end], self._buf[end + 4:]
            length = _content_length(header)
            if isinstance(length, str):
                self._buf = rest  # skip the bad header; the next frame may be fine
                out.append(Malformed(length))
                continue
            if len(rest) < length:
                return out
            body, self._buf = rest[:length], rest[length:]
            out.append(self._parse(body))


def _content_length(header: bytes) -> int | str:
    """The Content-Length of a header block (names are case-insensitive), or why there is none."""
    length: int | None = None
    for raw in header.split(b"\r\n"):
        name, colon, value = raw.partition(b":")
        if not colon:
            return f"bad header line {raw[:80]!r}: expected 'Name: value'"
        if name.strip().lower() == b"content-length":
            text = value.strip()
            if not text.isdigit():
                return f"bad Content-Length {text[:40]!r}: expected a number of bytes"
            length = int(text)
    if length is None:
        return "a header without Content-Length"
    if length > MAX_BODY:
        return f"Content-Length {length} is over the {MAX_BODY}-byte limit"
    return length


def parse_body(body: bytes) -> Message | Malformed:
    """One message from its JSON body: a request (an object with `seq`, `type`, `command`) or why not."""
    try:
        msg = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        return Malformed(f"the body is not UTF-8: {e}")
    except json.JSONDecodeError as e:
        return Malformed(f"the body is not JSON: {e}")
    if not isinstance(msg, dict):
        return Malformed(f"the body is a JSON {type(msg).__name__}, not an object")
    seq = msg.get("seq")
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    command = msg.get("command")
    if msg.get("type") == "response" and seq is not None:
        return msg  # a reverse request's answer (runInTerminal)
    if msg.get("type") != "request":
        return Malformed(f"message type {msg.get('type')!r}: expected 'request'", seq, str(command or ""))
    if not isinstance(command, str) or not command:
        return Malformed("a request without a `command`", seq)
    if seq is None:
        return Malformed(f"request {command!r} without an integer `seq`", None, command)
    args = msg.get("arguments", {})
    if args is not None and not isinstance(args, dict):
        return Malformed(f"request {command!r}: `arguments` is not an object", seq, command)
    return msg


def encode(msg: Message) -> bytes:
    body = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class Writer:
    """Numbers and writes outgoing messages, from any thread; stops writing once the client is gone."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._seq = 0
        self.closed = False

    def send(self, msg: Message) -> int:
        with self._lock:
            self._seq += 1
            msg = {"seq": self._seq, **msg}
            if not self.closed:
                try:
                    self._write(encode(msg))
                except OSError:
                    self.closed = True  # the client went away; the reader sees its EOF
            return self._seq

    def event(self, name: str, body: dict[str, Any] | None = None) -> None:
        self.send({"type": "event", "event": name, **({"body": body} if body is not None else {})})

    def response(self, seq: int, command: str, body: dict[str, Any] | None = None) -> None:
        self.send({"type": "response", "request_seq": seq, "command": command, "success": True,
                   **({"body": body} if body is not None else {})})

    def error(self, seq: int, command: str, message: str) -> None:
        self.send({"type": "response", "request_seq": seq, "command": command, "success": False,
                   "message": message, "body": {"error": {"id": 1, "format": message, "showUser": True}}})

    def output(self, text: str, category: str = "console", **extra: Any) -> None:
        self.event("output", {"category": category, "output": text, **extra})

    def malformed(self, bad: Malformed) -> None:
        """Answer input that is not a usable request: an error response when it has a `seq`, else a note."""
        if bad.seq is not None:
            self.error(bad.seq, bad.command or "unknown", f"malformed request: {bad.why}")
        else:
            self.output(f"workbench dap: malformed message ignored: {bad.why}\n", "important")
