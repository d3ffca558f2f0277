"""A grpcio channel to an `Address`; for docker:// through an in-process relay to the daemon's `/grpc` endpoint.

grpcio cannot take a connected socket, and Docker serves BuildKit's gRPC only after an HTTP/1.1 upgrade
(`POST /grpc`, `Upgrade: h2c`, answered `101 Switching Protocols`). So the relay listens on a private unix
socket, and joins each connection grpcio opens to a fresh, upgraded connection to the docker socket; from
then on it only copies bytes. The relay dies with the channel.

The relay's socket is an abstract one (Linux): no file, so a killed process leaves nothing behind, with no
reaper needed and nothing for another user to race on. Abstract sockets have no permissions, so the relay
serves only connections from our own uid (SO_PEERCRED).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import struct
import sys
import threading
from typing import TYPE_CHECKING, Any

from workbench.remote.address import Address, plaintext_risk

if TYPE_CHECKING:
    import grpc

MAX_MESSAGE = 16 << 20  # buildctl's send/receive limits
DOCKER_MAX_MESSAGE = 4 << 20  # moby's /grpc is a plain grpc.NewServer(): 4 MiB received at most
UPGRADE_REQUEST = (b"POST /grpc HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                   b"Content-Length: 0\r\n\r\n")


class RelayError(OSError):
    """The docker socket could not be reached or would not upgrade; the message says which."""


def dial_docker_grpc(docker_socket: str, timeout: float = 10.0) -> tuple[socket.socket, bytes, str]:
    """A connection to Docker's `/grpc`, upgraded to h2c: the socket, the bytes read past the 101 headers
    (they are HTTP/2's), and the status line."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(docker_socket)
        except OSError as e:
            raise RelayError(f"{docker_socket}: {e.strerror or e}") from None
        sock.sendall(UPGRADE_REQUEST)
        head, rest = _read_head(sock, docker_socket)
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if status.split(" ")[1:2] != ["101"]:
            raise RelayError(f"{docker_socket} answered {status!r} to POST /grpc, not 101 (not a Docker "
                                f"daemon with BuildKit's API, or older than 18.09)")
        sock.settimeout(None)
        return sock, rest, status
    except BaseException:
        sock.close()
        raise


def _read_head(sock: socket.socket, where: str) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise RelayError(f"{where} closed the connection before answering POST /grpc")
        buf += chunk
        if len(buf) > 64 << 10:
            raise RelayError(f"{where}: headers too long in the answer to POST /grpc")
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


class DockerConnection(http.client.HTTPConnection):
    """HTTP to the Docker Engine API on its unix socket."""

    def __init__(self, docker_socket: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self.docker_socket = docker_socket

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.docker_socket)


def docker_version(docker_socket: str, timeout: float = 10.0) -> dict[str, Any]:
    """`GET /version` of the Docker daemon (its engine version, API version, OS and arch)."""
    conn = DockerConnection(docker_socket, timeout)
    try:
        conn.request("GET", "/version")
        body = conn.getresponse().read()
    except http.client.HTTPException as e:
        raise OSError(f"{docker_socket}: {e}") from None
    finally:
        conn.close()
    answer = json.loads(body)
    return answer if isinstance(answer, dict) else {}


class DockerRelay:
    """A private unix socket whose each connection is spliced onto an upgraded connection to Docker's `/grpc`."""

    def __init__(self, docker_socket: str) -> None:
        self.docker_socket = docker_socket
        self.error: str | None = None  # why the last connection to Docker failed, for the caller's message
        self.name = f"workbench-docker-relay-{os.getpid()}-{secrets.token_hex(8)}"  # abstract: no file
        self.target = f"unix-abstract:{self.name}"  # as grpcio names it
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind("\0" + self.name)
        self._listener.listen(8)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, name="docker-relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not _same_user(conn):
                conn.close()
                continue
            threading.Thread(target=self._join, args=(conn,), name="docker-relay-conn", daemon=True).start()

    def _join(self, conn: socket.socket) -> None:
        try:
            upstream, rest, _ = dial_docker_grpc(self.docker_socket)
        except (OSError, ValueError) as e:
            self.error = str(e) if isinstance(e, RelayError) else f"{self.docker_socket}: {e}"
            conn.close()
            return
        with self._lock:
            if self._closed:
                conn.close()
                upstream.close()
                return
            self._open.update((conn, upstream))
        if rest:
            conn.sendall(rest)
        back = threading.Thread(target=_copy, args=(upstream, conn), name="docker-relay-down", daemon=True)
        back.start()
        _copy(conn, upstream)
        back.join()
        with self._lock:
            self._open.difference_update((conn, upstream))
        conn.close()
        upstream.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._open)
        for s in [self._listener, *sockets]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._listener.close()


def _same_user(conn: socket.socket) -> bool:
    """Whether the peer runs as our uid (anyone on the machine may connect to an abstract socket)."""
    try:
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                               struct.calcsize("3i")))
    except OSError:
        return False
    return uid == os.getuid()


def _copy(src: socket.socket, dst: socket.socket) -> None:
    """Bytes from src to dst until src ends; then dst's writing half is closed too."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


_warned: set[str] = set()


def _warn_once(line: str | None) -> None:
    """One line on stderr per process and text (a TUI opens channels again and again)."""
    if line and line not in _warned:
        _warned.add(line)
        print(f"WARNING: {line}", file=sys.stderr)


class RemoteChannel:
    """A grpcio channel to `address`, with the relay it needs (docker://); close() ends both."""

    def __init__(self, address: Address) -> None:
        # grpc's C core logs connection failures to stderr; ControlError says them in one line instead
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        import grpc

        self.address = address
        self.relay: DockerRelay | None = None
        limit = DOCKER_MAX_MESSAGE if address.scheme == "docker" else MAX_MESSAGE
        options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", MAX_MESSAGE),
                                          ("grpc.max_send_message_length", limit)]
        if address.scheme == "unix":
            self.grpc: grpc.Channel = grpc.insecure_channel(f"unix:{address.path}", options=options)
        elif address.scheme == "docker":
            self.relay = DockerRelay(address.path)
            # the authority Docker's h2 server sees; the default would be the relay's socket path
            options.append(("grpc.default_authority", "docker"))
            self.grpc = grpc.insecure_channel(self.relay.target, options=options)
        elif address.tls is None:
            _warn_once(plaintext_risk(address))
            self.grpc = grpc.insecure_channel(f"{address.host}:{address.port}", options=options)
        else:
            tls = address.tls
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            creds = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key,
                                                 certificate_chain=tls.cert)
            self.grpc = grpc.secure_channel(f"{address.host}:{address.port}", creds, options=options)

    def close(self) -> None:
        self.grpc.close()
        if self.relay is not None:
            self.relay.close()

    def __enter__(self) -> RemoteChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
