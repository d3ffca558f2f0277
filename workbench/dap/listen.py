"""`--listen HOST:PORT`: loopback addresses only, and each connection's peer must be this process's user.

Any local user can connect to a loopback port; a session builds as this user (root: `--allow
security.insecure`, commands run by `evaluate`), so the peer socket's owner is looked up in /proc/net/tcp
(or tcp6) by the connection's address pair, and a peer of another uid is closed without being served.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path

LOOPBACK_NAMES = {"localhost": "127.0.0.1"}


class ListenError(Exception):
    """A --listen value that is not a loopback HOST:PORT."""


def parse_listen(value: str) -> tuple[str, int]:
    """(host, port) of a loopback `HOST:PORT` / `[::1]:PORT`; ListenError otherwise."""
    host, colon, port = value.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ListenError(f"--listen {value!r}: expected HOST:PORT (e.g. 127.0.0.1:4711)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    host = LOOPBACK_NAMES.get(host.lower(), host)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is None or not ip.is_loopback:
        raise ListenError(f"--listen {value!r}: only a loopback address is accepted (127.0.0.1, ::1, "
                          "localhost): a DAP session runs builds and commands as this user")
    return str(ip), int(port)


def _hex_addr(ip: str, port: int) -> str:
    """An address as /proc/net/tcp{,6} writes it: the address's 32-bit words in host order, then the port."""
    packed = ipaddress.ip_address(ip).packed
    words = struct.unpack(f"={len(packed) // 4}I", packed)  # /proc prints each word as a native int
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def _proc_addr(ip: str, port: int) -> set[str]:
    """The spellings the peer's local address can have in /proc (IPv4 in tcp6 as ::ffff:a.b.c.d too)."""
    addr = ipaddress.ip_address(ip)
    out = {_hex_addr(ip, port)}
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        out.add(_hex_addr(str(addr.ipv4_mapped), port))
    elif isinstance(addr, ipaddress.IPv4Address):
        out.add(_hex_addr(f"::ffff:{ip}", port))
    return out


def peer_uid(conn: socket.socket, proc: Path = Path("/proc/net")) -> int | None:
    """The uid owning the other end of a loopback TCP connection, or None when it is not found."""
    local = conn.getsockname()
    peer = conn.getpeername()
    peer_local = _proc_addr(peer[0], peer[1])
    peer_remote = _proc_addr(local[0], local[1])
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and fields[1].upper() in peer_local and fields[2].upper() in peer_remote:
                return int(fields[7])
    return None
