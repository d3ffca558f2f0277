"""SSH agent forwarding for `RUN --mount=type=ssh`: a unix socket that pipes each connection to the client's agent."""

from __future__ import annotations

import os
import secrets
import select
import socket
import stat
import tempfile
import threading
from pathlib import Path

_MAX_SOCK_DIR = 90


class SSHForwardError(Exception):
    """The agent cannot be forwarded (no socket given, key files only, ...)."""


def agent_socket(paths: tuple[str, ...] | list[str], ssh_id: str) -> str:
    """The first agent socket among the session's paths for `ssh_id`; raw key files are not supported."""
    for p in paths:
        try:
            if stat.S_ISSOCK(os.stat(p).st_mode):
                return p
        except OSError:
            continue
    if paths:
        raise SSHForwardError(f"ssh {ssh_id}: forwarding key files ({', '.join(paths)}) is not supported; "
                              "load the key into an ssh-agent and give its socket")
    raise SSHForwardError(f'no SSH key "{ssh_id}" forwarded from the client')


def _pipe(a: socket.socket, b: socket.socket) -> None:
    socks = [a, b]
    try:
        while True:
            ready, _, _ = select.select(socks, [], [], 1.0)
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    except OSError:
        pass
    finally:
        a.close()
        b.close()


class AgentProxy:
    """Listens on a unix socket in `directory` (a temp dir when that path is too long for a socket) and forwards
    every connection to `agent`."""

    def __init__(self, agent: str, directory: Path, uid: int = 0, gid: int = 0, mode: int = 0o600) -> None:
        self.agent = agent
        self.dir = directory / f"ssh-{secrets.token_hex(6)}"
        if len(os.fsencode(self.dir)) > _MAX_SOCK_DIR:  # sun_path holds 107 bytes: fall back to a short temp dir
            self.dir = Path(tempfile.mkdtemp(prefix="wb-ssh-"))
        else:
            self.dir.mkdir(mode=0o700)
        self.path = self.dir / "agent.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        os.chown(self.path, uid, gid)
        os.chmod(self.path, mode)
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ssh-agent-proxy", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.agent)
            except OSError:
                conn.close()
                upstream.close()
                continue
            threading.Thread(target=_pipe, args=(conn, upstream), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
        try:
            self.path.unlink()
            self.dir.rmdir()
        except OSError:
            pass
