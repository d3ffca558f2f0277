"""The thin side of the build server: hand a `workbench build` to a resident, pre-imported process.

Python spends ~0.1 s importing the engine before a build can start, longer than a whole cached build
takes. Like buildctl talking to buildkitd, the CLI therefore passes its command line, working directory,
environment and stdio file descriptors to a resident server (workbench.server), which forks a child per
build; the child runs exactly what the CLI would have run, on the CLI's own stdin/stdout/stderr, and its
exit status comes back here. Signals sent to the CLI (Ctrl-C, SIGTERM, window resizes) are forwarded to
the child; if the CLI dies, the child notices the closed socket and dies too.

When no server answers, the CLI builds in-process as before and starts a server in the background for
the next build. `WORKBENCH_SERVER=0` turns all of this off. Only the standard library's cheapest modules
are imported here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH)


def socket_path() -> str:
    """`$WORKBENCH_SERVER_SOCKET`, else one socket per user under $XDG_RUNTIME_DIR (or /tmp)."""
    if path := os.environ.get("WORKBENCH_SERVER_SOCKET"):
        return path
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return os.path.join(base, f"workbench-{os.getuid()}", "server.sock")


def code_stamp() -> str:
    """Identifies the code a server runs: the interpreter and the newest source file of the package.

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


def send_message(sock: socket.socket, payload: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(payload).encode()
    frame = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(sock, [frame], fds)
    else:
        sock.sendall(frame)


def recv_message(sock: socket.socket, with_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One length-prefixed JSON message (and up to `with_fds` descriptors); (None, []) on EOF."""
    fds: list[int] = []
    if with_fds:
        head, fds, _flags, _addr = socket.recv_fds(sock, 4, with_fds)
    else:
        head = sock.recv(4)
    while head and len(head) < 4:
        more = sock.recv(4 - len(head))
        if not more:
            return None, fds
        head += more
    if len(head) < 4:
        return None, fds
    (size,) = struct.unpack("!I", head)
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            return None, fds
        body += chunk
    return json.loads(body), fds


def run_via_server(argv: list[str]) -> int | None:
    """Run `argv` in a server's child; None when no usable server answered (then build in-process)."""
    path = socket_path()
    if not _safe_dir(os.path.dirname(path)):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        _start_server(path)
        return None
    with sock:
        try:
            request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": _umask(),
                       "stamp": code_stamp()}
            send_message(sock, request, [0, 1, 2])
            reply, _ = recv_message(sock)
        except (OSError, ValueError):  # nothing has started yet: build in-process instead
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
    if reply is None:  # the child died without a word: killed, maybe by a signal we passed on
        if forwarded:
            signal.signal(forwarded[-1], signal.SIG_DFL)
            os.kill(os.getpid(), forwarded[-1])
        print("workbench: the build process ended unexpectedly", file=sys.stderr)
        return 1
    return int(reply.get("exit", 1))


def _safe_dir(path: str) -> bool:
    """The socket's folder must be ours alone (or not exist yet): never talk to another user's server."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _forward_signals(child: int) -> list[int]:
    """Pass the signals this process gets on to the build; returns the (growing) list of those passed."""
    passed: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if signum != signal.SIGWINCH:
            passed.append(signum)
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    return passed


def _start_server(path: str) -> None:
    """Start a server in the background for the next build; never delays this one."""
    import subprocess

    try:
        subprocess.Popen([sys.executable, "-m", "workbench.server", "--socket", path],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, close_fds=True)
    except OSError:
        pass
