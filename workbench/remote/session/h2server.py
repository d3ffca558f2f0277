"""A minimal gRPC server over HTTP/2 (the `h2` library) on any duplex byte pipe.

BuildKit's session runs backwards: the daemon is the HTTP/2 client and we serve the session services on a
byte stream we were handed (a hijacked socket, or the BytesMessage stream of `Control.Session`), so grpcio's
server, which only listens, cannot be used. One reader thread drives the h2 state machine; every call runs
in its own thread; one writer thread owns the pipe's send side, so no thread ever blocks on a slow peer while
holding the connection lock. Health checks therefore answer at once even while a big DiffCopy waits for
flow-control window (Docker 20.10 drops the session after one health check slower than 10 s).

The peer is the daemon, which we do not trust with our memory: a message is at most MAX_MESSAGE, bytes
queued for the pipe at most OUT_LIMIT (senders wait, the reader never does), at most MAX_HANDLERS calls
run at once (further streams are refused, so resetting streams in a loop cannot grow threads), and the request
bytes all calls hold before their handlers take them at most SESSION_BUDGET (over it, the call holding the
most is refused: many streams each sending a big message cannot make us hold MAX_HANDLERS x MAX_MESSAGE).
"""

from __future__ import annotations

import queue
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

# gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html)
OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
NOT_FOUND = 5
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14

READ_SIZE = 64 * 1024
STREAM_WINDOW = 4 * 1024 * 1024  # inbound, per stream: what a peer may send before we consume it
CONNECTION_WINDOW = 16 * 1024 * 1024
# As buildctl's limits (channel.MAX_MESSAGE). What a daemon sends the session is small (FileSync packets of
# 32 KiB, FileSend's tar in BytesMessages of at most 3 MiB), so this only stops a peer from announcing 4 GiB.
MAX_MESSAGE = 16 << 20
OUT_LIMIT = 8 << 20  # bytes queued for the pipe before senders wait (a peer that opens its window, never reads)
MAX_HANDLERS = 64  # calls running at once; BuildKit runs a handful (health, DiffCopy per local dir, secrets)
# Request bytes held across the connection's calls (partial messages and messages their handlers have not taken
# yet). Twice MAX_MESSAGE: a big message never competes with more than one other.
SESSION_BUDGET = 32 << 20


