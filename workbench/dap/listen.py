"""`--listen HOST:PORT` (loopback only) or `--listen unix:PATH`: each connection's peer must be this
process's user, in this process's mount namespace.

Any local user can connect to a loopback port, and so can a build's RUN step (containers share the host
network and run as uid 0); a session builds as this user (root: `--allow security.insecure`, commands run
by `evaluate`, files read by `launch`). So a TCP peer counts only when /proc/net/tcp{,6} shows its socket
ESTABLISHED, owned by our uid, with an inode that processes of our mount namespace hold (a build container
has its own); a unix peer's uid comes from SO_PEERCRED. Anything not proven is refused. A unix socket in a
private folder is the safer form: no other user and no container can even reach it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import struct
from pathlib import Path

ESTABLISHED = "01"

LOOPBACK_NAMES = {"localhost": "127.0.0.1"}


class ListenError(Exception):
    """A --listen value that is not a loopback HOST:PORT nor a usable unix:PATH."""


def parse_listen(value: str) -> tuple[str, int] | Path:
    """(host, port) of a loopback `HOST:PORT` / `[::1]:PORT`, or the path of `unix:PATH`; ListenError
    otherwise."""
    if value.startswith("unix:"):
        return unix_path(value[len("unix:"):])
    host, colon, port = value.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ListenError(f"--listen {value!r}: expected HOST:PORT (e.g. 127.0.0.1:4711) or unix:PATH")
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


def unix_path(text: str) -> Path:
    """A unix socket path to listen on: its folder must be this user's and writable by no one else, and
    the path absent or an old socket (a file of another kind is never replaced)."""
    if not text:
        raise ListenError("--listen unix:: expected unix:PATH (e.g. unix:$XDG_RUNTIME_DIR/workbench-dap.sock)")
    path = Path(os.path.abspath(text))
    if len(os.fsencode(path)) > 107:
        raise ListenError(f"--listen unix:{text}: the path is longer than a unix socket's 107 bytes")
    try:
        folder = os.stat(path.parent)
    except OSError as e:
        raise ListenError(f"--listen unix:{text}: folder {path.parent}: {e.strerror}") from None
    if not stat.S_ISDIR(folder.st_mode) or folder.st_uid != os.getuid() or folder.st_mode & 0o022:
        raise ListenError(f"--listen unix:{text}: folder {path.parent} must be a folder of uid {os.getuid()} "
                          f"that no group or other user can write (it is mode {stat.filemode(folder.st_mode)}, "
                          f"uid {folder.st_uid})")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"--listen unix:{text}: {path} exists and is not a socket; not replaced")
    return path


def bind_unix(path: Path) -> socket.socket:
    """A listening unix socket at `path`, mode 0600 from its creation; an old socket there is replaced
    only when nothing answers on it (OSError: in use)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        if os.path.lexists(path) and stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    else:
        raise OSError(98, f"another server answers on {path}")
    finally:
        probe.close()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(str(path))
    except OSError:
        server.close()
        raise
    finally:
        os.umask(old)
    return server


def unix_peer(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of a unix socket's peer (SO_PEERCRED)."""
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid


def refusal(conn: socket.socket, proc: Path = Path("/proc")) -> str | None:
    """Why the peer of `conn` (TCP on loopback, or unix) is not served, or None when it is this user in
    this mount namespace."""
    me = os.getuid()
    if conn.family == socket.AF_UNIX:
        pid, uid = unix_peer(conn)
        if uid != me:
            return f"its peer is uid {uid}, not this server's uid {me}"
        return None if _same_mounts([pid], proc) else f"its peer (pid {pid}) is in another mount namespace"
    found = peer_socket(conn, proc / "net")
    if found is None:
        return "its peer socket is not an established connection of a live process"
    uid, inode = found
    if uid != me:
        return f"its peer is uid {uid}, not this server's uid {me}"
    holders = socket_holders(inode, proc)
    if not holders:
        return "no process of this user holds its peer socket"
    if not _same_mounts(holders, proc):
        return "its peer is in another mount namespace (a build's container?)"
    return None


def peer_socket(conn: socket.socket, proc: Path = Path("/proc/net")) -> tuple[int, int] | None:
    """(uid, inode) of the other end of a loopback TCP connection: only an ESTABLISHED entry with an inode
    counts (a socket its process closed lingers in FIN_WAIT2 with uid 0 and inode 0); None otherwise."""
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
            if len(fields) > 9 and fields[1].upper() in peer_local and fields[2].upper() in peer_remote \
                    and fields[3] == ESTABLISHED and fields[9] != "0":
                return int(fields[7]), int(fields[9])
    return None


def socket_holders(inode: int, proc: Path = Path("/proc")) -> list[int]:
    """The pids with a file descriptor on socket `inode` (a rootless listener stays outside its user namespace,
    so its user's processes, and those of its builds' containers, can all be looked at)."""
    want = f"socket:[{inode}]"
    pids = []
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"{entry.path}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) == want:
                        pids.append(int(entry.name))
                        break
                except OSError:
                    continue
    return pids


def _same_mounts(pids: list[int], proc: Path) -> bool:
    """Whether every pid shares this process's mount namespace (an unreadable one does not)."""
    try:
        mine = os.readlink(proc / "self/ns/mnt")
        return all(os.readlink(proc / str(pid) / "ns/mnt") == mine for pid in pids)
    except OSError:
        return False
