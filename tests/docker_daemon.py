"""A private Docker 20.10 daemon (Debian's docker.io, embedding BuildKit v0.8) for tests of remote builds.

It has its own data root, exec root, pid file and socket under one temp dir, no iptables and no bridge (so it
touches nothing of the host's network), and trusts the local test registry (localhost:5055) over plain HTTP.
At the end it is stopped and its mounts removed. Use: `from tests.docker_daemon import docker_daemon`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from workbench.mountinfo import mounts


@dataclass(frozen=True)
class DockerDaemon:
    base: Path
    socket: Path
    version: str  # "20.10.24+dfsg1"
    pid: int

    @property
    def addr(self) -> str:
        return f"docker://{self.socket}"


def dockerd_missing() -> str:
    """Why the daemon cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return "dockerd needs root"
    if shutil.which("dockerd") is None:
        return "needs dockerd (Debian's docker.io package: scripts/install.sh installs it)"
    return ""


def dockerd_version() -> str:
    out = subprocess.run(["dockerd", "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"version (\S+?),", out)
    return m[1] if m else out.strip()


def start_dockerd(timeout: float = 90.0) -> tuple[subprocess.Popen[bytes], DockerDaemon]:
    # short, private paths: containerd's sockets live under the exec root, and unix paths stop at 108 bytes
    base = Path(tempfile.mkdtemp(prefix="wb-dockerd-", dir="/tmp"))
    sock = base / "docker.sock"
    log = open(base / "dockerd.log", "wb")
    proc = subprocess.Popen(
        ["dockerd", "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
         "--pidfile", str(base / "docker.pid"), "-H", f"unix://{sock}", "--iptables=false", "--bridge=none",
         "--insecure-registry", "localhost:5055"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    daemon = DockerDaemon(base, sock, dockerd_version(), proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (base / "dockerd.log").read_text(errors="replace")[-2000:]
            stop_dockerd(proc, daemon)
            raise RuntimeError(f"dockerd exited with {proc.returncode}:\n{tail}")
        if _answers(sock):
            return proc, daemon
        time.sleep(0.2)
    stop_dockerd(proc, daemon)
    raise RuntimeError(f"dockerd did not answer on {sock} within {timeout:g}s")


def _answers(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def stop_dockerd(proc: subprocess.Popen[bytes], daemon: DockerDaemon) -> None:
    """SIGTERM (dockerd stops its containerd and unmounts), SIGKILL after 30 s; then any mount left under the
    base dir is detached and the dir removed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            _kill_own_containerd(daemon.base)
    prefix = str(daemon.base) + "/"
    for point in reversed([m.point for m in mounts() if (m.point + "/").startswith(prefix)]):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
    shutil.rmtree(daemon.base, ignore_errors=True)


def _kill_own_containerd(base: Path) -> None:
    """The containerd a killed dockerd left behind: the pid in its pid file, if that process runs from `base`."""
    try:
        pid = int((base / "exec" / "containerd" / "containerd.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"containerd" in cmdline and str(base).encode() in cmdline:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def docker_daemon() -> Iterator[DockerDaemon]:
    """A running Docker 20.10 daemon of its own; skips where there is none to run."""
    why = dockerd_missing()
    if why:
        pytest.skip(why)
    if not dockerd_version().startswith("20.10."):
        pytest.skip(f"needs Docker 20.10 (Debian bookworm's docker.io), found dockerd {dockerd_version()}")
    proc, daemon = start_dockerd()
    try:
        yield daemon
    finally:
        stop_dockerd(proc, daemon)
