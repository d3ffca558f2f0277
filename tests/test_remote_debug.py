"""`workbench debug --addr ADDR --frontend dockerfile.v0 [--invoke CMD]`: the build runs through the daemon's
gateway (Control.Solve with no frontend, LLBBridge Solve/NewContainer/ExecProcess/Return), then CMD runs in its
result with our stdin and output. On buildkitd v0.20 (skipped, saying so, when it does not run) and Docker 20.10."""

from __future__ import annotations

import os
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
                "step's filesystems)") in r.stderr.splitlines()  # (its place among the progress lines may vary)
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
    assert r.returncode == 2 and "--break needs the local engine" in r.stderr
    r = debug("--frontend", "dockerfile.v0", str(ctx), root=root, env={"BUILDKIT_HOST": "ftp://x"})
    assert r.returncode == 2 and "BUILDKIT_HOST 'ftp://x'" in r.stderr
    r = debug("--addr", "unix:///nonexistent.sock", str(ctx), root=root)
    assert r.returncode == 2 and "pass --frontend dockerfile.v0" in r.stderr


def test_an_unreachable_daemon_is_one_line(tmp_path: Path, root: Path) -> None:
    ctx = context(tmp_path)
    sock = tmp_path / "nope.sock"
    r = debug("--addr", f"unix://{sock}", "--frontend", "dockerfile.v0", "--invoke", "echo hi", str(ctx), root=root)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines()[-1] == (f"ERROR: cannot reach BuildKit at unix://{sock} (--addr): {sock} does not "
                                         f"exist; start buildkitd there, or point --addr (or BUILDKIT_HOST) at a "
                                         f"running daemon")
