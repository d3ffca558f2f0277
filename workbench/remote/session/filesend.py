"""FileSend.DiffCopy: the daemon hands the build's output to us (BuildKit's exporters call it).

`--output type=local,dest=DIR`: the daemon is fsutil's *sender* and we are its receiver (fsutil `receive.go`
with `Merge`, as buildctl runs it). The whole listing is read and checked first (clean relative paths in fsutil's
walk order, every parent a directory sent before it, hardlinks only to regular files sent earlier, no entry that
names DIR itself, at most MAX_ENTRIES entries and MAX_LISTING_BYTES of
memory held, estimated), so a hostile stream is refused
before anything is written. Then the tree is made under DIR through directory fds opened O_NOFOLLOW (never
through a symlink, whether the stream or an earlier DIR made it), the data of the regular files is requested by
id (a few at a time, to bound open files; a file that sends more than its STAT's size is refused), and modes and
mtimes are applied last. Entries already in DIR that the stream does not name are left, as buildctl leaves them;
DIR itself is never replaced, chmodded or re-timed.

Where we differ from buildctl: fsutil applies the stream's mode as sent (setuid/setgid included, umask
ignored), makes any device node and sets every xattr. The stream comes from a daemon, which may be remote,
shared or compromised, and DEST is often the user's own directory written by a user who may be root (`sudo
workbench build`); keeping modes would let the daemon plant a setuid-root or capability-bearing binary, a
readable /dev/mem or a world-writable directory there. So, whatever the stream says: S_ISUID and S_ISGID are
cleared, S_ISVTX is kept only on directories, the process umask is applied to every mode (as `tar` does for a
non-root user), only `user.*` xattrs are set (`security.*`, `trusted.*`, `system.*` are dropped), owners are
ours (the stream's uid/gid are ignored), and a device node is refused with one line unless the output opts in
(`LocalOutput(devices=True)`, `--output type=local,dest=DIR,devices=true`). FIFOs are made (mode as above).

`type=tar|oci|docker,dest=FILE|-`: the daemon streams raw BytesMessage chunks; they go to a temp file renamed
over FILE once the stream ended cleanly (a cut-off build leaves nothing), or to stdout.

The gRPC metadata of both is the same (`buildkit-attachable-exporter-id`, plus `exporter-md-*` for oci/docker
only), so the output the build asked for decides which one applies.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat as st
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workbench.fsutil.destination import DestinationError, atomic_file, write_all
from workbench.fsutil.paths import DIR_FLAGS, open_beneath, remove_leaf
from workbench.remote.session.filesync import (
    MODE_CHAR_DEVICE,
    MODE_DEVICE,
    MODE_DIR,
    MODE_IRREGULAR,
    MODE_NAMED_PIPE,
    MODE_SETGID,
    MODE_SETUID,
    MODE_SOCKET,
    MODE_STICKY,
    MODE_SYMLINK,
    can_request,
)
from workbench.remote.session.h2server import INVALID_ARGUMENT, NOT_FOUND, UNKNOWN, Call, GrpcError, Handler
from workbench.remote.session.proto.filesync_pb2 import BytesMessage
from workbench.remote.session.proto.fsutil_types_pb2 import Packet, Stat

EXPORTER_ID = "buildkit-attachable-exporter-id"
WINDOW = 32  # files whose data is requested at once (each holds an open fd until its last chunk)
# The listing is held whole before anything is written (so a bad entry anywhere writes nothing); these bound
# that memory, counted as each entry's estimated cost in memory, not its serialized size (a parsed upb Stat is
# 4-25x its bytes). Measured RSS per held entry: 554 B for a 121 B STAT with a long path, 1.2 KB for 122 B with
# a link name or one xattr, 5.3 KB for 211 B with 20 xattrs; the estimate below is at or above each. Real
# outputs (a distro rootfs, a big node_modules) are 0.05-1M entries of ~100 bytes: 0.1-1 GiB.
MAX_ENTRIES = 4_000_000
MAX_LISTING_BYTES = 1 << 30  # estimated memory of the held listing
ENTRY_COST = 600  # bytes held per entry besides its fields (upb message, list slot, hardlink set)
RAW_FACTOR = 5  # bytes held per serialized byte of its STAT
XATTR_COST = 256  # bytes held per xattr (a upb map entry)


@dataclass(frozen=True)
class LocalOutput:
    """`--output type=local,dest=DIR`: the tree is written into DIR (created if missing, updated if there).
    `devices`: make the device nodes the stream sends (`devices=true`), instead of refusing them."""

    dest: Path
    devices: bool = False


@dataclass(frozen=True)
class TarOutput:
    """`--output type=tar|oci|docker,dest=FILE`: the archive bytes go to FILE, or to stdout for "-"."""

    dest: str | Path = "-"
    what: str = "--output type=tar"  # names the output in errors


Output = LocalOutput | TarOutput


class StreamError(GrpcError):
    """A listing we refuse; the message says which entry and why."""

    def __init__(self, message: str) -> None:
        super().__init__(INVALID_ARGUMENT, message)


def unix_mode(go: int) -> int:
    """A Go os.FileMode (as fsutil sends it) as st_mode: the type, permissions and setuid/setgid/sticky."""
    out = go & 0o777
    if go & MODE_SETUID:
        out |= st.S_ISUID
    if go & MODE_SETGID:
        out |= st.S_ISGID
    if go & MODE_STICKY:
        out |= st.S_ISVTX
    if go & MODE_DIR:
        return out | st.S_IFDIR
    if go & MODE_SYMLINK:
        return out | st.S_IFLNK
    if go & MODE_DEVICE:
        return out | (st.S_IFCHR if go & MODE_CHAR_DEVICE else st.S_IFBLK)
    if go & MODE_NAMED_PIPE:
        return out | st.S_IFIFO
    return out | st.S_IFREG


def permissions(mode: int, umask: int) -> int:
    """The permission bits we apply for st_mode `mode`: never setuid/setgid, sticky only on a directory, less
    the umask."""
    keep = 0o777 | (st.S_ISVTX if st.S_ISDIR(mode) else 0)
    return mode & keep & ~umask


def process_umask() -> int:
    """The umask, read without changing it (os.umask would, for a moment, for every thread)."""
    try:
        with open("/proc/self/status", encoding="utf-8", errors="replace") as f:  # Name: may be any bytes
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o077)  # no /proc: the moment it is changed, it is the stricter one
    os.umask(old)
    return old


def compare_path(p1: str, p2: str) -> int:
    """fsutil's ComparePath: byte order, except that "/" sorts before every other byte."""
    a, b = p1.encode(), p2.encode()
    for x, y in zip(a, b, strict=False):
        if x == y:
            continue
        if (y != 0x2F and x < y) or x == 0x2F:
            return -1
        return 1
    return len(a) - len(b)


