"""`exec` through the editor's terminal: the adapter serves a unix socket (mode 0600, in a private 0700
folder) and asks the client (`runInTerminal`) to run `workbench.dap.attach` on it; that program sends its
terminal's size, then relays its raw terminal to a pty on which the shell runs in the paused step.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import struct
import sys
import tempfile
import termios
import threading
from collections.abc import Callable
from pathlib import Path

ACCEPT_TIMEOUT = 60.0
"""Seconds the editor has to start the attach program in its terminal."""


def _private_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = runtime if runtime and os.path.isdir(runtime) and os.stat(runtime).st_uid == os.getuid() else None
    return Path(tempfile.mkdtemp(prefix="workbench-dap-", dir=base))  # mode 0700


class TerminalServer:
    """One shell's socket: `argv` is what the client runs; `run(shell)` waits for it, then relays."""

    def __init__(self) -> None:
        self.dir = _private_dir()
        self.path = self.dir / "shell.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self.sock.listen(1)
        self.sock.settimeout(ACCEPT_TIMEOUT)

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-c", "import sys; from workbench.dap.attach import main; sys.exit(main(sys.argv[1]))",
                str(self.path)]

    def run(self, shell: Callable[[int], int], hangup: Callable[[], None]) -> int | None:
        """Wait for the attach program, then run `shell(pty_fd)` relayed to it (`hangup` when its terminal
        closes first); the shell's exit code (None: the program never came)."""
        try:
            conn = self._accept()
            if conn is None:
                return None
            with conn:
                return _relay(conn, shell, hangup)
        finally:
            self.close()

    def _accept(self) -> socket.socket | None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return None
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
            if uid == os.getuid():
                return conn
            conn.close()  # the folder is private; refused all the same

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _relay(conn: socket.socket, shell: Callable[[int], int], hangup: Callable[[], None]) -> int:
    hello = b""
    while not hello.endswith(b"\n") and len(hello) < 4096:
        chunk = conn.recv(1)
        if not chunk:
            break
        hello += chunk
    master, slave = os.openpty()
    try:
        size = json.loads(hello or b"{}")
        rows, cols = int(size.get("rows") or 24), int(size.get("cols") or 80)
    except (ValueError, AttributeError):
        rows, cols = 24, 80
    termios.tcsetwinsize(slave, (rows, cols))
    done = threading.Event()
    pump = threading.Thread(target=_pump, args=(conn, master, done, hangup), name="dap-shell-relay", daemon=True)
    pump.start()
    code = 255
    try:
        code = shell(slave)
    except Exception as e:  # noqa: BLE001 - said in the terminal, the session goes on
        os.write(master, f"\r\nworkbench: {e}\r\n".encode())
        raise
    finally:
        os.close(slave)
        done.set()
        pump.join(5)
        os.close(master)
        try:
            conn.sendall(f"\r\n[exit code {code}]\r\n".encode())
        except OSError:
            pass
    return code


def _pump(conn: socket.socket, master: int, done: threading.Event, hangup: Callable[[], None]) -> None:
    """Copy between the socket and the pty until the shell has ended and its output is drained; a terminal
    that closes first ends the shell."""
    cfd = conn.fileno()
    while True:
        ready, _, _ = select.select([cfd, master], [], [], 0.1)
        if not ready and done.is_set():
            return
        try:
            if master in ready:
                data = os.read(master, 65536)
                if not data:
                    return
                conn.sendall(data)
            if cfd in ready:
                data = conn.recv(65536)
                if not data:
                    break
                os.write(master, data)
        except OSError:
            break
    if not done.is_set():
        hangup()
