"""`workbench build --addr` through the resident build server: a child the server forked runs the remote build
(its session serves the client's files and secrets from the client's working directory), gives the same
image, and Ctrl-C on the client still cancels the daemon's solve; what a remote build fetches for itself. On
Docker 20.10's BuildKit and /tmp/bk's buildkitd v0.20 (skipped, saying so, when it does not run)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH
from tests.docker_daemon import docker_daemon  # noqa: F401  (the fixture)
from tests.test_remote_build import (  # noqa: F401
    COPY_RUN,
    _sleepers,
    addr,
    context_with,
    interrupt_when_running,
    workbench,
)
from workbench.image.content import ContentStore

pytestmark = pytest.mark.real


@pytest.fixture()
def server_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment whose builds use a private server socket, the server started; stopped afterwards."""
    env = {k: v for k, v in os.environ.items() if k not in ("BUILDKIT_HOST", "WORKBENCH_SERVER")}
    env["WORKBENCH_SERVER_SOCKET"] = str(tmp_path / "srv" / "server.sock")
    subprocess.run(WORKBENCH + ["build", "--progress", "nonsense", "."], env=env, capture_output=True, timeout=60)
    deadline = time.monotonic() + 60
    while subprocess.run(WORKBENCH + ["server", "status"], env=env, capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "the build server did not start"
        time.sleep(0.1)
    yield env
    subprocess.run(WORKBENCH + ["server", "stop"], env=env, capture_output=True, timeout=30)


def _server_processes(socket_path: str) -> dict[int, int]:
    """pid → parent pid of the server listening on `socket_path` and of the children it forked."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"workbench.server" in argv and socket_path.encode() in argv:
                found[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return found


def _build_children(socket_path: str) -> list[int]:
    procs = _server_processes(socket_path)
    return [pid for pid, parent in procs.items() if parent in procs]


def test_remote_build_runs_in_a_server_child(tmp_path: Path, registry: str, root: Path, addr: str,  # noqa: F811
                                              server_env: dict[str, str]) -> None:
    ctx = context_with(tmp_path, "FROM localhost:5055/busybox\nCOPY hello.txt /hello.txt\n"
                                 "RUN --mount=type=secret,id=token sleep 5; cp /run/secrets/token /token\n")
    (ctx / "token.txt").write_text("from-a-relative-path\n")
    out = tmp_path / "out"
    # relative paths: the child takes the client's working directory; the session serves the client's files
    proc = subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--addr", addr, "--progress", "plain",
                                         "--no-cache", "--secret", "id=token,src=token.txt",
                                         "--output", f"type=local,dest={out}", "."],
                            cwd=ctx, env=server_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sock = server_env["WORKBENCH_SERVER_SOCKET"]
        deadline = time.monotonic() + 120
        while not (_sleepers("5") and _build_children(sock)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert (out / "hello.txt").read_text() == "hello from the context\n"
    assert (out / "token").read_text() == "from-a-relative-path\n"
    assert "from-a-relative-path" not in err


def test_ctrl_c_through_the_server_cancels_the_remote_solve(tmp_path: Path, registry: str, root: Path,
                                                            addr: str, server_env: dict[str, str],  # noqa: F811
                                                            ) -> None:
    marker = "37"
    ctx = context_with(tmp_path, f"FROM localhost:5055/busybox\nRUN echo sleeping && sleep {marker}\n")
    proc = subprocess.Popen(WORKBENCH + ["build", "--root", str(root), "--addr", addr, "--progress", "plain",
                                         "--no-cache", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=server_env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    interrupt_when_running(proc, marker, lambda: bool(_build_children(server_env["WORKBENCH_SERVER_SOCKET"])))


def test_graph_build_fetches_no_base_layers(tmp_path: Path, registry: str, root: Path,
                                            addr: str) -> None:  # noqa: F811
    """The daemon pulls the base image's layers: our side resolves the tag and reads the config, nothing more."""
    r = workbench("--addr", addr, "--progress", "plain", str(context_with(tmp_path, COPY_RUN)), root=root)
    assert r.returncode == 0, r.stderr
    digest = re.search(r"localhost:5055/busybox:latest@(sha256:[0-9a-f]{64})", r.stderr)
    assert digest, r.stderr
    content = ContentStore(root / "content")
    manifest = json.loads(content.read(digest[1]))
    assert manifest["layers"] and content.has(manifest["config"]["digest"])
    assert [layer["digest"] for layer in manifest["layers"] if content.has(layer["digest"])] == []


def test_the_server_imports_grpc_but_starts_none_of_it() -> None:
    """Forking is safe for grpc only while its core has not started in the parent: no thread, no channel."""
    code = ("import os, sys; from workbench.server import preload; preload(); "
            "print('grpc' in sys.modules, len(os.listdir('/proc/self/task')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "1"]