@dataclass
class _Parent:
    dir: str
    last: str = ""


@dataclass
class ListingCheck:
    """fsutil's Validator and Hardlinks checks on the listing, plus the entry types a receiver can make."""

    devices: bool = False  # device nodes allowed (the output's devices=true)
    max_entries: int = MAX_ENTRIES
    max_bytes: int = MAX_LISTING_BYTES
    parents: list[_Parent] = field(default_factory=lambda: [_Parent("")])
    files: set[str] = field(default_factory=set)  # regular files sent so far (hardlink targets)
    entries: int = 0
    held: int = 0  # estimated bytes of memory the STATs so far hold

    def count(self, size: int, xattrs: int = 0) -> None:
        """One more STAT of `size` serialized bytes with `xattrs` xattrs held; refused past the bounds."""
        self.entries += 1
        self.held += ENTRY_COST + RAW_FACTOR * size + XATTR_COST * xattrs
        if self.entries > self.max_entries:
            raise StreamError(f"refusing the output: its listing has more than {self.max_entries} entries")
        if self.held > self.max_bytes:
            bound = f"{self.max_bytes >> 20} MiB" if self.max_bytes >= 1 << 20 else f"{self.max_bytes} bytes"
            raise StreamError(f"refusing the output: its listing would hold more than {bound} of memory")

    def check(self, stat: Stat) -> None:
        p = stat.path
        if p == ".":
            raise StreamError("refusing '.': an entry may not name the destination itself")
        if not p or "\x00" in p or p != posixpath.normpath(p):
            raise StreamError(f"refusing {p!r}: unclean path")
        if p.startswith("/"):
            raise StreamError(f"refusing {p!r}: absolute path")
        if p == ".." or p.startswith("../"):
            raise StreamError(f"refusing {p!r}: it escapes the destination")
        if any(c in ("", ".", "..") for c in p.split("/")):  # normpath rules these out; kept as the invariant
            raise StreamError(f"refusing {p!r}: unclean path")
        d, base = posixpath.split(p)
        i = len(self.parents) - 1
        while i > 0 and compare_path(self.parents[i].dir, d) > 0:
            i -= 1
        del self.parents[i + 1:]
        top = self.parents[-1]
        if d != top.dir:
            raise StreamError(f"refusing {p!r}: {d!r} is not a directory sent before it "
                              f"(out of order, or a path through a link)")
        if top.last >= base:
            raise StreamError(f"refusing {p!r}: changes out of order after {posixpath.join(d, top.last)!r}")
        top.last = base
        mode = stat.mode
        if mode & (MODE_SOCKET | MODE_IRREGULAR):
            raise StreamError(f"refusing {p!r}: unsupported file type (mode {mode:#o})")
        if mode & MODE_DEVICE and not self.devices:
            raise StreamError(f"refusing {p!r}: a device node (the output takes them only with devices=true)")
        if mode & MODE_DIR:
            self.parents.append(_Parent(p))
        elif can_request(mode):
            if stat.linkname:
                if stat.linkname not in self.files:
                    raise StreamError(f"refusing {p!r}: hardlink to {stat.linkname!r}, "
                                      f"which is not a file sent before it")
            else:
                self.files.add(p)


