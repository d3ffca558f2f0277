"""The thin side of the build server: hand a `workbench build` to a resident, pre-imported process.

Python spends ~0.1 s importing the engine before a build can start, longer than a whole cached build
takes. Like buildctl talking to buildkitd, the CLI therefore passes its command line, working directory,
environment and stdio file descriptors to a resident server (workbench.server), which forks a child per
build; the child runs exactly what the CLI would have run, on the CLI's own stdin/stdout/stderr, and its
exit status comes back here. Signals sent to the CLI (Ctrl-C, SIGTERM, window resizes) are forwarded to
the child; if the CLI dies, the child notices the closed socket and dies too. A build on a BuildKit daemon
(--addr, $BUILDKIT_HOST) goes the same way: the child has the CLI's working directory, environment and stdio,
so the session it serves the daemon reads the same files, secrets and ssh agent the CLI would have.

When no server answers, the CLI builds in-process as before and starts a server in the background for
the next build. `WORKBENCH_SERVER=0` turns all of this off.

Only built-in modules are imported here (no `socket`, `signal`, `json`: each pulls in enum or re), so that
handing a build over costs little more than the interpreter's own start. Messages are length-prefixed
`marshal` data; the socket is private to the user (0700 folder, 0600 socket), and neither side uses a folder
that is not (see `safe_dir`).
"""

from __future__ import annotations

import _signal
import _socket
import os
import sys

from workbench.wire import recv_message, send_message

TYPE_CHECKING = False  # not `from typing import ...`: typing costs more to import than this whole module
if TYPE_CHECKING:
    from typing import Any, NoReturn

_FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGWINCH)
__all__ = ["code_stamp", "connect", "enabled", "exit_now", "private_dir", "run_via_server", "safe_dir", "socket_path"]


def socket_path() -> str:
    """`$WORKBENCH_SERVER_SOCKET`, else `server.sock` in this user's runtime dir (workbench.xdg.runtime_dir:
    `$XDG_RUNTIME_DIR/workbench`, or /tmp/workbench-UID)."""
    from workbench.xdg import runtime_dir

    if path := os.environ.get("WORKBENCH_SERVER_SOCKET"):
        return path
    return os.path.join(runtime_dir(), "server.sock")


def code_stamp() -> str:
    """Identifies the code a server runs: the interpreter, the package path and its newest source file.

    A server whose stamp differs from the CLI's (the code was edited or upgraded) refuses and exits, so a
    build never runs stale code.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    newest, count = 0, 0
    stack = [package]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        stack.append(entry.path)
                elif entry.name.endswith(".py"):
                    count += 1
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime_ns)
    return f"{sys.executable}:{package}:{count}:{newest}"


def enabled() -> bool:
    return os.environ.get("WORKBENCH_SERVER", "1") not in ("0", "false", "no", "off")


def connect(path: str) -> Any:
    """A connected socket to the server at `path`; OSError when none listens."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def run_via_server(argv: list[str]) -> int | None:
    """Run `argv` in a server's child; None when no usable server answered (then build in-process)."""
    path = socket_path()
    if not safe_dir(os.path.dirname(path)):
        return None
    try:
        sock = connect(path)
    except OSError:
        _start_server(path)
        return None
    try:
        try:
            request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": _umask(),
                       "stamp": code_stamp()}
            send_message(sock, request, [0, 1, 2])
            reply, _ = recv_message(sock)
        except (OSError, ValueError):  # nothing has started yet: build in-process instead
            _start_server(path)  # the one that was there may be leaving; a second one steps aside
            return None
        if reply is None or "pid" not in reply:
            if reply is not None and reply.get("stale"):
                _start_server(path)
            return None
        forwarded = _forward_signals(int(reply["pid"]))
        try:
            reply, _ = recv_message(sock)
        except (OSError, ValueError):
            reply = None
    finally:
        sock.close()
    if reply is None:  # the child died without a word: killed, maybe by a signal we passed on
        if forwarded:
            _signal.signal(forwarded[-1], _signal.SIG_DFL)
            os.kill(os.getpid(), forwarded[-1])
        sys.stderr.write("workbench: the build process ended unexpectedly\n")
        return 1
    return int(reply.get("exit", 1))


def exit_now(code: int) -> NoReturn:
    """End this process with `code`, the status of the build a server's child ran: what was written is flushed,
    and the interpreter's teardown, a good part of this process's short life, is skipped (nothing here holds
    anything to release: no files of its own, no threads, no atexit work)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing more can reach it
            pass
    os._exit(code & 0xFF)


def safe_dir(path: str) -> bool:
    """The socket's folder must be ours alone, 0700 (or not exist yet): never talk to another user's server,
    nor through a link someone put in /tmp."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return private_dir(st)


def private_dir(st: os.stat_result) -> bool:
    """A real directory (not a link), owned by us, mode 0700: what the server's folder must be."""
    return st.st_mode & 0o170777 == 0o040700 and st.st_uid == os.geteuid()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _forward_signals(child: int) -> list[int]:
    """Pass the signals this process gets on to the build; returns the (growing) list of those passed."""
    passed: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if signum != _signal.SIGWINCH:
            passed.append(signum)
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in _FORWARDED:
        _signal.signal(sig, forward)
    return passed


def _start_server(path: str) -> None:
    """Start a server in the background for the next build; never delays this one."""
    import subprocess

    try:
        # -P and cwd=/: a `workbench/` folder in the current directory (a cloned repository's) must never be
        # imported in place of ours, in a process that runs as root and gets every build's environment
        subprocess.Popen([sys.executable, "-P", "-m", "workbench.server", "--socket", path], cwd="/",
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, close_fds=True)
    except OSError:
        pass
