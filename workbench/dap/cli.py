"""`workbench dap`: a Debug Adapter Protocol server on stdin/stdout, or `--listen HOST:PORT` (loopback)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

    from workbench.engine import Engine


def add_parser(sub: Any) -> None:
    d = sub.add_parser("dap", help="a Debug Adapter Protocol server (for VS Code, nvim-dap, …) over the debugger")
    d.add_argument("--listen", metavar="HOST:PORT",
                   help="accept DAP clients over TCP on a loopback address (port 0: any; printed on stderr) "
                        "instead of stdin/stdout")


def main_dap(args: argparse.Namespace, engine: Engine) -> int:
    if args.listen:
        from workbench.dap.listen import ListenError, parse_listen

        try:
            host, port = parse_listen(args.listen)
        except ListenError as e:
            print(f"workbench dap: error: {e}", file=sys.stderr)
            return 2
        return _listen(host, port, engine)
    return _stdio(engine)


def _stdio(engine: Engine) -> int:
    """DAP on fds 0/1; the process's own fds 0/1 become /dev/null and stderr, so that nothing else (a
    print, a child process) can read a frame or write between them."""
    from workbench.dap.adapter import serve

    dap_in, dap_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    signal.signal(signal.SIGTERM, _end)
    signal.signal(signal.SIGHUP, _end)

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(dap_out, view):]

    serve(lambda: os.read(dap_in, 1 << 16), write, engine)
    return 0


def _end(_signum: int, _frame: object) -> None:
    raise SystemExit(143)  # out of the blocking read / accept: the sessions abort their builds and clean up


def _listen(host: str, port: int, engine: Engine) -> int:
    import socket
    import threading

    from workbench.dap.adapter import serve
    from workbench.dap.listen import peer_uid

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind((host, port))
    except OSError as e:
        print(f"workbench dap: error: cannot listen on {host}:{port}: {e.strerror}", file=sys.stderr)
        return 1
    server.listen(4)
    bound = server.getsockname()
    shown = f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]
    print(f"workbench dap: listening on {shown}:{bound[1]}", file=sys.stderr, flush=True)

    live: set[Any] = set()

    def session(conn: socket.socket) -> None:
        with conn:
            serve(lambda: conn.recv(1 << 16), conn.sendall, engine, live=live)

    signal.signal(signal.SIGTERM, _end)
    try:
        while True:
            conn, addr = server.accept()
            uid = peer_uid(conn)
            if uid != os.getuid():
                who = "an unknown user" if uid is None else f"uid {uid}"
                print(f"workbench dap: refused a connection from {addr[0]}:{addr[1]}: its peer is {who}, "
                      f"not this server's uid {os.getuid()}", file=sys.stderr, flush=True)
                conn.close()
                continue
            threading.Thread(target=session, args=(conn,), name="dap-session", daemon=True).start()
    except KeyboardInterrupt:
        return 130
    finally:
        server.close()
        for running in list(live):
            running.close()  # their builds aborted and cleaned up before the process ends
