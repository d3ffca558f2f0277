"""moby.sshforward.v1.SSH: the build's `--ssh ID[=SOCKET]` agents, forwarded to `RUN --mount=type=ssh`.

CheckAgent answers whether an id is configured; ForwardAgent (id in the metadata `buildkit.ssh.id`, `default`
when absent) carries one agent connection as BytesMessage chunks. As BuildKit's own provider, the agent is
read-only to the build: listing keys, signing and unlocking reach it; adding or removing keys, locking and
extensions are answered SSH_AGENT_FAILURE here and never reach it.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Mapping
from pathlib import Path

from workbench.remote.session.h2server import NOT_FOUND, UNAVAILABLE, Call, GrpcError, Handler, unary
from workbench.remote.session.proto.ssh_pb2 import BytesMessage, CheckAgentRequest, CheckAgentResponse

SSH_ID = "buildkit.ssh.id"
DEFAULT_ID = "default"
MAX_MESSAGE = 256 * 1024  # OpenSSH's agent refuses longer messages too

# ssh-agent protocol (draft-miller-ssh-agent): message types a read-only agent passes on
REQUEST_IDENTITIES = 11
SIGN_REQUEST = 13
UNLOCK = 23
FAILURE = 5
READ_ONLY = frozenset({REQUEST_IDENTITIES, SIGN_REQUEST, UNLOCK})


class AgentConnection:
    """One forwarded connection: requests from the build are checked and passed to the agent one by one, its
    answers passed back (the protocol is strictly request, then answer)."""

    def __init__(self, call: Call, agent: socket.socket) -> None:
        self.call = call
        self.agent = agent

    def run(self) -> None:
        buffer = bytearray()
        for raw in self.call.messages():
            buffer += BytesMessage.FromString(raw).data
            while len(buffer) >= 4:
                (length,) = struct.unpack_from(">I", buffer)
                if length == 0 or length > MAX_MESSAGE:
                    raise GrpcError(UNAVAILABLE, f"ssh agent message of {length} bytes refused")
                if len(buffer) < 4 + length:
                    break
                request = bytes(buffer[:4 + length])
                del buffer[:4 + length]
                self.call.send(BytesMessage(data=self._answer(request)).SerializeToString())

    def _answer(self, request: bytes) -> bytes:
        if request[4] not in READ_ONLY:
            return struct.pack(">IB", 1, FAILURE)
        self.agent.sendall(request)
        head = self._read(4)
        (length,) = struct.unpack(">I", head)
        if length > MAX_MESSAGE:
            raise GrpcError(UNAVAILABLE, f"ssh agent answered {length} bytes")
        return head + self._read(length)

    def _read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.agent.recv(n - len(out))
            if not chunk:
                raise GrpcError(UNAVAILABLE, "the ssh agent closed the connection")
            out += chunk
        return bytes(out)


def ssh_handlers(agents: Mapping[str, str | Path]) -> dict[str, Handler]:
    """CheckAgent and ForwardAgent for `agents` (ssh id -> agent socket path); NOT_FOUND for another id."""

    def socket_of(sid: str) -> str | Path:
        path = agents.get(sid or DEFAULT_ID)
        if path is None:
            raise GrpcError(NOT_FOUND, f"unset ssh forward key {sid or DEFAULT_ID}")
        return path

    def check(request: bytes, call: Call) -> bytes:
        socket_of(CheckAgentRequest.FromString(request).ID)
        return CheckAgentResponse().SerializeToString()

    def forward(call: Call) -> None:
        path = socket_of(call.first(SSH_ID))
        agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            try:
                agent.connect(os.fspath(path))
            except OSError as e:
                raise GrpcError(UNAVAILABLE, f"failed to connect to {path}: {e.strerror or e}") from None
            AgentConnection(call, agent).run()
        finally:
            agent.close()

    return {"/moby.sshforward.v1.SSH/CheckAgent": unary(check), "/moby.sshforward.v1.SSH/ForwardAgent": forward}
