"""The program an editor runs in its terminal for `exec` (DAP `runInTerminal`): it connects its terminal to a
shell in the paused step, over the adapter's private unix socket. The terminal is put in raw mode and
restored on every way out."""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import termios
import tty


def main(path: str) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        print(f"workbench: cannot reach the debug adapter's shell socket {path}: {e.strerror}", file=sys.stderr)
        return 1
    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    try:
        rows, cols = os.get_terminal_size(fd_out).lines, os.get_terminal_size(fd_out).columns
    except OSError:
        rows, cols = 24, 80
    sock.sendall(json.dumps({"rows": rows, "cols": cols}).encode() + b"\n")
    saved = termios.tcgetattr(fd_in) if os.isatty(fd_in) else None
    try:
        if saved is not None:
            tty.setraw(fd_in)
        _relay(sock, fd_in, fd_out)
    finally:
        if saved is not None:
            termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        sock.close()
    return 0


def _relay(sock: socket.socket, fd_in: int, fd_out: int) -> None:
    sfd = sock.fileno()
    inputs = [sfd, fd_in]
    while True:
        ready, _, _ = select.select(inputs, [], [])
        if sfd in ready:
            data = sock.recv(65536)
            if not data:
                return
            os.write(fd_out, data)
        if fd_in in ready:
            data = os.read(fd_in, 65536)
            if not data:
                inputs.remove(fd_in)  # no more input: still show the shell's output until it ends
                sock.shutdown(socket.SHUT_WR)
                continue
            sock.sendall(data)
