"""`workbench dap --listen`: who is served. Only an established peer of this uid held by a process of this
mount namespace over TCP (a closed socket lingering in FIN_WAIT2, a build's RUN step and another user are
refused); `unix:PATH` in a private folder; SIGHUP ends it like SIGTERM; a client that reads nothing never
holds up SIGTERM."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, runc_containers
from workbench.dap import listen
from workbench.dap.listen import ListenError, parse_listen

ENV = dict(os.environ, WORKBENCH_SERVER="0")
INIT = b'{"seq":1,"type":"request","command":"initialize","arguments":{}}'
INIT_FRAME = b"Content-Length: %d\r\n\r\n" % len(INIT) + INIT


def _serve(*args: str, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([*WORKBENCH, "dap", *args], stderr=subprocess.PIPE, text=True, cwd=cwd, env=ENV)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("workbench dap: listening on "), line
    return proc, line.split()[-1]


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    return err


def _answered(address: str) -> bool:
    """Whether an initialize sent to `address` (unix:PATH or HOST:PORT) gets its response."""
    if address.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX)
        s.connect(address[5:])
    else:
        host, port = address.rsplit(":", 1)
        s = socket.create_connection((host.strip("[]"), int(port)))
    with s:
        s.settimeout(60)
        s.sendall(INIT_FRAME)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
                if b'"command":"initialize"' in data:
                    return True
        except ConnectionResetError:
            pass
    return False


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_peer_that_closed_before_the_check_is_refused(host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as server:
        server.bind((host, 0))
        server.listen(1)
        client = socket.create_connection(server.getsockname()[:2])
        client.sendall(INIT_FRAME)
        client.close()  # its end lingers in FIN_WAIT2, with uid 0 and inode 0
        conn, _ = server.accept()
        with conn:
            why = listen.refusal(conn)
    assert why is not None and "not an established connection" in why, why


def test_a_live_peer_of_this_process_is_served() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client = socket.create_connection(server.getsockname()[:2])
        conn, _ = server.accept()
        with conn, client:
            assert listen.refusal(conn) is None


@pytest.mark.real
def test_a_build_step_that_connects_to_the_listener_is_refused(tmp_path: Path, registry: str, root: Path) -> None:
    proc, bound = _serve("--listen", "127.0.0.1:0", cwd=tmp_path)
    try:
        port = bound.rsplit(":", 1)[1]
        (tmp_path / "req").write_bytes(INIT_FRAME)
        (tmp_path / "Dockerfile").write_text(
            "FROM localhost:5055/busybox\nCOPY req /req\n"
            f"RUN (cat /req; sleep 2) | nc 127.0.0.1 {port} > /resp; echo got $(wc -c < /resp) bytes\n")
        build = subprocess.run([*WORKBENCH, "build", "--root", str(root), "--no-cache", "--progress", "plain",
                                str(tmp_path)], capture_output=True, text=True, timeout=300, env=ENV)
        assert build.returncode == 0, build.stderr
        assert "got 0 bytes" in build.stdout + build.stderr, build.stdout + build.stderr
        assert _answered(bound)  # this user on the host still is
    finally:
        err = _stop(proc)
    assert "refused a connection" in err and "mount namespace" in err, err


def test_another_uid_is_refused_over_tcp_and_cannot_reach_a_unix_socket(tmp_path: Path) -> None:
    if os.geteuid() != 0 or subprocess.run(["id", "wbtest"], capture_output=True).returncode != 0:
        pytest.skip("needs root and the user wbtest")
    client = f"import socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); " \
        f"s.sendall({INIT_FRAME!r}); print(b'initialize' in s.recv(65536))"
    proc, bound = _serve("--listen", "127.0.0.1:0", cwd=tmp_path)
    try:
        theirs = subprocess.run(["setpriv", "--reuid", "wbtest", "--regid", "wbtest", "--clear-groups",
                                 "/usr/bin/python3", "-c", client, bound.rsplit(":", 1)[1]],
                                capture_output=True, text=True, timeout=60, cwd="/")
        assert "True" not in theirs.stdout
    finally:
        err = _stop(proc)
    assert "refused a connection" in err and f"uid {pwd.getpwnam('wbtest').pw_uid}" in err, err
    folder = tmp_path / "run"
    folder.mkdir(mode=0o711)
    folder.chmod(0o711)
    proc, bound = _serve("--listen", f"unix:{folder}/dap.sock", cwd=tmp_path)
    try:
        theirs = subprocess.run(["setpriv", "--reuid", "wbtest", "--regid", "wbtest", "--clear-groups",
                                 "/usr/bin/python3", "-c",
                                 f"import socket; socket.socket(socket.AF_UNIX).connect({str(folder / 'dap.sock')!r})"],
                                capture_output=True, text=True, timeout=60, cwd="/")
        assert theirs.returncode != 0 and "PermissionError" in theirs.stderr, theirs.stderr
        assert _answered(bound)
    finally:
        _stop(proc)


def test_listen_on_a_unix_socket_serves_this_user_and_removes_it_on_exit(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    path = folder / "dap.sock"
    proc, bound = _serve("--listen", f"unix:{path}", cwd=tmp_path)
    try:
        assert bound == f"unix:{path}"
        assert path.is_socket() and (path.stat().st_mode & 0o777) == 0o600
        assert _answered(bound)
        assert _answered(bound)
    finally:
        _stop(proc)
    assert proc.returncode == 128 + signal.SIGTERM
    assert not path.exists()


def test_listen_on_a_unix_socket_refuses_an_unsafe_folder_or_a_file(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(ListenError, match="no group or other user can write"):
        parse_listen(f"unix:{open_dir}/dap.sock")
    (tmp_path / "file").write_text("keep")
    with pytest.raises(ListenError, match="not a socket; not replaced"):
        parse_listen(f"unix:{tmp_path}/file")
    assert (tmp_path / "file").read_text() == "keep"
    run = subprocess.run([*WORKBENCH, "dap", "--listen", f"unix:{open_dir}/dap.sock"], capture_output=True,
                         text=True, timeout=60, env=ENV)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert parse_listen(f"unix:{tmp_path}/dap.sock") == tmp_path / "dap.sock"


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_hangup_ends_the_listener_like_sigterm(tmp_path: Path, sig: signal.Signals) -> None:
    proc, bound = _serve("--listen", "127.0.0.1:0", cwd=tmp_path)
    assert _answered(bound)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig


@pytest.mark.real
def test_sigterm_is_not_held_up_by_a_client_that_reads_nothing(tmp_path: Path, registry: str, root: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM localhost:5055/busybox\n"
        "RUN i=0; while [ $i -lt 200000 ]; do echo line $i padding-padding-padding; i=$((i+1)); done\n")
    proc, bound = _serve("--listen", "127.0.0.1:0", cwd=tmp_path)
    s = socket.create_connection(("127.0.0.1", int(bound.rsplit(":", 1)[1])))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    requests = [("initialize", {}), ("launch", {"dockerfile": str(tmp_path / "Dockerfile"),
                                               "args": ["--root", str(root), "--no-cache"]}),
                ("configurationDone", {})]
    for seq, (command, args) in enumerate(requests, 1):
        body = json.dumps({"seq": seq, "type": "request", "command": command, "arguments": args}).encode()
        s.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)  # and never read an answer
    try:
        for _ in range(300):
            if runc_containers(root, running_only=True):
                break
            time.sleep(0.2)
        time.sleep(3)  # the step's output fills the socket buffers meanwhile
        proc.terminate()
        proc.communicate(timeout=90)  # before: it waited on the client forever
        assert proc.returncode == 128 + signal.SIGTERM
        assert runc_containers(root) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        s.close()
