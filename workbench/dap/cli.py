"""`workbench dap`: a Debug Adapter Protocol server on stdin/stdout, or `--listen` (unix:PATH or loopback TCP)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

    from workbench.engine import Engine


def add_parser(sub: Any) -> None:
    d = sub.add_parser("dap", help="a Debug Adapter Protocol server (for VS Code, nvim-dap, …) over the debugger")
    d.add_argument("--listen", metavar="unix:PATH|HOST:PORT",
                   help="accept DAP clients instead of stdin/stdout: on a unix socket (mode 0600; its folder must "
                        "be yours and writable by no one else) — the safer form, which no other user and no "
                        "build container can reach — or over TCP on a loopback address (port 0: any; printed on "
                        "stderr), where only a peer of this uid in this mount namespace is served")
    d.add_argument("--connection-fd", type=int, help=argparse.SUPPRESS)  # a rootless listener's session child


def _rootless() -> bool:
    return os.geteuid() != 0


def main_dap(args: argparse.Namespace, engine: Engine) -> int:
    if args.connection_fd is not None:
        return _one_connection(args.connection_fd, engine)
    if args.listen:
        from workbench.dap.listen import ListenError, parse_listen

        try:
            where = parse_listen(args.listen)
        except ListenError as e:
            print(f"workbench dap: error: {e}", file=sys.stderr)
            return 2
        return _listen(where, engine)
    return _stdio(engine)


def _stdio(engine: Engine) -> int:
    """DAP on fds 0/1; the process's own fds 0/1 become /dev/null and stderr, so that nothing else (a
    print, a child process) can read a frame or write between them."""
    from workbench.dap.adapter import serve
    from workbench.dap.protocol import bounded_write

    dap_in, dap_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    _on_signals(_end)
    if not os.isatty(dap_out):  # an editor's pipe, whose write end only we hold (never a shell's terminal)
        os.set_blocking(dap_out, False)
    send = bounded_write(dap_out, lambda view: os.write(dap_out, view))

    def write(data: bytes) -> None:
        try:
            send(data)
        except TimeoutError as e:
            print(f"workbench dap: {e}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)  # out of the blocking read: the session ends and cleans up
            raise

    serve(_interruptible(dap_in, lambda: os.read(dap_in, 1 << 16)), write, engine)
    return 0


def _interruptible(fd: int, read: Callable[[], Any]) -> Callable[[], Any]:
    """`read` of `fd`, called only once `fd` is ready, so that a SIGTERM/SIGHUP ends the wait: a signal the kernel
    gives to another thread (the writer's, a build's) does not interrupt a read blocked in the main thread, where
    Python runs its handler; the wake-up fd does, and the handler then raises. Main thread only."""
    import select

    wake_r, wake_w = os.pipe()
    for end in (wake_r, wake_w):
        os.set_blocking(end, False)
        os.set_inheritable(end, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

    def wait_then_read() -> Any:
        while True:
            ready, _, _ = select.select([fd, wake_r], [], [])
            if wake_r in ready:
                try:
                    os.read(wake_r, 512)  # the handler runs as this returns to the interpreter
                except BlockingIOError:
                    pass
            if fd in ready:
                return read()

    return wait_then_read


def _end(signum: int, _frame: object) -> None:
    _on_signals(signal.SIG_IGN)  # a second signal must not abandon the cleanup
    raise SystemExit(128 + signum)  # out of the blocking read / accept: the sessions abort their builds


def _on_signals(handler: Any) -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def _listen(where: tuple[str, int] | Path, engine: Engine) -> int:
    import socket
    import threading

    from workbench.dap.listen import bind_unix, refusal

    if isinstance(where, Path):
        try:
            server = bind_unix(where)
        except OSError as e:
            print(f"workbench dap: error: cannot listen on {where}: {e.strerror}", file=sys.stderr)
            return 1
        shown = f"unix:{where}"
    else:
        host, port = where
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = socket.socket(family, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind((host, port))
        except OSError as e:
            server.close()
            print(f"workbench dap: error: cannot listen on {host}:{port}: {e.strerror}", file=sys.stderr)
            return 1
        bound = server.getsockname()
        shown = (f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]) + f":{bound[1]}"
    server.listen(4)
    ours = os.stat(where).st_ino if isinstance(where, Path) else None
    print(f"workbench dap: listening on {shown}", file=sys.stderr, flush=True)

    live: set[Any] = set()
    children: list[Any] = []
    _on_signals(_end)
    accept = _interruptible(server.fileno(), server.accept)
    try:
        while True:
            conn, _ = accept()
            why = refusal(conn)
            if why is not None:
                print(f"workbench dap: refused a connection: {why}", file=sys.stderr, flush=True)
                conn.close()
                continue
            if _rootless():
                children[:] = [c for c in children if c.poll() is None]
                children.append(_session_child(conn))
                conn.close()
            else:
                threading.Thread(target=_serve_connection, args=(conn, engine, live), name="dap-session",
                                 daemon=True).start()
    except KeyboardInterrupt:
        return 130
    finally:
        _on_signals(signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.close()
        if ours is not None and isinstance(where, Path):
            _remove_socket(where, ours)
        for running in list(live):
            running.close()  # their builds aborted and cleaned up before the process ends
        for child in children:
            if child.poll() is None:
                child.terminate()  # it aborts its build and cleans up, as on our own SIGTERM
        for child in children:
            child.wait()


def _serve_connection(conn: socket.socket, engine: Engine, live: set[Any] | None = None,
                      interruptible: bool = False) -> None:
    """One DAP session on a connected socket."""
    import socket

    from workbench.dap.adapter import serve
    from workbench.dap.protocol import bounded_write

    send = bounded_write(conn.fileno(), lambda view: conn.send(view, socket.MSG_DONTWAIT))

    def write(data: bytes) -> None:
        try:
            send(data)
        except TimeoutError:
            conn.shutdown(socket.SHUT_RDWR)  # the reader sees the end: the session aborts and cleans up
            raise

    def read() -> bytes:
        return conn.recv(1 << 16)

    with conn:
        serve(_interruptible(conn.fileno(), read) if interruptible else read, write, engine, live=live)


def _session_child(conn: socket.socket) -> Any:
    """Rootless: a connection checked here, outside the user namespace (where this user's processes, and
    those of its builds' containers, can be looked at), is served by a child that enters the namespace the
    builds need; a process with threads cannot enter one itself."""
    import subprocess

    fd = conn.fileno()
    return subprocess.Popen([sys.executable, "-m", "workbench.cli", "dap", "--connection-fd", str(fd)],
                            pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def _one_connection(fd: int, engine: Engine) -> int:
    """Serve the one session on the connected socket `fd` (a rootless listener's child)."""
    import socket

    _on_signals(_end)
    try:
        conn = socket.socket(fileno=fd)
    except OSError as e:
        print(f"workbench dap: error: --connection-fd {fd}: {e.strerror}", file=sys.stderr)
        return 2
    _serve_connection(conn, engine, interruptible=True)
    return 0


def _remove_socket(path: Path, inode: int) -> None:
    """Remove our socket file, not one another server has put there since."""
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass
