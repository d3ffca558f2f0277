"""Byte pipes a session server runs on: the `Control.Session` bidi stream of BytesMessage (grpcio), or a
hijacked `POST /session` socket of a Docker daemon.

Both meet `h2server.Pipe` (recv/sendall/close). Over either, the daemon is the HTTP/2 client.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

SESSION_METHOD = "/moby.buildkit.v1.Control/Session"
MAX_CHUNK = 1 << 20  # one BytesMessage at most; moby's /grpc takes 4 MiB messages


class BytesMessagePipe:
    """`Control.Session` as a byte pipe: what we send goes out as BytesMessage through a queue-fed request
    iterator; what the daemon sends is read by grpcio and handed out by recv()."""

    def __init__(self, channel: Any, metadata: Sequence[tuple[str, str]]) -> None:
        from workbench.remote.proto.control_pb2 import BytesMessage

        self._message = BytesMessage
        self._out: queue.Queue[bytes | None] = queue.Queue()
        self._buffer = b""
        self._closed = threading.Event()
        stub = channel.stream_stream(SESSION_METHOD, request_serializer=BytesMessage.SerializeToString,
                                     response_deserializer=BytesMessage.FromString)
        self._call = stub(self._requests(), metadata=list(metadata))
        self._responses: Iterator[Any] = iter(self._call)

    def _requests(self) -> Iterator[Any]:
        while (data := self._out.get()) is not None:
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
        if self._closed.is_set():
            raise BrokenPipeError("the session stream is closed")
        for i in range(0, len(data), MAX_CHUNK):
            self._out.put(bytes(data[i:i + MAX_CHUNK]))

    def close(self) -> None:
        """Half-closes our side (the daemon then drops the session), and stops reading."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._out.put(None)
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
