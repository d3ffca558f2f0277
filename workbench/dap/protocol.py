"""DAP framing: `Content-Length: N\\r\\n\\r\\n` then N bytes of UTF-8 JSON, in both directions.

`Decoder` is fed whatever a read returned (half a header, several frames at once) and hands back whole
messages; input it cannot use becomes a `Malformed` (with the request's `seq` when one could be read), so
that the session answers it and goes on, never stopping on it.
"""

from __future__ import annotations

import json
import select
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_HEADER = 8 * 1024
MAX_BODY = 4 * 1024 * 1024
MAX_QUEUED = 32 * 1024 * 1024
"""Bytes waiting for a client that reads too slowly; past this the client is dropped."""
STALL_S = 30.0
"""Seconds a client may read nothing while output waits for it; then it is dropped."""


@dataclass(frozen=True)
class Malformed:
    """Input that is not a usable request: why, and the `seq` / `command` to answer when they were read."""

    why: str
    seq: int | None = None
    command: str = ""


Message = dict[str, Any]


class Decoder:
    """Cuts a byte stream into DAP messages (a bytearray and an offset: linear in the input's size)."""

    def __init__(self, parse: Callable[[bytes], Message | Malformed] | None = None) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._parse = parse or parse_body

    def feed(self, data: bytes) -> list[Message | Malformed]:
        self._buf += data
        out: list[Message | Malformed] = []
        while True:
            end = self._buf.find(b"\r\n\r\n", self._pos)
            if end < 0:
                if len(self._buf) - self._pos > MAX_HEADER:
                    self._buf, self._pos = bytearray(), 0
                    out.append(Malformed(f"a header longer than {MAX_HEADER} bytes without an end (\\r\\n\\r\\n)"))
                break
            if end - self._pos > MAX_HEADER:
                self._pos = end + 4
                out.append(Malformed(f"a header longer than {MAX_HEADER} bytes"))
                continue
            length = _content_length(bytes(self._buf[self._pos:end]))
            start = end + 4
            if isinstance(length, str):
                self._pos = start  # skip the bad header; the next frame may be fine
                out.append(Malformed(length))
                continue
            if len(self._buf) - start < length:
                break
            self._pos = start + length
            out.append(self._parse(bytes(self._buf[start:self._pos])))
        if self._pos:
            del self._buf[:self._pos]  # once per feed, not once per frame
            self._pos = 0
        return out


def _content_length(header: bytes) -> int | str:
    """The Content-Length of a header block (names are case-insensitive), or why there is none."""
    length: int | None = None
    for raw in header.split(b"\r\n"):
        name, colon, value = raw.partition(b":")
        if not colon:
            return f"bad header line {raw[:80]!r}: expected 'Name: value'"
        if name.strip().lower() == b"content-length":
            text = value.strip()
            if not text.isdigit() or len(text) > 18:
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
    except ValueError as e:  # an integer over Python's digit limit
        return Malformed(f"the body has a value Python refuses: {str(e)[:120]}")
    except RecursionError:
        return Malformed("the body is nested too deeply")
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
    """One frame. A lone surrogate (a non-UTF-8 file name, a client's bad string) goes out as its JSON
    escape `\\udcff`, never as an error."""
    body = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class Writer:
    """Numbers and queues outgoing messages, from any thread, for a writer thread that sends them: a
    sender (the build's thread among them) never waits on the client. A client that lets more than
    MAX_QUEUED bytes pile up, or whose `write` fails (a bounded write gives up on a stalled client), is
    dropped: nothing more is written to it. Setting `closed` sends what is queued first."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._busy = False
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @closed.setter
    def closed(self, value: bool) -> None:
        if value:
            self.flush()
        with self._lock:
            self._closed = value
            self._queue.clear()
            self._queued = 0
            self._ready.notify_all()

    def flush(self, timeout: float = STALL_S + 5) -> None:
        """Wait until what is queued is written (or the client dropped), for at most `timeout` seconds."""
        with self._lock:
            self._ready.wait_for(lambda: self._closed or not (self._queue or self._busy), timeout)

    def send(self, msg: Message) -> int:
        with self._lock:
            self._seq += 1
            seq = self._seq
            if self._closed:
                return seq
            data = encode({"seq": seq, **msg})
            if self._queued + len(data) > MAX_QUEUED:
                self._drop()
                return seq
            self._queue.append(data)
            self._queued += len(data)
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name="dap-writer", daemon=True)
                self._thread.start()
            self._ready.notify_all()
            return seq

    def _drop(self) -> None:
        self._closed = True  # the reader sees the client's end (or its hang-up) and ends the session
        self._queue.clear()
        self._queued = 0
        self._ready.notify_all()

    def _drain(self) -> None:
        while True:
            with self._lock:
                self._ready.wait_for(lambda: self._queue or self._closed)
                if self._closed:
                    return
                data = self._queue.popleft()
                self._queued -= len(data)
                self._busy = True
            try:
                self._write(data)
            except OSError:
                with self._lock:
                    self._drop()
                return
            finally:
                with self._lock:
                    self._busy = False
                    self._ready.notify_all()

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


def bounded_write(fd: int, send_nowait: Callable[[memoryview], int],
                  stall: float = STALL_S) -> Callable[[bytes], None]:
    """A `write` for `Writer` that never waits more than `stall` seconds without progress: `send_nowait`
    writes what fits without blocking (BlockingIOError: nothing fits) into `fd`; TimeoutError past it."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[send_nowait(view):]
                continue
            except BlockingIOError:
                pass
            if not poller.poll(stall * 1000):
                raise TimeoutError(f"the client read nothing for {stall:g} s; dropped")

    return write
