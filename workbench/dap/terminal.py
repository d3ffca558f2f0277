"""`exec` through the editor's terminal: the adapter serves a unix socket (mode 0600, in a private 0700
folder) and asks the client (`runInTerminal`) to run `workbench.dap.attach` on it; that program sends its
terminal's size, then relays its raw terminal to a pty on which the shell runs in the paused step.
"""

from __future__ import annotations

import json
import os
import secrets
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

from workbench.reaper import ensure_reaper
from workbench.snapshot.scratch import stale_entry

ACCEPT_TIMEOUT = 60.0
"""Seconds the editor has to start the attach program in its terminal."""
HELLO_TIMEOUT = 10.0
"""Seconds the attach program has to send its terminal's size once connected."""
STALL_S = 30.0
"""Seconds the attach program may read nothing of the shell's output before it is dropped."""
PREFIX = "workbench-dap-"
MAX_SOCKET_PATH = 107


def _private_dir(tmp: Path | None) -> Path:
    """A new 0700 folder for the socket: in the state root's per-process tmp (`ROOT/tmp/<pid>-dap-…`, which
    the reaper removes when this process dies, even by SIGKILL) when one is given and the socket's path
    fits; else `workbench-dap-<pid>-…` in $XDG_RUNTIME_DIR or /tmp, where ones of dead processes are swept."""
    if tmp is not None and len(os.fsencode(tmp)) + 40 <= MAX_SOCKET_PATH and tmp.is_dir():
        folder = tmp / f"{os.getpid()}-dap-{secrets.token_hex(4)}"
        os.mkdir(folder, 0o700)
        ensure_reaper(tmp)
        return folder
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = runtime if runtime and os.path.isdir(runtime) and os.stat(runtime).st_uid == os.getuid() else None
    base_dir = Path(base or tempfile.gettempdir())
    sweep_stale(base_dir)
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base_dir))  # mode 0700


def sweep_stale(base: Path) -> None:
    """Remove this user's `workbench-dap-<pid>-…` folders whose process is gone (killed before it could)."""
    try:
        found = [e for e in os.scandir(base) if e.name.startswith(PREFIX)]
    except OSError:
        return
    for entry in found:
        try:
            mine = entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_uid == os.getuid()
        except OSError:
            continue
        if mine and stale_entry(Path(entry.name[len(PREFIX):])):
            shutil.rmtree(entry.path, ignore_errors=True)


class TerminalServer:
    """One shell's socket: `argv` is what the client runs; `run(shell)` waits for it, then relays. `tmp`:
    the state root's tmp folder, where the socket's folder goes when given."""

    def __init__(self, tmp: Path | None = None) -> None:
        self.dir = _private_dir(tmp)
        self.path = self.dir / "shell.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(str(self.path))
            os.chmod(self.path, 0o600)
            self.sock.listen(1)
        except BaseException:
            self.close()
            raise
        finally:
            os.umask(old)
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


def _hello(conn: socket.socket) -> tuple[int, int]:
    """The attach program's terminal size (rows, cols), from its first line; 24x80 when it sends none,
    or nothing usable, within HELLO_TIMEOUT seconds."""
    hello = b""
    conn.settimeout(HELLO_TIMEOUT)
    try:
        while not hello.endswith(b"\n") and len(hello) < 4096:
            chunk = conn.recv(1)
            if not chunk:
                break
            hello += chunk
    except OSError:
        pass
    finally:
        conn.settimeout(None)
    try:
        size = json.loads(hello or b"{}")
        rows, cols = size.get("rows") or 24, size.get("cols") or 80
    except (ValueError, AttributeError, RecursionError):
        return 24, 80
    if not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 0xFFFF for n in (rows, cols)):
        return 24, 80  # -1, 1e400, "x": a terminal size is a positive 16-bit number
    return rows, cols


def _relay(conn: socket.socket, shell: Callable[[int], int], hangup: Callable[[], None]) -> int:
    rows, cols = _hello(conn)
    master, slave = os.openpty()
    try:
        termios.tcsetwinsize(slave, (rows, cols))
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    done = threading.Event()
    pump = threading.Thread(target=_pump, args=(conn, master, done, hangup), name="dap-shell-relay", daemon=True)
    code = 255
    try:
        conn.settimeout(STALL_S)  # a terminal that reads nothing never holds the relay (select says when to recv)
        pump.start()
        code = shell(slave)
    except Exception as e:  # noqa: BLE001 - said in the terminal, the session goes on
        try:
            os.write(master, f"\r\nworkbench: {e}\r\n".encode())
        except OSError:
            pass
        raise
    finally:
        os.close(slave)
        done.set()
        if pump.is_alive():
            pump.join(STALL_S + 5)  # it ends once the output is drained or the terminal is dropped
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
