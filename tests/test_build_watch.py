"""`workbench build --watch`: build, then rebuild on each change of the context or the Dockerfile, on the local
engine and on a BuildKit daemon (`--addr`: Docker 20.10's, and /tmp/bk's buildkitd v0.20 when it runs); Ctrl-C
ends it with 130 and no build left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.docker_daemon import DockerDaemon, docker_daemon  # noqa: F401  (the fixture)
from tests.test_remote_build import buildkitd_addr

pytestmark = pytest.mark.real
ENV = {**{k: v for k, v in os.environ.items() if k != "BUILDKIT_HOST"}, "WORKBENCH_SERVER": "0"}
DOCKERFILE = "FROM localhost:5055/busybox AS build\nCOPY hello.txt /out/hello.txt\nRUN echo ran > /out/ran\n" \
             "FROM scratch\nCOPY --from=build /out /\n"


@pytest.fixture(params=["local", "docker", "buildkitd"])
def engine_args(request: pytest.FixtureRequest, registry: str) -> list[str]:
    if request.param == "local":
        return []
    if request.param == "docker":
        daemon: DockerDaemon = request.getfixturevalue("docker_daemon")
        return ["--addr", daemon.addr]
    return ["--addr", buildkitd_addr()]


def _wait(what: Callable[[], bool], log: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
        time.sleep(0.2)


def _reads(path: Path, text: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return path.read_text() == text
        except OSError:
            return False
    return check


def test_watch_rebuilds_on_a_change_and_stops_on_ctrl_c(engine_args: list[str], tmp_path: Path, root: Path) -> None:
    ctx, out, log = tmp_path / "ctx", tmp_path / "out", tmp_path / "log"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "hello.txt").write_text(f"first {os.urandom(4).hex()}\n")  # a daemon keeps its cache between runs
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "build", "--root", str(root), *engine_args,
                                 "--watch", "-o", f"type=local,dest={out}", str(ctx)], stdout=subprocess.DEVNULL,
                                stderr=err, env=ENV, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait(lambda: "watching for changes" in log.read_text(), log, proc)
        first = (ctx / "hello.txt").read_text()
        assert (out / "hello.txt").read_text() == first and (out / "ran").read_text() == "ran\n"
        second = f"second {os.urandom(4).hex()}\n"
        (ctx / "hello.txt").write_text(second)
        _wait(_reads(out / "hello.txt", second), log, proc)
        _wait(lambda: log.read_text().count("watching for changes") >= 2, log, proc)
        assert "change detected: hello.txt: rebuilding" in log.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "stopped watching" in text
    assert "Traceback" not in text
