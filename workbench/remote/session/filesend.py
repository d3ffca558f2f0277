"""FileSend.DiffCopy: the daemon hands the build's output to us (BuildKit's exporters call it).

`--output type=local,dest=DIR`: the daemon is fsutil's *sender* and we are its receiver (fsutil `receive.go`
with `Merge`, as buildctl runs it). The whole listing is read and checked first (clean relative paths in fsutil's
walk order, every parent a directory sent before it, hardlinks only to regular files sent earlier), so a hostile
stream is refused before anything is written. Then the tree is made under DIR through directory fds opened
O_NOFOLLOW (never through a symlink, whether the stream or an earlier DIR made it), the data of the regular files
is requested by id (a few at a time, to bound open files), and modes and mtimes are applied last. Entries
already in DIR that the stream does not name are left, as buildctl leaves them.

`type=tar|oci|docker,dest=FILE|-`: the daemon streams raw BytesMessage chunks; they go to a temp file renamed
over FILE once the stream ended cleanly (a cut-off build leaves nothing), or to stdout.

The gRPC metadata of both is the same (`buildkit-attachable-exporter-id`, plus `exporter-md-*` for oci/docker
only), so the output the build asked for decides which one applies.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat as st
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workbench.fsutil.destination import DestinationError, atomic_file
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
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class LocalOutput:
    """`--output type=local,dest=DIR`: the tree is written into DIR (created if missing, updated if there)."""

    dest: Path


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

    parents: list[_Parent] = field(default_factory=lambda: [_Parent("")])
    files: set[str] = field(default_factory=set)  # regular files sent so far (hardlink targets)

    def check(self, stat: Stat) -> None:
        p = stat.path
        if not p or "\x00" in p or p != posixpath.normpath(p):
            raise StreamError(f"refusing {p!r}: unclean path")
        if p.startswith("/"):
            raise StreamError(f"refusing {p!r}: absolute path")
        if p == ".." or p.startswith("../"):
            raise StreamError(f"refusing {p!r}: it escapes the destination")
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
    fd = os.dup(root)
    for part in rel.split("/") if rel else []:
        try:
            nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nfd
    return fd


def _remove(dir_fd: int, name: str) -> None:
    """Removes whatever `name` is in dir_fd (a directory with its contents), never following a link."""
    try:
        s = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if st.S_ISDIR(s.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _set_xattrs(fd: int, stat: Stat) -> None:
    for name, value in stat.xattrs.items():
        try:
            os.setxattr(fd, name, value)
        except OSError as e:  # best effort, as on a filesystem without them
            if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES):
                raise


class LocalReceiver:
    """One FileSend.DiffCopy of a local output into `dest` (runs in the call's thread)."""

    def __init__(self, call: Call, dest: Path) -> None:
        self.call = call
        self.dest = dest
        self.stats: list[Stat] = []
        self.requests: deque[tuple[int, Stat]] = deque()
        self.open: dict[int, tuple[int, Stat]] = {}  # id -> (fd, stat) of a file being received

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
        check = ListingCheck()
        for raw in messages:  # the listing, checked whole before anything is written
            p = self._packet(raw)
            if p.type == Packet.PACKET_STAT:
                if not p.HasField("stat"):
                    break
                check.check(p.stat)
                self.stats.append(p.stat)
            elif p.type == Packet.PACKET_DATA:
                raise StreamError(f"invalid file request {p.ID}")
        else:
            raise GrpcError(UNKNOWN, "the output stream ended before its listing did")
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
                while stack[-1][0] != d:  # the checks made sure d is on the stack
                    os.close(stack.pop()[1])
                parent = stack[-1][1]
                mode = unix_mode(stat.mode)
                try:
                    old = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
                except FileNotFoundError:
                    old = None
                if old is not None and not (st.S_ISDIR(old) and st.S_ISDIR(mode)):
                    _remove(parent, name)
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
                else:  # a device or a FIFO
                    dev = os.makedev(stat.devmajor, stat.devminor) if st.S_ISCHR(mode) or st.S_ISBLK(mode) else 0
                    os.mknod(name, mode, dev, dir_fd=parent)
                    os.chmod(name, st.S_IMODE(mode), dir_fd=parent)
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
            self.send(Packet(type=Packet.PACKET_REQ, ID=i))

    def _data(self, root: int, p: Packet) -> None:
        entry = self.open.get(p.ID)
        if entry is None:
            raise StreamError(f"invalid file request {p.ID}")
        fd, stat = entry
        if p.data:
            view = memoryview(p.data)
            while view:
                view = view[os.write(fd, view):]
            return
        del self.open[p.ID]
        try:
            os.fchmod(fd, st.S_IMODE(unix_mode(stat.mode)))
            _set_xattrs(fd, stat)
            os.utime(fd, ns=(stat.modTime, stat.modTime))
        finally:
            os.close(fd)
        self._request_more(root)

    def _finish_dirs(self, root: int, dirs: list[int]) -> None:
        for i in reversed(dirs):  # deepest last-made first; a child's mtime never moves its parent's
            stat = self.stats[i]
            fd = _open_dir(root, stat.path)
            try:
                os.fchmod(fd, st.S_IMODE(unix_mode(stat.mode)))
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
            LocalReceiver(call, out.dest).run()
        else:
            receive_archive(call, out)

    return handle
