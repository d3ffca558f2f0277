"""The build server's messages: length-prefixed `marshal` dicts on a Unix socket, with descriptors passed
along (SCM_RIGHTS). Used by the CLI (workbench.client), the server, and a forked build asking the server's
context memory (workbench.solver.context_memo).

Only built-in modules are imported here: the CLI hands a build over before anything else is loaded.
"""

from __future__ import annotations

import _socket
import marshal
import os
import sys

TYPE_CHECKING = False  # not `from typing import ...`: typing costs more to import than this whole module
if TYPE_CHECKING:
    from typing import Any

_INT = 4  # sizeof(int): how SCM_RIGHTS carries descriptors


def send_message(sock: Any, payload: dict[str, Any], fds: list[int] | None = None) -> None:
    """One length-prefixed marshal message, with `fds` passed along (SCM_RIGHTS) if given."""
    data = marshal.dumps(payload)
    frame = len(data).to_bytes(4, "big") + data
    if fds:
        rights = b"".join(fd.to_bytes(_INT, sys.byteorder, signed=True) for fd in fds)
        sent = sock.sendmsg([frame], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
        frame = frame[sent:]
    while frame:
        frame = frame[sock.send(frame):]


def recv_message(sock: Any, with_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """One message (and up to `with_fds` descriptors); (None, …) at EOF, ValueError for one that cannot be read."""
    fds: list[int] = []
    if with_fds:
        head, ancdata, _flags, _addr = sock.recvmsg(4, _socket.CMSG_SPACE(with_fds * _INT))
        for level, kind, data in ancdata:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                usable = len(data) - len(data) % _INT
                fds += [int.from_bytes(data[i:i + _INT], sys.byteorder, signed=True) for i in range(0, usable, _INT)]
    else:
        head = sock.recv(4)
    while head and len(head) < 4:
        more = sock.recv(4 - len(head))
        if not more:
            return None, fds
        head += more
    if len(head) < 4:
        return None, fds
    size = int.from_bytes(head, "big")
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            return None, fds
        body += chunk
    try:
        message = marshal.loads(body)
    except (EOFError, ValueError, TypeError):
        message = None
    if not isinstance(message, dict):
        for fd in fds:
            os.close(fd)
        raise ValueError("not a workbench server message (another version?)")
    return message, fds
