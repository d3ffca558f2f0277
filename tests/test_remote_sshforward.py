"""SSH.CheckAgent / SSH.ForwardAgent (workbench.remote.session.sshforward) against a real ssh-agent, with a real
grpcio client playing the daemon: it serves a unix socket and carries each connection over ForwardAgent, as
BuildKit does for `RUN --mount=type=ssh`."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.test_remote_session import Served
from workbench.remote.session.h2server import Handler
from workbench.remote.session.proto.ssh_pb2 import BytesMessage, CheckAgentRequest, CheckAgentResponse
from workbench.remote.session.services import SessionServices, exposed_methods

pytestmark = pytest.mark.skipif(not shutil.which("ssh-agent"), reason="needs openssh-client (scripts/install.sh)")

CHECK = "/moby.sshforward.v1.SSH/CheckAgent"
FORWARD = "/moby.sshforward.v1.SSH/ForwardAgent"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """serve(handlers) -> a grpcio channel to our HTTP/2 server running them (over a unix socket)."""
    made: list[Served] = []

    def start(handlers: dict[str, Handler]) -> grpc.Channel:
        made.append(Served(tmp_path / f"s{len(made)}.sock", handlers))
        return made[-1].channel

    yield start
    for s in made:
        s.close()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A running ssh-agent holding one new ed25519 key: (its socket, the key's fingerprint line)."""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "workbench-test", "-f", str(key)],
                       check=True)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        for _ in range(100):  # the agent listens once it has started
            if sock.exists():
                break
            threading.Event().wait(0.05)
        subprocess.run(["ssh-add", "-q", str(key)], env=env, check=True, capture_output=True)
        listed = subprocess.run(["ssh-add", "-l"], env=env, check=True, capture_output=True, text=True).stdout
        yield sock, listed.strip()
    finally:
        proc.terminate()
        proc.wait(10)


def forwarded_socket(channel: grpc.Channel, path: Path, ssh_id: str | None) -> threading.Thread:
    """Serves `path`: its first connection is carried over one ForwardAgent call (BuildKit's daemon side)."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()

    def run() -> None:
        conn, _ = listener.accept()
        listener.close()
        out: queue.Queue[bytes | None] = queue.Queue()

        def pump() -> None:
            while data := conn.recv(32 * 1024):
                out.put(data)
            out.put(None)

        def gen() -> Iterator[BytesMessage]:
            while (d := out.get()) is not None:
                yield BytesMessage(data=d)

        threading.Thread(target=pump, daemon=True).start()
        metadata = (("buildkit.ssh.id", ssh_id),) if ssh_id is not None else ()
        call = channel.stream_stream(FORWARD, request_serializer=BytesMessage.SerializeToString,
                                     response_deserializer=BytesMessage.FromString)(gen(), metadata=metadata,
                                                                                    timeout=30)
        try:
            for m in call:
                conn.sendall(m.data)
        except grpc.RpcError:
            pass
        conn.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def ssh_add(sock: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh-add", *args], env={**os.environ, "SSH_AUTH_SOCK": str(sock)}, capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize("ssh_id", ["default", None])
def test_forwarded_agent_lists_its_keys(serve, agent, tmp_path: Path, ssh_id: str | None) -> None:
    sock, listed = agent
    channel = serve(SessionServices(ssh={"default": sock}).handlers())
    t = forwarded_socket(channel, tmp_path / "fwd.sock", ssh_id)
    run = ssh_add(tmp_path / "fwd.sock", "-l")
    t.join(10)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == listed and "workbench-test (ED25519)" in listed


def test_forwarded_agent_is_read_only(serve, agent, tmp_path: Path) -> None:
    """Removing keys through the build's socket is refused before it reaches the agent (as BuildKit's
    readOnlyAgent), and the key is still there."""
    sock, listed = agent
    channel = serve(SessionServices(ssh={"default": sock}).handlers())
    t = forwarded_socket(channel, tmp_path / "fwd.sock", "default")
    run = ssh_add(tmp_path / "fwd.sock", "-D")
    t.join(10)
    assert run.returncode != 0
    assert ssh_add(sock, "-l").stdout.strip() == listed


def test_check_agent(serve, agent) -> None:
    sock, _ = agent
    channel = serve(SessionServices(ssh={"default": sock, "work": sock}).handlers())
    check = channel.unary_unary(CHECK, request_serializer=CheckAgentRequest.SerializeToString,
                                response_deserializer=CheckAgentResponse.FromString)
    for sid in ("default", "", "work"):
        check(CheckAgentRequest(ID=sid), timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        check(CheckAgentRequest(ID="other"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "other" in (e.value.details() or "")


def test_forward_unknown_id_is_not_found(serve, agent) -> None:
    sock, _ = agent
    channel = serve(SessionServices(ssh={"default": sock}).handlers())
    call = channel.stream_stream(FORWARD, request_serializer=BytesMessage.SerializeToString,
                                 response_deserializer=BytesMessage.FromString)(
        iter([BytesMessage(data=b"\0\0\0\1\x0b")]), metadata=(("buildkit.ssh.id", "nope"),), timeout=10)
    with pytest.raises(grpc.RpcError):
        list(call)
    assert call.code() == grpc.StatusCode.NOT_FOUND


def test_ssh_is_announced_only_when_given(tmp_path: Path) -> None:
    assert FORWARD not in exposed_methods(SessionServices().handlers())
    methods = exposed_methods(SessionServices(ssh={"default": tmp_path / "s"}).handlers())
    assert CHECK in methods and FORWARD in methods