class Pipe(Protocol):
    """A duplex byte stream (a socket is one)."""

    def recv(self, n: int) -> bytes: ...

    def sendall(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class GrpcError(Exception):
    """Ends a call with this gRPC status; the message goes to the peer (never put a secret in it)."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CallClosed(Exception):
    """The peer reset the call or the connection ended."""


def frame(message: bytes) -> bytes:
    """The gRPC length-prefixed message: an uncompressed flag byte, a big-endian length, the bytes."""
    return struct.pack(">BI", 0, len(message)) + message


def percent_encode(text: str) -> bytes:
    """`grpc-message` encoding: printable ASCII but `%` as is, every other byte as %XX."""
    return b"".join(bytes([c]) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c for c in text.encode())


class Call:
    """One gRPC call as its handler sees it: the path, the metadata, received messages and a send side."""

    def __init__(self, server: H2GrpcServer, stream_id: int, path: str, metadata: dict[str, list[str]]) -> None:
        self.server = server
        self.stream_id = stream_id
        self.path = path
        self.metadata = metadata
        self._inbox: queue.Queue[tuple[bytes, int] | None] = queue.Queue()
        self._buffer = bytearray()
        self._unacked = 0  # received, not yet acknowledged (the part of a message still incomplete)
        self._pending = 0  # messages in the inbox the handler has not taken yet (under the connection lock)
        self._held = 0  # request bytes of this call in memory: _buffer and the inbox (under the connection lock)
        self.closed = threading.Event()  # reset by the peer, or the connection ended
        self.headers_sent = False
        self.finished = False
        self._send_lock = threading.Lock()  # a message's frames must not interleave with another's

    def first(self, key: str, default: str = "") -> str:
        values = self.metadata.get(key)
        return values[0] if values else default

    def recv(self) -> bytes | None:
        """The next request message; None once the peer has half-closed. Raises CallClosed on a reset."""
        item = self._inbox.get()
        if item is None:
            self._inbox.put(None)  # stay at the end for later calls
            if self.closed.is_set():
                raise CallClosed(self.path)
            return None
        message, consumed = item
        self.server._consumed(self, consumed, 5 + len(message))
        return message

    def messages(self) -> Iterator[bytes]:
        while (m := self.recv()) is not None:
            yield m

    def send(self, message: bytes) -> None:
        """Sends one response message, waiting for flow-control window as needed (thread-safe)."""
        self.send_many([message])

    def send_many(self, messages: list[bytes]) -> None:
        """Sends messages back to back (fewer frames and lock turns than one by one)."""
        with self._send_lock:
            self.server._send_data(self, b"".join(frame(m) for m in messages))

    # called by the reader thread, under the connection lock
    def _feed(self, data: bytes, flow_controlled: int) -> int:
        """Queues the complete messages in `data`; returns the bytes to acknowledge now (partial messages).
        Raises GrpcError for a message that announces more than MAX_MESSAGE (its bytes are dropped)."""
        self._buffer += data
        self._unacked += flow_controlled
        messages = []
        while len(self._buffer) >= 5:
            flag, length = struct.unpack_from(">BI", self._buffer)
            if length > MAX_MESSAGE:
                self._buffer = bytearray()
                raise GrpcError(RESOURCE_EXHAUSTED, f"message of {length} bytes exceeds {MAX_MESSAGE >> 20} MiB")
            if len(self._buffer) < 5 + length:
                break
            if flag:
                raise GrpcError(UNIMPLEMENTED, "compressed messages are not supported")
            messages.append(bytes(self._buffer[5:5 + length]))
            del self._buffer[:5 + length]
        if messages:
            # the window reopens as the handler consumes what was queued (counted on the last message)
            for m in messages[:-1]:
                self._inbox.put((m, 0))
            self._inbox.put((messages[-1], self._unacked))
            self._pending += len(messages)
            self._unacked = 0
            return 0
        if self._pending:
            return 0  # the handler is behind: the rest waits for it (see H2GrpcServer._consumed)
        # a message larger than the window must still arrive whole: acknowledge its parts at once (it is at
        # most MAX_MESSAGE, and only while the handler has taken everything before it)
        ack, self._unacked = self._unacked, 0
        return ack

    def _end(self, reset: bool) -> None:
        if reset:
            self.closed.set()
        self._inbox.put(None)


Handler = Callable[[Call], None]


class H2GrpcServer:
    """Serves gRPC calls arriving on `pipe`; `lookup(path)` gives a call's handler, None for UNIMPLEMENTED."""

    def __init__(self, pipe: Pipe, lookup: Callable[[str], Handler | None] | Mapping[str, Handler]) -> None:
        self.pipe = pipe
        self.lookup: Callable[[str], Handler | None] = lookup.get if isinstance(lookup, Mapping) else lookup
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.cond = threading.Condition()  # guards self.conn and the calls; notified when windows open
        self.calls: dict[int, Call] = {}
        self.ended = False
        self._out: queue.Queue[bytes | None] = queue.Queue()
        self._queued = 0  # bytes in _out (under cond)
        self.running = 0  # handler threads running (under cond)
        self.buffered = 0  # request bytes the calls hold, the sum of their _held (under cond)
        self._writer = threading.Thread(target=self._write_loop, name="h2-grpc-writer", daemon=True)

    # -- the connection ------------------------------------------------------------------------------------

    def serve(self) -> None:
        """Runs the connection until the peer hangs up (blocks: call it in a thread)."""
        self._writer.start()
        with self.cond:
            self.conn.initiate_connection()
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW})
            self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
            self._flush()
        try:
            while True:
                try:
                    data = self.pipe.recv(READ_SIZE)
                except OSError:
                    break
                if not data:
                    break
                starts: list[tuple[Call, Handler | None]] = []
                with self.cond:
                    try:
                        events = self.conn.receive_data(data)
                    except h2.exceptions.ProtocolError:
                        self._flush()
                        break
                    for event in events:
                        self._on_event(event, starts)
                    self._flush()
                for call, handler in starts:
                    threading.Thread(target=self._run, args=(call, handler), name=f"grpc {call.path}",
                                     daemon=True).start()
        finally:
            self.close()

    def close(self) -> None:
        """Ends the connection: every open call sees CallClosed, the pipe is closed."""
        with self.cond:
            if self.ended:
                return
            self.ended = True
            for call in self.calls.values():
                call._end(reset=True)
            self.cond.notify_all()
        self._out.put(None)
        if self._writer.is_alive() and threading.current_thread() is not self._writer:
            self._writer.join(timeout=5)
        try:
            self.pipe.close()
        except OSError:
            pass

    def _write_loop(self) -> None:
        while (data := self._out.get()) is not None:
            parts = [data]
            while not self._out.empty():  # coalesce what piled up: one syscall for many small frames
                more = self._out.get_nowait()
                if more is None:
                    self._out.put(None)
                    break
                parts.append(more)
            size = sum(len(p) for p in parts)
            try:
                self.pipe.sendall(b"".join(parts) if len(parts) > 1 else data)
            except OSError:
                self.close()  # no byte can go out any more: end the calls rather than let senders wait
                return
            with self.cond:
                self._queued -= size
                self.cond.notify_all()

    def _flush(self) -> None:
        """Queues what h2 has to send. Never waits (the reader thread calls it): the bound is kept by
        `_send_data`, the only producer of bulk data."""
        data = self.conn.data_to_send()
        if data:
            self._queued += len(data)
            self._out.put(data)

    def _on_event(self, event: h2.events.Event, starts: list[tuple[Call, Handler | None]]) -> None:
        call: Call | None
        if isinstance(event, h2.events.RequestReceived):
            headers = [(bytes(k).decode("latin-1"), bytes(v).decode("utf-8", "surrogateescape"))
                       for k, v in event.headers or []]
            path = next((v for k, v in headers if k == ":path"), "")
            metadata: dict[str, list[str]] = {}
            for k, v in headers:
                if not k.startswith(":"):
                    metadata.setdefault(k, []).append(v)
            if self.running >= MAX_HANDLERS:
                # RFC 9113 8.7: REFUSED_STREAM says nothing was processed; the peer may retry it later
                try:
                    self.conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                except h2.exceptions.StreamClosedError:
                    pass  # already reset by the peer
                return
            new = Call(self, event.stream_id, path, metadata)
            self.calls[event.stream_id] = new
            self.running += 1
            starts.append((new, self.lookup(path)))
            if event.stream_ended is not None:
                new._end(reset=False)
        elif isinstance(event, h2.events.DataReceived):
            call = self.calls.get(event.stream_id)
            size = event.flow_controlled_length or 0
            if call is None:
                self.conn.acknowledge_received_data(size, event.stream_id)
                return
            data = bytes(event.data or b"")
            call._held += len(data)
            self.buffered += len(data)
            try:
                ack = call._feed(data, size)
            except GrpcError as e:
                self._refuse(call, e)
                return
            if ack:
                self.conn.acknowledge_received_data(ack, event.stream_id)
            while self.buffered > SESSION_BUDGET and self.calls:
                # the biggest holder, not this call: a small call (a health check) passes while a hog is stopped
                hog = max(self.calls.values(), key=lambda c: c._held)
                self._refuse(hog, GrpcError(RESOURCE_EXHAUSTED, (
                    f"the session's calls hold {self.buffered >> 20} MiB of request data their handlers have not "
                    f"taken, over the {SESSION_BUDGET >> 20} MiB budget: this call, the one holding the most "
                    f"({hog._held >> 20} MiB), is refused")))
        elif isinstance(event, h2.events.StreamEnded):
            if (call := self.calls.get(event.stream_id)) is not None:
                call._end(reset=False)
        elif isinstance(event, h2.events.StreamReset):
            if (call := self.calls.pop(event.stream_id, None)) is not None:
                self._release(call)
                call._end(reset=True)
            self.cond.notify_all()
        elif isinstance(event, h2.events.ConnectionTerminated):
            for open_call in self.calls.values():
                open_call._end(reset=True)
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.cond.notify_all()

    # -- calls ---------------------------------------------------------------------------------------------

    def _refuse(self, call: Call, error: GrpcError) -> None:
        """Ends a call whose request broke a limit, at once, while the peer may still be sending: the status
        in trailers, then RST_STREAM (as grpc-go does); its handler sees CallClosed (under the lock)."""
        if not call.finished:
            self._finish_locked(call, error.code, error.message)
        try:
            self.conn.reset_stream(call.stream_id, h2.errors.ErrorCodes.NO_ERROR)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        self.calls.pop(call.stream_id, None)
        self._release(call)
        call._end(reset=True)

    def _release(self, call: Call) -> None:
        """Drops the request bytes the call's handler has not taken, and gives their window back to the
        connection (the call's stream is closed or done: h2 reopens only the connection's window; under the lock)."""
        refund, call._unacked = call._unacked, 0
        while True:
            try:
                item = call._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                refund += item[1]
        call._buffer = bytearray()
        call._pending = 0
        self.buffered -= call._held
        call._held = 0
        if refund and not self.ended:
            self.conn.acknowledge_received_data(refund, call.stream_id)

    def _run(self, call: Call, handler: Handler | None) -> None:
        code, message = OK, ""
        try:
            if handler is None:
                raise GrpcError(UNIMPLEMENTED, f"unknown method {call.path}")
            handler(call)
        except GrpcError as e:
            code, message = e.code, e.message
        except CallClosed:
            code = CANCELLED
        except Exception as e:  # a bug in a handler must still end its call
            code, message = UNKNOWN, f"{type(e).__name__}: {e}"
        finally:
            with self.cond:
                self.running -= 1
        self._finish(call, code, message)

    def _consumed(self, call: Call, size: int, held: int) -> None:
        """The handler took a message (`held` bytes with its header): reopen the window by its bytes, and by
        those of a partial message held back while the handler was behind."""
        with self.cond:
            held = min(held, call._held)  # (nothing once the call was released)
            call._held -= held
            self.buffered -= held
            call._pending = max(0, call._pending - 1)
            if not call._pending:
                size, call._unacked = size + call._unacked, 0
            if size and not self.ended:  # (h2 reopens only the connection's window for a closed stream)
                self.conn.acknowledge_received_data(size, call.stream_id)
                self._flush()

    def _open(self, call: Call) -> None:
        """Raises CallClosed if the call can no longer send (under the lock)."""
        if self.ended or call.closed.is_set() or call.finished:
            raise CallClosed(call.path)

    def _send_headers(self, call: Call) -> None:
        if not call.headers_sent:
            call.headers_sent = True
            self.conn.send_headers(call.stream_id, [(b":status", b"200"), (b"content-type", b"application/grpc")])

    def _send_data(self, call: Call, data: bytes) -> None:
        view = memoryview(data)
        while view:
            with self.cond:
                while True:
                    self._open(call)
                    try:
                        self._send_headers(call)
                        window = min(self.conn.local_flow_control_window(call.stream_id),
                                     self.conn.max_outbound_frame_size)
                    except h2.exceptions.StreamClosedError:
                        raise CallClosed(call.path) from None
                    if window > 0 and self._queued < OUT_LIMIT:
                        break
                    self.cond.wait()
                # one frame per turn of the lock, so other calls' frames interleave with a big send
                chunk, view = view[:window], view[window:]
                self.conn.send_data(call.stream_id, chunk.tobytes())
                self._flush()

    def _finish(self, call: Call, code: int, message: str) -> None:
        with self.cond:
            if not call.finished:
                self._finish_locked(call, code, message)

    def _finish_locked(self, call: Call, code: int, message: str) -> None:
        call.finished = True
        self.calls.pop(call.stream_id, None)
        self._release(call)  # what its handler left unread
        if self.ended or call.closed.is_set():
            return
        trailers = [(b"grpc-status", str(code).encode())]
        if message:
            trailers.append((b"grpc-message", percent_encode(message)))
        try:
            if not call.headers_sent:  # trailers-only response
                call.headers_sent = True
                trailers = [(b":status", b"200"), (b"content-type", b"application/grpc"), *trailers]
            self.conn.send_headers(call.stream_id, trailers, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._flush()


def unary(fn: Callable[[bytes, Call], bytes]) -> Handler:
    """A handler for a unary method from fn(request bytes, call) -> response bytes."""

    def handle(call: Call) -> None:
        request = call.recv()
        if request is None:
            raise GrpcError(INTERNAL, "no request message")
        call.send(fn(request, call))

    return handle
