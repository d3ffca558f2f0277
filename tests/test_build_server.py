"""The resident build server: a build through it behaves exactly like an in-process build."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH

pytestmark = pytest.mark.real


@pytest.fixture()
def server_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose builds use a private server socket; the server is stopped afterwards."""
    env = dict(os.environ, WORKBENCH_SERVER_SOCKET=str(tmp_path / "srv" / "server.sock"))
    env.pop("WORKBENCH_SERVER", None)
    yield env
    subprocess.run(WORKBENCH + ["server", "stop"], env=env, capture_output=True, timeout=30)


def _wait_for_server(env: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if subprocess.run(WORKBENCH + ["server", "status"], env=env, capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError("the build server did not start")


def _project(tmp_path: Path, registry: str, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("alpha\n")
    (ctx / "Dockerfile").write_text(dockerfile.replace("BASE", "localhost:5055/busybox"))
    return ctx


def _build(ctx: Path, root: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", *extra, str(ctx)],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ctx)


def test_build_through_server_matches_in_process(tmp_path: Path, registry: str, server_env: dict[str, str]) -> None:
    ctx = _project(tmp_path, registry, "FROM BASE\nCOPY a.txt /a.txt\nARG FOO\nRUN cat /a.txt && echo $FOO\n")
    root = tmp_path / "root"
    first = _build(ctx, root, server_env)  # no server yet: in-process, and one is started
    assert first.returncode == 0, first.stderr
    _wait_for_server(server_env)
    (ctx / "a.txt").write_text("beta\n")
    env = dict(server_env, FOO="from-the-client-env")
    out = tmp_path / "out"
    second = _build(ctx, root, env, "--build-arg", "FOO", "--output", f"type=local,dest={out}")
    assert second.returncode == 0, second.stderr
    # the server's child used the client's environment, working directory and stdio
    assert "beta" in second.stderr and "from-the-client-env" in second.stderr
    assert "CACHE MISS: a.txt changed" in second.stderr
    assert (out / "a.txt").read_text() == "beta\n"
    disabled = _build(ctx, root, dict(env, WORKBENCH_SERVER="0"), "--build-arg", "FOO")
    assert disabled.returncode == 0
    strip = [line for line in disabled.stderr.splitlines() if "DONE" not in line and " sec" not in line]
    again = _build(ctx, root, env, "--build-arg", "FOO")
    assert [line for line in again.stderr.splitlines() if "DONE" not in line and " sec" not in line] == strip


def test_failure_exit_status_and_usage_errors_pass_through(tmp_path: Path, registry: str,
                                                           server_env: dict[str, str]) -> None:
    ctx = _project(tmp_path, registry, "FROM BASE\nRUN exit 7\n")
    root = tmp_path / "root"
    _build(ctx, root, server_env)
    _wait_for_server(server_env)
    failed = _build(ctx, root, server_env)
    assert failed.returncode == 1
    assert "exit code: 7" in failed.stderr and "Dockerfile:2" in failed.stderr
    usage = _build(ctx, root, server_env, "--progress", "nonsense")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


LONG_STEP = "sleep 30.0417"
"""The step's command, told apart from any other test's sleep in `ps`."""


def _long_build_started(
    tmp_path: Path, registry: str, server_env: dict[str, str]
) -> tuple[Path, Path, subprocess.Popen[str]]:
    """(context, root, CLI process) of a build through a running server whose step has started (`LONG_STEP`)."""
    ctx = _project(tmp_path, registry, f"FROM BASE\nRUN echo started; {LONG_STEP}\n")
    root = tmp_path / "root"
    _build(ctx, tmp_path / "warmup", server_env, "--target", "nonexistent-to-start-server-only")
    _wait_for_server(server_env)
    proc = subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", str(ctx)],
                            env=server_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "started" in line:
            break
    return ctx, root, proc


def test_killing_the_client_kills_the_build(tmp_path: Path, registry: str, server_env: dict[str, str]) -> None:
    ctx, root, proc = _long_build_started(tmp_path, registry, server_env)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        if LONG_STEP not in ps:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the build's container outlived the killed client")
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nRUN echo after > /after\n")
    follow = _build(ctx, root, server_env)
    assert follow.returncode == 0, follow.stderr


def test_sigint_cancels_like_in_process(tmp_path: Path, registry: str, server_env: dict[str, str]) -> None:
    _, _, proc = _long_build_started(tmp_path, registry, server_env)
    assert proc.stdout is not None
    proc.send_signal(signal.SIGINT)
    rest = proc.stdout.read()
    assert proc.wait(timeout=30) == 130
    assert "canceled" in rest
    assert re.search(r"^#\d+ CANCELED$", rest, re.M), rest  # the step was stopped, not run to its end


def test_stale_server_is_replaced(tmp_path: Path, registry: str, server_env: dict[str, str]) -> None:
    from workbench import wire

    ctx = _project(tmp_path, registry, "FROM BASE\nRUN true\n")
    root = tmp_path / "root"
    _build(ctx, root, server_env)
    _wait_for_server(server_env)
    # a request with another code stamp (as after an upgrade) is refused and the old server leaves
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(server_env["WORKBENCH_SERVER_SOCKET"])
    with sock, open(os.devnull) as null:
        fd = null.fileno()
        wire.send_message(sock, {"argv": ["build"], "cwd": "/", "env": {}, "umask": 0o22, "stamp": "old"},
                          [fd, fd, fd])
        reply, _ = wire.recv_message(sock)
    assert reply == {"stale": True}
    deadline = time.monotonic() + 10
    while subprocess.run(WORKBENCH + ["server", "status"], env=server_env, capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the stale server did not exit"
        time.sleep(0.1)
    assert _build(ctx, root, server_env).returncode == 0  # in-process again, and a fresh server starts
    _wait_for_server(server_env)


def _server_processes(sock: str) -> dict[int, int]:
    """pid → parent pid of the server and its children (their command line names the socket)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if b"workbench.server" in cmdline and sock.encode() in cmdline:
            found[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def _spare(sock: str, not_this: int | None = None) -> tuple[int, int]:
    """(server pid, the spare child waiting for the next build), once there is one other than `not_this`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        procs = _server_processes(sock)
        servers = [p for p, parent in procs.items() if parent not in procs]
        if len(servers) == 1:
            spares = [p for p, parent in procs.items() if parent == servers[0] and p != not_this]
            if len(spares) == 1:
                return servers[0], spares[0]
        time.sleep(0.05)
    raise AssertionError(f"no spare child: {_server_processes(sock)}")


def test_a_spare_child_waits_for_the_next_build(tmp_path: Path, registry: str, server_env: dict[str, str]) -> None:
    sock = server_env["WORKBENCH_SERVER_SOCKET"]
    ctx = _project(tmp_path, registry, "FROM BASE\nCOPY a.txt /a.txt\n")
    root = tmp_path / "root"
    assert _build(ctx, root, server_env).returncode == 0
    _wait_for_server(server_env)
    server, spare = _spare(sock)
    built = _build(ctx, root, server_env)
    assert built.returncode == 0 and "CACHED" in built.stderr, built.stderr
    # the spare ran that build (and goes: it may still be tearing down once the client has its status); another
    # one waits
    deadline = time.monotonic() + 30
    while spare in _server_processes(sock):
        assert time.monotonic() < deadline, "the spare did not run the build: it still waits"
        time.sleep(0.05)
    again, spare = _spare(sock, not_this=spare)
    assert again == server
    os.kill(spare, signal.SIGKILL)  # a spare that died: the next build gets a child of its own all the same
    assert _build(ctx, root, server_env).returncode == 0
    _, spare = _spare(sock, not_this=spare)
    subprocess.run(WORKBENCH + ["server", "stop"], env=server_env, capture_output=True, timeout=30)
    deadline = time.monotonic() + 10
    while _server_processes(sock):  # the spare leaves with the server
        assert time.monotonic() < deadline, _server_processes(sock)
        time.sleep(0.05)


def test_a_finished_child_lets_go_of_the_clients_output() -> None:
    """Whatever reads the build's output sees its end when the build is done, not when the child's teardown is."""
    code = ("import sys, time; from workbench.server import _let_go_of_stdio; print('done', flush=True); "
            "_let_go_of_stdio(); print('lost'); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        out = proc.stdout.read()  # type: ignore[union-attr]
        err = proc.stderr.read()  # type: ignore[union-attr]
        assert time.monotonic() - t0 < 20 and proc.poll() is None  # the end came while it still ran
        assert out == b"done\n" and err == b""
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(tuple(int(x) for x in os.uname().release.split(".")[:2]) < (5, 14),
                    reason="MADV_POPULATE_WRITE is Linux 5.14's")
def test_a_spare_makes_the_memory_it_shares_its_own() -> None:
    code = """
import os, threading
from workbench.server import _own_memory, writable_regions
shared = bytearray(os.urandom(64 << 20))  # the parent's, shared with the child after the fork
pid = os.fork()
if pid == 0:
    def private_dirty():
        for line in open("/proc/self/smaps_rollup"):
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1])
    before = private_dirty()
    _own_memory(threading.Event(), writable_regions())
    os._exit(0 if private_dirty() - before > 60 << 10 else 1)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "0", out.stderr


def test_a_spare_starts_grpc_at_the_usual_priority() -> None:
    """Only the thread that makes the memory ours runs at SCHED_IDLE: grpc is started by another (threads inherit
    their creator's policy, and grpc's must not starve on a busy machine once a build uses them)."""
    code = """
import os, threading
import grpc
import workbench.server as server
seen = []
server._start_grpc = lambda: seen.append(os.sched_getscheduler(0))
memory = server._own_memory
server._own_memory = lambda stop, regions: (seen.append(os.sched_getscheduler(0)), memory(stop, regions))
for thread in server._prepare_spare(threading.Event()):
    thread.join(60)
print(seen == [os.SCHED_IDLE, os.SCHED_OTHER], seen)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("True"), (out.stdout, out.stderr)


def test_a_child_forked_for_want_of_a_spare_keeps_no_extra_copy_of_the_clients_output(
        tmp_path: Path, registry: str, server_env: dict[str, str]) -> None:
    sock = server_env["WORKBENCH_SERVER_SOCKET"]
    ctx = _project(tmp_path, registry, "FROM BASE\nRUN sleep 4\n")
    root = tmp_path / "root"
    assert _build(ctx, root, server_env, "--no-cache").returncode == 0
    _wait_for_server(server_env)
    server, spare = _spare(sock)
    os.kill(spare, signal.SIGKILL)
    proc = subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--progress", "plain", "--no-cache", str(ctx)],
                            env=server_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ctx)
    try:
        pipe = os.readlink(f"/proc/self/fd/{proc.stderr.fileno()}")  # type: ignore[union-attr]  # "pipe:[N]"
        deadline = time.monotonic() + 30
        holders: list[int] = []
        while not holders:
            assert time.monotonic() < deadline, "no build child holds the client's stderr"
            for pid, parent in _server_processes(sock).items():
                if parent == server:
                    try:
                        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
                    except OSError:
                        continue
                    if pipe in links:
                        holders = [links.count(pipe)]
            time.sleep(0.05)
        assert holders == [1]  # its stderr, and no copy inherited from the server's fork
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_an_exited_server_left_unreaped_counts_as_gone() -> None:
    """`server stop` waits for the server's pid to go; a parent that is a subreaper (an in-process build makes
    its process one) may never reap it, and the zombie must not count as running (it held stop for 10 s)."""
    from workbench.snapshot.scratch import pid_alive

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0] != b"Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
        assert not pid_alive(pid)
        assert pid_alive(os.getpid())
    finally:
        os.waitpid(pid, 0)
    assert not pid_alive(pid)