def _open_dir(root: int, rel: str) -> int:
    """An fd of directory `rel` under `root`, no component followed if it is a symlink."""
    return open_beneath(root, rel.split("/") if rel else [])


def _set_xattrs(fd: int, stat: Stat) -> None:
    """The stream's `user.*` xattrs; the others (capabilities, ACLs, SELinux labels, trusted.*) grant rights."""
    for name, value in stat.xattrs.items():
        if not name.startswith("user."):
            continue
        try:
            os.setxattr(fd, name, value)
        except OSError as e:  # best effort, as on a filesystem without them
            if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES):
                raise


class LocalReceiver:
    """One FileSend.DiffCopy of a local output into `dest` (runs in the call's thread)."""

    def __init__(self, call: Call, dest: Path, devices: bool = False) -> None:
        self.call = call
        self.dest = dest
        self.devices = devices
        self.umask = process_umask()
        self.stats: list[Stat] = []
        self.requests: deque[tuple[int, Stat]] = deque()
        self.open: dict[int, tuple[int, Stat]] = {}  # id -> (fd, stat) of a file being received
        self.left: dict[int, int] = {}  # id -> bytes it may still send (its STAT's size)

    def send(self, packet: Packet) -> None:
        self.call.send(packet.SerializeToString())

    def run(self) -> None:
        try:
            self._receive()
        except GrpcError as e:
            self._report(e.message)
            raise
        except OSError as e:
            message = f"writing the output to {self.dest}: {e.strerror or e}" + (f": {e.filename}" if e.filename
                                                                                 else "")
            self._report(message)
            raise GrpcError(UNKNOWN, message) from None
        finally:
            for fd, _ in self.open.values():
                os.close(fd)
            self.open.clear()

    def _report(self, message: str) -> None:
        try:
            self.send(Packet(type=Packet.PACKET_ERR, data=message.encode()))
        except Exception:  # the call is gone already
            pass

    def _receive(self) -> None:
        messages = self.call.messages()
        check = ListingCheck(self.devices, MAX_ENTRIES, MAX_LISTING_BYTES)
        for raw in messages:  # the listing, checked whole before anything is written
            p = self._packet(raw)
            if p.type == Packet.PACKET_STAT:
                if not p.HasField("stat"):
                    break
                check.count(len(raw), len(p.stat.xattrs))
                check.check(p.stat)
                self.stats.append(p.stat)
            elif p.type == Packet.PACKET_DATA:
                raise StreamError(f"invalid file request {p.ID}")
        else:
            raise GrpcError(UNKNOWN, "the output stream ended before its listing did")
        del check
        os.makedirs(self.dest, 0o700, exist_ok=True)
        root = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            dirs = self._make_tree(root)
            self._request_more(root)
            finished = self._maybe_finish(root, dirs, False)
            for raw in messages:
                p = self._packet(raw)
                if p.type == Packet.PACKET_DATA:
                    self._data(root, p)
                    finished = self._maybe_finish(root, dirs, finished)
                elif p.type == Packet.PACKET_FIN and finished:
                    break  # done: the call ends here (the sender does not wait for more)
                else:
                    raise StreamError(f"unexpected packet {Packet.PacketType.Name(p.type)} after the listing")
            if not finished:
                raise GrpcError(UNKNOWN, "the output stream ended before all its files were sent")
        finally:
            os.close(root)

    def _maybe_finish(self, root: int, dirs: list[int], finished: bool) -> bool:
        """Once every file is written: the directories' metadata, then FIN to the sender."""
        if finished or self.open or self.requests:
            return finished
        self._finish_dirs(root, dirs)
        self.send(Packet(type=Packet.PACKET_FIN))
        return True

    def _packet(self, raw: bytes) -> Packet:
        p = Packet.FromString(raw)
        if p.type == Packet.PACKET_ERR:
            raise GrpcError(UNKNOWN, f"error from sender: {p.data.decode(errors='replace')}")
        return p

    def _make_tree(self, root: int) -> list[int]:
        """Makes every entry (regular files empty), queues the files' data requests; returns the directories'
        indexes, for their modes and mtimes at the end."""
        stack: list[tuple[str, int]] = [("", os.dup(root))]
        dirs: list[int] = []
        try:
            for i, stat in enumerate(self.stats):
                d, name = posixpath.split(stat.path)
                if name in ("", ".", ".."):  # the checks refused it: never DEST itself or above it
                    raise StreamError(f"refusing {stat.path!r}: unclean path")
                while stack[-1][0] != d:  # the checks made sure d is on the stack
                    os.close(stack.pop()[1])
                parent = stack[-1][1]
                mode = unix_mode(stat.mode)
                try:
                    old = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
                except FileNotFoundError:
                    old = None
                if old is not None and not (st.S_ISDIR(old) and st.S_ISDIR(mode)):
                    remove_leaf(parent, name)
                if st.S_ISDIR(mode):
                    if old is None or not st.S_ISDIR(old):
                        os.mkdir(name, 0o700, dir_fd=parent)
                    stack.append((stat.path, os.open(name, DIR_FLAGS, dir_fd=parent)))
                    dirs.append(i)
                elif st.S_ISLNK(mode):
                    os.symlink(stat.linkname, name, dir_fd=parent)
                    os.utime(name, ns=(stat.modTime, stat.modTime), dir_fd=parent, follow_symlinks=False)
                elif stat.linkname:  # a hardlink to a file made before it
                    src_dir, src_name = posixpath.split(stat.linkname)
                    src = _open_dir(root, src_dir)
                    try:
                        os.link(src_name, name, src_dir_fd=src, dst_dir_fd=parent, follow_symlinks=False)
                    finally:
                        os.close(src)
                elif st.S_ISREG(mode):
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                                 dir_fd=parent)
                    os.close(fd)
                    self.requests.append((i, stat))
                else:  # a FIFO, or a device the output opted in to
                    dev = os.makedev(stat.devmajor, stat.devminor) if st.S_ISCHR(mode) or st.S_ISBLK(mode) else 0
                    perm = permissions(mode, self.umask)
                    os.mknod(name, st.S_IFMT(mode) | (perm & 0o700), dev, dir_fd=parent)
                    os.chmod(name, perm, dir_fd=parent)
                    os.utime(name, ns=(stat.modTime, stat.modTime), dir_fd=parent)
        finally:
            for _, fd in stack:
                os.close(fd)
        return dirs

    def _request_more(self, root: int) -> None:
        while self.requests and len(self.open) < WINDOW:
            i, stat = self.requests.popleft()
            d, name = posixpath.split(stat.path)
            parent = _open_dir(root, d)
            try:
                fd = os.open(name, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            finally:
                os.close(parent)
            self.open[i] = (fd, stat)
            self.left[i] = stat.size
            self.send(Packet(type=Packet.PACKET_REQ, ID=i))

    def _data(self, root: int, p: Packet) -> None:
        entry = self.open.get(p.ID)
        if entry is None:
            raise StreamError(f"invalid file request {p.ID}")
        fd, stat = entry
        if p.data:
            left = self.left[p.ID]
            view = memoryview(p.data)[:left]  # the file stops at its STAT's size, whatever the sender says
            self.left[p.ID] = left - len(view)
            write_all(fd, view)
            if len(p.data) > left:
                raise StreamError(f"refusing {stat.path!r}: the sender sent more than the {stat.size} bytes "
                                  f"it announced")
            return
        del self.open[p.ID], self.left[p.ID]
        try:
            os.fchmod(fd, permissions(unix_mode(stat.mode), self.umask))
            _set_xattrs(fd, stat)
            os.utime(fd, ns=(stat.modTime, stat.modTime))
        finally:
            os.close(fd)
        self._request_more(root)

    def _finish_dirs(self, root: int, dirs: list[int]) -> None:
        for i in reversed(dirs):  # deepest last-made first; a child's mtime never moves its parent's
            stat = self.stats[i]
            if not stat.path:  # never DEST itself (the checks refused it)
                continue
            fd = _open_dir(root, stat.path)
            try:
                os.fchmod(fd, permissions(unix_mode(stat.mode), self.umask))
                _set_xattrs(fd, stat)
                os.utime(fd, ns=(stat.modTime, stat.modTime))
            finally:
                os.close(fd)


def receive_archive(call: Call, out: TarOutput) -> None:
    """Writes the raw BytesMessage stream to the file (renamed into place at a clean end) or to stdout."""
    if str(out.dest) == "-":
        sink = sys.stdout.buffer
        for raw in call.messages():
            sink.write(BytesMessage.FromString(raw).data)
        sink.flush()
        return
    try:
        with atomic_file(Path(out.dest), out.what) as f:
            for raw in call.messages():
                f.write(BytesMessage.FromString(raw).data)
    except DestinationError as e:
        raise GrpcError(UNKNOWN, str(e)) from None


def filesend_handler(outputs: Sequence[Output]) -> Handler:
    """FileSend.DiffCopy for the build's outputs, by exporter index (the metadata
    `buildkit-attachable-exporter-id`; absent on BuildKit < v0.13, meaning 0)."""

    def handle(call: Call) -> None:
        raw = call.first(EXPORTER_ID, "0")
        try:
            index = int(raw)
        except ValueError:
            index = 0  # as BuildKit's chooser does
        if not 0 <= index < len(outputs):
            raise GrpcError(NOT_FOUND, f"exporter {raw} not found")
        out = outputs[index]
        if isinstance(out, LocalOutput):
            LocalReceiver(call, out.dest, out.devices).run()
        else:
            receive_archive(call, out)

    return handle
