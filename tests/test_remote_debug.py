"""`workbench debug --addr ADDR [--frontend dockerfile.v0] [--invoke CMD]`: the build (our own graph as a
pb.Definition, or the daemon's Dockerfile frontend) runs through the daemon's gateway (Control.Solve with no
frontend, LLBBridge Solve/NewContainer/ExecProcess/Return), then CMD runs in its result with our stdin and output
(a tty when stdin is a terminal). On buildkitd v0.20 (skipped, saying so, when it does not run) and Docker 20.10."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker_daemon import DockerDaemon, docker_daemon  # noqa: F401  (the fixture)
from tests.test_remote_build import buildkitd_addr

ENV = {**{k: v for k, v in os.environ.items() if k != "BUILDKIT_HOST"}, "WORKBENCH_SERVER": "0"}
DOCKERFILE = """FROM localhost:5055/busybox
COPY hello.txt /hello.txt
WORKDIR /srv
ENV GREETING=hey
RUN echo built > /built.txt
"""


def debug(*args: str, root: Path, stdin: str = "", env: dict[str, str] | None = None,
          timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbench.cli", "debug", "--root", str(root), *args],
                          input=stdin, capture_output=True, text=True, timeout=timeout, env={**ENV, **(env or {})})


def context(tmp_path: Path, dockerfile: str = DOCKERFILE) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "hello.txt").write_text("hello from the context\n")
    return ctx


@pytest.fixture(params=["buildkitd", "docker"])
def addr(request: pytest.FixtureRequest, registry: str) -> str:
    if request.param == "docker":
        daemon: DockerDaemon = request.getfixturevalue("docker_daemon")
        return daemon.addr
    return buildkitd_addr()


@pytest.mark.real
def test_echo_hi_in_the_result(addr: str, tmp_path: Path, root: Path) -> None:
    ctx = context(tmp_path)
    r = debug("--addr", addr, "--frontend", "dockerfile.v0", "--invoke", "echo hi", str(ctx), root=root)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n"
    assert "[4/4] RUN echo built > /built.txt" in r.stderr  # the build's progress, from the daemon


@pytest.mark.real
def test_the_result_its_config_and_stdin(addr: str, tmp_path: Path, root: Path) -> None:
    ctx = context(tmp_path)
    script = 'cat /hello.txt /built.txt; pwd; echo "$GREETING"; read line; echo "got $line"; exit 7'
    r = debug("--addr", addr, "--frontend", "dockerfile.v0", "--invoke", f"sh -c '{script}'", str(ctx),
              root=root, stdin="from stdin\n")
    assert r.returncode == 7, r.stderr
    assert r.stdout == "hello from the context\nbuilt\n/srv\nhey\ngot from stdin\n"


FAILING = """FROM localhost:5055/busybox
COPY hello.txt /hello.txt
WORKDIR /w
ENV STEP=failing
RUN echo left > /w/left.txt && echo about-to-fail && exit 3
"""


@pytest.mark.real
def test_a_shell_in_what_the_failed_step_left(addr: str, tmp_path: Path, root: Path) -> None:
    ctx = context(tmp_path, FAILING)
    r = debug("--addr", addr, "--frontend", "dockerfile.v0", "--invoke", 'sh -c \'cat /w/left.txt /hello.txt; pwd; '
              'echo "$STEP"; exit 5\'', str(ctx), root=root)
    assert r.returncode == 1, r.stderr  # the build failed, whatever the shell returned
    errors = [line for line in r.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and "exit code: 3" in errors[0], r.stderr
    if addr.startswith("docker://"):  # BuildKit v0.8 inside Docker 20.10 names no mounts in a step's error
        assert r.stdout == ""
        assert ("workbench: no shell on error on Docker 20.10's BuildKit (its error does not name the failed "
                "step's filesystems); for one, point --addr at a recent buildkitd (v0.20 names them)"
                ) in r.stderr.splitlines()  # (its place among the progress lines may vary)
        return
    assert r.stdout == "left\nhello from the context\n/w\nfailing\n"  # the step's files, workdir and env
    assert "workbench: `sh -c" in r.stderr and "in what [4/4] RUN echo left" in r.stderr


@pytest.mark.real
def test_a_failed_build_without_break_on_error_is_one_line(addr: str, tmp_path: Path, root: Path) -> None:
    ctx = context(tmp_path, FAILING)
    r = debug("--addr", addr, "--frontend", "dockerfile.v0", "--no-break-on-error", "--invoke", "echo never",
              str(ctx), root=root)
    assert r.returncode == 1 and r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and "exit code: 3" in errors[0], r.stderr


def test_flags_that_need_or_refuse_a_daemon(tmp_path: Path, root: Path) -> None:
    ctx = context(tmp_path)
    r = debug("--invoke", "sh", str(ctx), root=root)
    assert r.returncode == 2 and "--invoke needs a BuildKit daemon" in r.stderr
    r = debug("--addr", "unix:///nonexistent.sock", "--frontend", "dockerfile.v0", "--break", "2", str(ctx),
              root=root)
    assert r.returncode == 2 and "--break needs workbench's own build graph: leave out --frontend" in r.stderr
    r = debug("--frontend", "dockerfile.v0", str(ctx), root=root, env={"BUILDKIT_HOST": "ftp://x"})
    assert r.returncode == 2 and "BUILDKIT_HOST 'ftp://x'" in r.stderr
    r = debug("--addr", "unix:///nonexistent.sock", "--frontend", "gateway.v0", str(ctx), root=root)
    assert r.returncode == 2 and "the daemon's frontend can only be dockerfile.v0" in r.stderr


def test_an_unreachable_daemon_is_one_line(tmp_path: Path, root: Path) -> None:
    ctx = context(tmp_path)
    sock = tmp_path / "nope.sock"
    r = debug("--addr", f"unix://{sock}", "--frontend", "dockerfile.v0", "--invoke", "echo hi", str(ctx), root=root)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines()[-1] == (f"ERROR: cannot reach BuildKit at unix://{sock} (--addr): {sock} does not "
                                         f"exist; start buildkitd there, or point --addr (or BUILDKIT_HOST) at a "
                                         f"running daemon")


# -- our own graph (no --frontend), as `build --addr` sends it -------------------------------------------------


@pytest.mark.real
def test_our_graph_its_result_config_and_stdin(addr: str, tmp_path: Path, root: Path) -> None:
    ctx = context(tmp_path)
    script = 'cat /hello.txt /built.txt; pwd; echo "$GREETING"; read line; echo "got $line"; exit 7'
    r = debug("--addr", addr, "--invoke", f"sh -c '{script}'", str(ctx), root=root, stdin="from stdin\n")
    assert r.returncode == 7, r.stderr
    assert r.stdout == "hello from the context\nbuilt\n/srv\nhey\ngot from stdin\n"
    assert "[4/4] RUN echo built > /built.txt" in r.stderr  # our step names on the daemon's progress


@pytest.mark.real
def test_our_graph_a_shell_in_what_the_failed_step_left(addr: str, tmp_path: Path, root: Path) -> None:
    ctx = context(tmp_path, FAILING)
    r = debug("--addr", addr, "--invoke", 'sh -c \'cat /w/left.txt /hello.txt; pwd; echo "$STEP"; exit 5\'',
              str(ctx), root=root)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and "exit code: 3" in errors[0], r.stderr
    if addr.startswith("docker://"):
        assert r.stdout == ""
        assert any(line.startswith("workbench: no shell on error on Docker 20.10's BuildKit")
                   for line in r.stderr.splitlines()), r.stderr
        return
    assert r.stdout == "left\nhello from the context\n/w\nfailing\n"
    assert "in what [4/4] RUN echo left" in r.stderr


def _read_until(fd: int, seen: bytearray, wanted: bytes, timeout: float = 240) -> bool:
    """Read the pty into `seen` until `wanted` is in it (True), or it closes or `timeout` passes (False)."""
    import time

    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return False
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not chunk:
            return False
        seen += chunk
    return True


def _winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@pytest.mark.real
@pytest.mark.parametrize("frontend", [[], ["--frontend", "dockerfile.v0"]], ids=["ours", "dockerfile.v0"])
def test_a_tty_when_stdin_is_a_terminal(addr: str, frontend: list[str], tmp_path: Path, root: Path) -> None:
    """Under a pty (as a user's terminal) the shell gets a tty of the terminal's size, following its resizes, and
    the terminal is raw meanwhile (our keys are echoed by the daemon's pty, once)."""
    ctx = context(tmp_path)
    argv = [sys.executable, "-m", "workbench.cli", "debug", "--root", str(root), "--addr", addr, *frontend,
            "--invoke", "sh", str(ctx)]
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin, stdout and stderr are the pty
        os.execve(sys.executable, argv, {**ENV, "TERM": "vt220"})
    seen = bytearray()
    try:
        _winsize(fd, 33, 101)
        assert _read_until(fd, seen, b"(a tty; changes are thrown away)"), seen.decode(errors="replace")
        assert _read_until(fd, seen, b"# "), seen.decode(errors="replace")  # the shell's prompt
        os.write(fd, b"tty; echo \"term=$TERM\"; stty size\r")
        assert _read_until(fd, seen, b"33 101"), seen.decode(errors="replace")
        _winsize(fd, 40, 120)  # the child gets SIGWINCH and tells the daemon
        for _ in range(20):
            os.write(fd, b"stty size\r")
            if _read_until(fd, seen, b"40 120", timeout=3):
                break
        os.write(fd, b"exit 4\r")
        _read_until(fd, seen, b"never")  # to the end
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    out = seen.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 4, out
    assert "/dev/pts/" in out and "term=vt220" in out and "40 120" in out, out
    assert out.count('tty; echo "term=$TERM"') == 1, out  # the daemon's pty echoes; ours, raw, does not


BREAKS = """FROM localhost:5055/busybox AS side
RUN echo from-side > /side.txt
FROM localhost:5055/busybox
COPY hello.txt /hello.txt
WORKDIR /srv
ENV GREETING=hey
RUN --mount=type=bind,from=side,source=/side.txt,target=/mnt/side.txt --mount=type=tmpfs,target=/scratch \\
    echo built > /built.txt
"""


@pytest.mark.real
def test_a_shell_before_a_breakpoint_then_in_the_result(addr: str, tmp_path: Path, root: Path) -> None:
    """`--break LINE` with --addr: before the step runs, a shell on its inputs at its mounts (the rootfs, a bind
    from another stage, a tmpfs) with its env and workdir; the build then goes on, and the shell runs in the
    result."""
    ctx = context(tmp_path, BREAKS)
    script = ('test -e /built.txt && echo built || echo not-built; cat /hello.txt; '
              'cat /mnt/side.txt 2>/dev/null | grep . || echo no-side; pwd; echo "$GREETING"; '
              'grep -c " /scratch " /proc/mounts; true')
    r = debug("--addr", addr, "--break", "7", "--invoke", f"sh -c '{script}'", str(ctx), root=root)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("not-built\nhello from the context\nfrom-side\n/srv\nhey\n1\n"  # at the breakpoint
                        "built\nhello from the context\nno-side\n/srv\nhey\n0\n"), r.stderr  # in the result
    stops = [line for line in r.stderr.splitlines() if "exit it to continue the build" in line]
    assert len(stops) == 1 and "before [" in stops[0] and "RUN --mount=type=bind" in stops[0], r.stderr
    assert stops[0].endswith("(line 7); exit it to continue the build"), r.stderr


@pytest.mark.real
def test_a_breakpoint_at_no_step_is_one_line(addr: str, tmp_path: Path, root: Path) -> None:
    ctx = context(tmp_path)
    r = debug("--addr", addr, "--break", "40", "--invoke", "echo never", str(ctx), root=root)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines()[-1] == "ERROR: --break 40: no step of this build is at line 40"


# -- the local terminal and stdin around ExecProcess, driven with a fake daemon (no daemon needed) -------------

class _FakeCall:
    def __init__(self, messages: Iterable[Any]) -> None:
        self.messages = messages

    def __iter__(self) -> Iterator[Any]:
        return iter(self.messages)

    def cancel(self) -> None:
        pass


def _bridge(messages: Iterable[Any]) -> Any:
    """A Bridge whose ExecProcess stream answers `messages`."""
    from workbench.remote.debug import Bridge

    class Channel:
        def stream_stream(self, *_: Any, **__: Any) -> Callable[..., _FakeCall]:
            return lambda requests, metadata=None: _FakeCall(messages)

    bridge = Bridge.__new__(Bridge)
    bridge.channel, bridge.metadata = Channel(), ()
    return bridge


def _in_pty(child: Callable[[], None], parent: Callable[[int, int, bytearray], None] | None = None) -> str:
    """`child` run in a forked process whose stdin is a new terminal; what it wrote there (its report)."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            child()
        finally:
            os._exit(0)
    seen = bytearray()
    if parent is not None:
        parent(pid, fd, seen)
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        seen += data
    os.waitpid(pid, 0)
    return seen.decode(errors="replace").replace("\r", "")


def _terminal() -> Any:
    """fd 0 (the pty), not sys.stdin: pytest's capture replaces that."""
    return os.fdopen(0, "rb", buffering=0, closefd=False)


def _cooked() -> str:
    import termios

    lflag = termios.tcgetattr(0)[3]
    return f"ICANON={int(bool(lflag & termios.ICANON))} ECHO={int(bool(lflag & termios.ECHO))}"


def test_a_daemon_that_says_started_twice_leaves_the_terminal_as_it_was() -> None:
    from workbench.remote.debug import Invocation
    from workbench.remote.proto import gateway_pb2 as gw

    def child() -> None:
        messages = [gw.ExecMessage(Started=gw.StartedMessage())] * 2 + [
            gw.ExecMessage(Exit=gw.ExitMessage(Code=0)), gw.ExecMessage(Done=gw.DoneMessage())]
        before = _cooked()
        code = _bridge(messages)._exec("c", {}, Invocation(["sh"], stdin=_terminal(), tty=True))
        feeders = sum(t.name == "exec-stdin" for t in threading.enumerate())
        os.write(2, f"before {before} after {_cooked()} code {code} feeders<=1 {feeders <= 1}\n".encode())

    report = _in_pty(child)
    assert "before ICANON=1 ECHO=1 after ICANON=1 ECHO=1 code 0 feeders<=1 True" in report, report


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGQUIT"])
def test_a_fatal_signal_while_raw_restores_the_terminal_then_kills(signame: str) -> None:
    import resource
    import signal

    from workbench.remote.debug import Invocation
    from workbench.remote.proto import gateway_pb2 as gw

    def child() -> None:
        def messages() -> Iterator[Any]:
            yield gw.ExecMessage(Started=gw.StartedMessage())
            os.write(2, b"RAW\n")
            time.sleep(60)  # the remote shell runs; our terminal is raw

        worker = os.fork()
        if worker == 0:  # the debugger, a child of the "shell" that owns the terminal
            # as from an interactive shell: a test run started with nohup or `&` would pass the signal on ignored
            signal.signal(getattr(signal, signame), signal.SIG_DFL)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGQUIT's default action dumps no core here
            _bridge(messages())._exec("c", {}, Invocation(["sh"], stdin=_terminal(), tty=True))
            os._exit(0)
        os.write(2, f"PID {worker}\n".encode())
        _, status = os.waitpid(worker, 0)
        os.write(2, f"signaled {os.WIFSIGNALED(status) and os.WTERMSIG(status)} then {_cooked()}\n".encode())

    def parent(pid: int, fd: int, seen: bytearray) -> None:
        assert _read_until(fd, seen, b"RAW", timeout=60)
        worker = int(seen.split(b"PID ")[1].split()[0])
        os.kill(worker, getattr(signal, signame))

    signum = int(getattr(signal, signame))
    report = _in_pty(child, parent)
    assert f"signaled {signum} then ICANON=1 ECHO=1" in report, report


def test_a_stream_that_ends_without_exit_stops_reading_stdin() -> None:
    from workbench.remote.debug import Invocation, RemoteDebugError
    from workbench.remote.proto import gateway_pb2 as gw

    r, w = os.pipe()
    try:
        with pytest.raises(RemoteDebugError, match="without an exit code"):
            _bridge([gw.ExecMessage(Started=gw.StartedMessage())])._exec(
                "c", {}, Invocation(["sh"], stdin=os.fdopen(os.dup(r), "rb", buffering=0)))
        for _ in range(100):  # the feeder notices the close within its 0.1 s poll
            if not any(t.name == "exec-stdin" for t in threading.enumerate()):
                break
            time.sleep(0.05)
        os.write(w, b"keys typed for the next shell\n")
        assert not any(t.name == "exec-stdin" for t in threading.enumerate())
        assert os.read(r, 100) == b"keys typed for the next shell\n"  # left for whoever reads next
    finally:
        os.close(r)
        os.close(w)


def test_step_logs_and_the_daemons_errors_are_redacted_and_printable(
        tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """As `build --addr`: a secret a step prints, or the daemon's error repeats, is masked, and terminal
    controls in them are not written to our terminal."""
    import contextlib

    from workbench import cli
    from workbench.remote import control
    from workbench.remote import debug as remote_debug
    from workbench.remote.debug import Outcome
    from workbench.remote.proto import control_pb2 as cpb

    secret = "hunter2-TOPSECRET"

    def run_in_result(_control: Any, _plan: Any, _inv: Any, on_status: Callable[[Any], None], _shared: str,
                      on_error: Callable[[str, str], bool], *_: Any) -> Outcome:
        resp = cpb.StatusResponse()
        v = resp.vertexes.add(digest="sha256:" + "a" * 64, name="[2/2] RUN cat /run/secrets/tok")
        v.started.GetCurrentTime()
        log = resp.logs.add(vertex=v.digest, stream=1, msg=f"token is {secret}\n".encode())
        log.timestamp.GetCurrentTime()
        on_status(resp)
        done = cpb.StatusResponse()
        done.vertexes.add().CopyFrom(v)
        done.vertexes[0].completed.GetCurrentTime()
        on_status(done)
        on_error(f"process failed: {secret}\x1b]0;owned\x07", "(no step)")
        return Outcome(error="failed")

    monkeypatch.setattr(control, "Control", lambda _address: contextlib.nullcontext())
    monkeypatch.setattr(remote_debug, "run_in_result", run_in_result)
    monkeypatch.setenv("TOK", secret)
    code = cli.main(["debug", "--root", str(root), "--addr", "unix:///nonexistent.sock", "--frontend",
                     "dockerfile.v0", "--no-break-on-error", "--secret", "id=tok,env=TOK", str(context(tmp_path))])
    out, err = capfd.readouterr()
    assert code == 1
    assert "token is ****" in out + err and "ERROR: process failed: ****" in err
    assert secret not in out + err and "\x1b" not in err
