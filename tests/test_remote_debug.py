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
from pathlib import Path

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
