"""Byte pipes a session server runs on: the `Control.Session` bidi stream of BytesMessage (grpcio), or a
hijacked `POST /session` socket of a Docker daemon.

Both meet `h2server.Pipe` (recv/sendall/close). Over either, the daemon is the HTTP/2 client.
"""

from __future__ import annotations

import collections
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

SESSION_METHOD = "/moby.buildkit.v1.Control/Session"
MAX_CHUNK = 1 << 20  # one BytesMessage at most; moby's /grpc takes 4 MiB messages
OUT_LIMIT = 8 << 20  # bytes waiting for grpcio to take before sendall waits (h2server.OUT_LIMIT's match)
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")  # printable ASCII: no CR/LF to split a header, as grpc requires


class SessionHeaderError(ValueError):
    """A session header that HTTP/1.1 or gRPC metadata cannot carry as is; the message names it."""


def safe_session_name(name: str) -> str:
    """The session's name as a header can carry it (the context folder's name may hold anything): runs of
    characters other than [A-Za-z0-9._-] become '-', and a name left empty becomes "build"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:100] or "build"


def check_headers(metadata: Sequence[tuple[str, str]]) -> None:
    """Raises SessionHeaderError unless every name is a token and every value printable ASCII."""
    for key, value in metadata:
        if not _HEADER_NAME.fullmatch(key):
            raise SessionHeaderError(f"session header name {key!r} is not an HTTP token")
        if not _HEADER_VALUE.fullmatch(value):
            raise SessionHeaderError(f"session header {key}: value {value!r} holds a line break, a control or a "
                                     f"non-ASCII character")


class BytesMessagePipe:
    """`Control.Session` as a byte pipe: what we send goes out as BytesMessage through a queue-fed request
    iterator; what the daemon sends is read by grpcio and handed out by recv()."""

    def __init__(self, channel: Any, metadata: Sequence[tuple[str, str]]) -> None:
        from workbench.remote.proto.control_pb2 import BytesMessage

        check_headers(metadata)  # grpcio would drop the stream without a word
        self._message = BytesMessage
        self._out: collections.deque[bytes] = collections.deque()
        self._queued = 0  # bytes in _out
        self._cond = threading.Condition()
        self._buffer = b""
        self._closed = threading.Event()
        stub = channel.stream_stream(SESSION_METHOD, request_serializer=BytesMessage.SerializeToString,
                                     response_deserializer=BytesMessage.FromString)
        self._call = stub(self._requests(), metadata=list(metadata))
        self._responses: Iterator[Any] = iter(self._call)

    def _requests(self) -> Iterator[Any]:
        while True:
            with self._cond:
                while not self._out and not self._closed.is_set():
                    self._cond.wait()
                if not self._out:
                    return  # closed: half-close our side
                data = self._out.popleft()
                self._queued -= len(data)
                self._cond.notify_all()
            yield self._message(data=data)

    def recv(self, n: int) -> bytes:
        """Up to n bytes the daemon sent; b"" once the stream ended (or failed: the session is over either way)."""
        if not self._buffer:
            import grpc

            try:
                self._buffer = next(self._responses).data
                while not self._buffer:  # an empty message carries nothing; it does not end the stream
                    self._buffer = next(self._responses).data
            except (StopIteration, grpc.RpcError):
                return b""
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def sendall(self, data: bytes) -> None:
        """Queues data for the stream; waits while OUT_LIMIT bytes are queued (the daemon reads slowly)."""
        for i in range(0, len(data), MAX_CHUNK):
            chunk = bytes(data[i:i + MAX_CHUNK])
            with self._cond:
                while self._queued >= OUT_LIMIT and not self._closed.is_set():
                    self._cond.wait()
                if self._closed.is_set():
                    raise BrokenPipeError("the session stream is closed")
                self._out.append(chunk)
                self._queued += len(chunk)
                self._cond.notify_all()

    def close(self) -> None:
        """Half-closes our side (the daemon then drops the session), and stops reading."""
        with self._cond:
            if self._closed.is_set():
                return
            self._closed.set()
            self._cond.notify_all()
        self._call.cancel()


class SocketPipe:
    """A connected socket as a pipe (the hijacked `POST /session` of a Docker daemon)."""

    def __init__(self, sock: socket.socket, leftover: bytes = b"") -> None:
        self.sock = sock
        self._leftover = leftover

    def recv(self, n: int) -> bytes:
        if self._leftover:
            data, self._leftover = self._leftover[:n], self._leftover[n:]
            return data
        return self.sock.recv(n)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def dial_docker_session(docker_socket: str, metadata: Sequence[tuple[str, str]],
                        timeout: float = 10.0) -> SocketPipe:
    """`POST /session` upgraded to h2c, the session headers as HTTP headers (as the docker CLI sends them)."""
    from workbench.remote.channel import RelayError

    try:
        check_headers(metadata)  # a CR/LF in a value would add headers of its own to the request
    except SessionHeaderError as e:
        raise RelayError(str(e)) from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(docker_socket)
        except OSError as e:
            raise RelayError(f"{docker_socket}: {e.strerror or e}") from None
        headers = "".join(f"{_http_name(k)}: {v}\r\n" for k, v in metadata)
        sock.sendall((f"POST /session HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                      f"Content-Length: 0\r\n{headers}\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise RelayError(f"{docker_socket} closed the connection before answering POST /session")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if status.split(" ")[1:2] != ["101"]:
            raise RelayError(f"{docker_socket} answered {status!r} to POST /session, not 101")
        sock.settimeout(None)
        return SocketPipe(sock, rest)
    except BaseException:
        sock.close()
        raise


def _http_name(key: str) -> str:
    """x-docker-expose-session-uuid → X-Docker-Expose-Session-Uuid (Go canonicalises them anyway)."""
    return "-".join(part.capitalize() for part in key.split("-"))
