"""FileSync.DiffCopy: sends a local directory to the daemon with fsutil's protocol (its `send.go`).

We send the STATs of the filtered tree in Go `WalkDir` order (depth-first, names sorted byte-wise, a
directory before its contents; the root itself is not sent), then an empty STAT. Every STAT counts one id;
the daemon asks for the regular files it lacks with REQ(id) and gets DATA chunks, then an empty DATA. It
ends with FIN, which we answer with FIN. The metadata `dir-name` picks which of the session's directories,
`include-patterns` / `exclude-patterns` / `followpaths` filter it as fsutil's FilterFS does: a directory
that does not match itself is sent only when something inside it is. Symlinks are sent as links and never
followed out of the directory (followpaths resolve them *inside* it, as fsutil does).
"""

from __future__ import annotations

import errno
import os
import posixpath
import queue
import stat as st
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from workbench.fsutil.patterns import IgnoreMatcher, may_match_below
from workbench.remote.session.h2server import NOT_FOUND, UNKNOWN, Call, CallClosed, GrpcError, Handler
from workbench.remote.session.proto.fsutil_types_pb2 import Packet, Stat

CHUNK = 256 * 1024  # per DATA packet (Go sends 32 KiB; larger costs fewer Python round trips)
SENDERS = 2  # files read at once (fsutil: 4; more Python threads only add GIL contention)
STAT_BATCH = 64  # STATs per write; the receiver may ask for a file only once its STAT arrived

# Go os.FileMode bits
MODE_DIR = 1 << 31
MODE_SYMLINK = 1 << 27
MODE_DEVICE = 1 << 26
MODE_NAMED_PIPE = 1 << 25
MODE_SOCKET = 1 << 24
MODE_SETUID = 1 << 23
MODE_SETGID = 1 << 22
MODE_CHAR_DEVICE = 1 << 21
MODE_STICKY = 1 << 20
MODE_IRREGULAR = 1 << 19
MODE_TYPE = MODE_DIR | MODE_SYMLINK | MODE_NAMED_PIPE | MODE_SOCKET | MODE_DEVICE | MODE_CHAR_DEVICE | MODE_IRREGULAR

_TYPES = {st.S_IFDIR: MODE_DIR, st.S_IFLNK: MODE_SYMLINK, st.S_IFBLK: MODE_DEVICE,
          st.S_IFCHR: MODE_DEVICE | MODE_CHAR_DEVICE, st.S_IFIFO: MODE_NAMED_PIPE, st.S_IFSOCK: MODE_SOCKET}


def go_mode(mode: int) -> int:
    """st_mode as Go's os.FileMode, the socket bit cleared (fsutil's mkstat does, for archive/tar)."""
    out = (mode & 0o777) | _TYPES.get(st.S_IFMT(mode), 0)
    if mode & st.S_ISUID:
        out |= MODE_SETUID
    if mode & st.S_ISGID:
        out |= MODE_SETGID
    if mode & st.S_ISVTX:
        out |= MODE_STICKY
    return out & ~MODE_SOCKET


def can_request(mode: int) -> bool:
    """Whether the receiver may ask for the data of an entry with this Go mode (regular files only)."""
    return mode & MODE_TYPE == 0


def make_stat(path: str, rel: str, s: os.stat_result) -> Stat:
    """fsutil's Stat of one entry; uid and gid 0, as the docker CLI and buildctl send local sources."""
    out = Stat(path=rel, mode=go_mode(s.st_mode), modTime=s.st_mtime_ns)
    if not st.S_ISDIR(s.st_mode):
        out.size = s.st_size
        if st.S_ISLNK(s.st_mode):
            out.linkname = os.readlink(path)
        if s.st_mode & (st.S_IFBLK | st.S_IFCHR):  # Go tests the bits, not the type: 0 for links and sockets
            out.devmajor = (s.st_rdev >> 8) & 0xFFF
            out.devminor = (s.st_rdev & 0xFF) | ((s.st_rdev >> 12) & 0xFFF00)
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EPERM):
            raise
        names = []
    for name in names:
        try:
            out.xattrs[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            pass
    return out


def follow_links(root: Path, paths: Sequence[str]) -> list[str]:
    """fsutil's FollowLinks: `paths` with every symlink on the way resolved inside `root` (the links and
    their targets both kept), sorted; a wildcard in a last component matches names in its directory."""
    resolved: set[str] = set()

    def read_link(current: str, wildcard: bool) -> list[str] | None:
        base = posixpath.basename(current)
        if wildcard and any(c in base for c in "*?["):
            parent = posixpath.dirname(current) or "."
            try:
                names = sorted(os.listdir(root / parent))
            except FileNotFoundError:
                return None
            out: list[str] = []
            for name in names:
                if fnmatchcase(name, base):
                    out += read_link(posixpath.join(parent, name), False) or []
            return out or None
        if current == ".":
            return None
        try:
            link = os.readlink(root / current)
        except OSError:  # missing, or not a link
            return None
        # a target resolves against the root, never outside it: "/.." is "/"
        return [posixpath.normpath(posixpath.join("/", posixpath.dirname(current), link))]

    def append(p: str, depth: int) -> None:
        if depth > 255:
            raise GrpcError(NOT_FOUND, f"followpaths: too many levels of symbolic links in {p!r}")
        p = posixpath.normpath(posixpath.join(".", p.lstrip("/")))
        current = "."
        while True:
            head, _, p = p.partition("/")
            current = posixpath.normpath(posixpath.join(current, head))
            targets = read_link(current, True)
            if (not p or targets is not None) and current in resolved:
                return
            if targets is not None:
                resolved.add(current)
                for t in targets:
                    append(posixpath.join(t, p), depth + 1)
                return
            if not p:
                resolved.add(current)
                return

    for path in paths:
        append(path, 0)
    return sorted(resolved)


@dataclass
class _Dir:
    stat: Stat
    sent: bool


class TreeWalk:
    """The filtered listing of `root` as fsutil's FilterFS walks it."""

    def __init__(self, root: Path, includes: Sequence[str] = (), excludes: Sequence[str] = (),
                 followpaths: Sequence[str] = ()) -> None:
        self.root = root
        patterns = list(includes) + (follow_links(root, followpaths) if followpaths else [])
        include = IgnoreMatcher(patterns)
        self.include = include if include else None
        self.include_texts = [p.text for p in include.patterns if not p.exclusion]
        exclude = IgnoreMatcher(list(excludes))
        self.exclude = exclude if exclude else None

    def __iter__(self) -> Iterator[Stat]:
        seen: dict[tuple[int, int], str] = {}
        yield from self._dir("", [], seen)

    def _dir(self, rel_dir: str, parents: list[_Dir], seen: dict[tuple[int, int], str]) -> Iterator[Stat]:
        top = self.root / rel_dir if rel_dir else self.root
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                s = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we walk
            is_dir = st.S_ISDIR(s.st_mode)
            skip = False
            if self.include is not None and not self.include.excluded(rel):  # excluded(): "matched"
                if is_dir and not any(may_match_below(t, rel) for t in self.include_texts):
                    continue
                skip = True
            if self.exclude is not None and self.exclude.excluded(rel):
                if is_dir and not self.exclude.may_include_below(rel):
                    continue
                skip = True
            if skip and not is_dir:
                continue
            stat = make_stat(entry.path, rel, s)
            if not skip:
                for parent in parents:  # the directories above, sent only now that something in them is
                    if not parent.sent:
                        parent.sent = True
                        yield parent.stat
                if not is_dir and not st.S_ISLNK(s.st_mode) and s.st_nlink > 1:
                    first = seen.setdefault((s.st_dev, s.st_ino), rel)
                    if first != rel:
                        stat.linkname = first
                yield stat
            if is_dir:
                parents.append(_Dir(stat, not skip))
                try:
                    yield from self._dir(rel, parents, seen)
                finally:
                    parents.pop()


def decode_opts(metadata: Mapping[str, list[str]], key: str) -> list[str]:
    """A filesync option's values; v0.20 query-escapes them and adds `<key>-encoded: 1` for non-ASCII."""
    from urllib.parse import unquote_plus

    values = list(metadata.get(key, []))
    flag = (metadata.get(f"{key}-encoded") or [""])[0]
    if flag in ("1", "t", "T", "true", "TRUE", "True"):
        values = [unquote_plus(v) for v in values]
    return values


class DiffCopySender:
    """One FileSync.DiffCopy call: the walk in the handler's thread, REQs read by a reader thread, file
    data sent by `SENDERS` threads."""

    def __init__(self, call: Call, walk: TreeWalk) -> None:
        self.call = call
        self.walk = walk
        self.files: dict[int, str] = {}
        self.lock = threading.Lock()
        self.work: queue.Queue[tuple[int, str] | None] = queue.Queue()
        self.done = threading.Event()
        self.fin = False
        self.error = ""

    def send(self, packet: Packet) -> None:
        self.call.send(packet.SerializeToString())

    def run(self) -> None:
        reader = threading.Thread(target=self._read, name="filesync-reqs", daemon=True)
        senders = [threading.Thread(target=self._send_files, name="filesync-data", daemon=True)
                   for _ in range(SENDERS)]
        reader.start()
        for t in senders:
            t.start()
        try:
            i = 0
            batch: list[bytes] = []
            for stat in self.walk:
                if self.error:  # the receiver gave up
                    break
                if can_request(stat.mode):
                    with self.lock:
                        self.files[i] = stat.path
                i += 1
                batch.append(Packet(type=Packet.PACKET_STAT, stat=stat).SerializeToString())
                if len(batch) >= STAT_BATCH:
                    self.call.send_many(batch)
                    batch = []
            batch.append(Packet(type=Packet.PACKET_STAT).SerializeToString())
            self.call.send_many(batch)
        except OSError as e:
            message = f"{e.strerror or e}: {e.filename}" if e.filename else str(e)
            self._abort(message)
            raise GrpcError(NOT_FOUND if e.errno == errno.ENOENT else UNKNOWN, message) from None
        except CallClosed:
            self.done.set()
            raise
        self.done.wait()
        for _ in senders:
            self.work.put(None)
        for t in senders:
            t.join()
        if self.error:
            raise GrpcError(UNKNOWN, self.error)
        if self.fin:
            self.send(Packet(type=Packet.PACKET_FIN))

    def _abort(self, message: str) -> None:
        try:
            self.send(Packet(type=Packet.PACKET_ERR, data=message.encode()))
        except CallClosed:
            pass
        self.done.set()
        for _ in range(SENDERS):
            self.work.put(None)

    def _read(self) -> None:
        try:
            for raw in self.call.messages():
                p = Packet.FromString(raw)
                if p.type == Packet.PACKET_REQ:
                    with self.lock:
                        path = self.files.pop(p.ID, None)
                    if path is None:
                        self.error = f"invalid file id {p.ID}"
                        break
                    self.work.put((p.ID, path))
                elif p.type == Packet.PACKET_FIN:
                    self.fin = True
                    break
                elif p.type == Packet.PACKET_ERR:
                    self.error = f"error from receiver: {p.data.decode(errors='replace')}"
                    break
        except CallClosed:
            self.error = "the call was canceled"
        finally:
            self.done.set()

    def _send_files(self) -> None:
        while (item := self.work.get()) is not None:
            file_id, path = item
            try:
                fd = os.open(self.walk.root / path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                fd = -1  # gone since the walk: fsutil sends it empty too
            eof = Packet(type=Packet.PACKET_DATA, ID=file_id).SerializeToString()
            try:
                chunk = os.read(fd, CHUNK) if fd >= 0 else b""
                while chunk:
                    data = Packet(type=Packet.PACKET_DATA, ID=file_id, data=chunk).SerializeToString()
                    chunk = os.read(fd, CHUNK)
                    if not chunk:  # the last chunk and the end together
                        self.call.send_many([data, eof])
                        break
                    self.call.send(data)
                else:
                    self.call.send(eof)
            except CallClosed:
                return
            finally:
                if fd >= 0:
                    os.close(fd)


def diffcopy_handler(dirs: Mapping[str, Path]) -> Handler:
    """The FileSync.DiffCopy handler serving the session's named directories (`dir-name` picks one)."""

    def handle(call: Call) -> None:
        name = call.first("dir-name")
        root = dirs.get(name)
        if root is None:
            raise GrpcError(NOT_FOUND, f"no access allowed to dir {name!r}")
        walk = TreeWalk(Path(os.path.realpath(root)), decode_opts(call.metadata, "include-patterns"),
                        decode_opts(call.metadata, "exclude-patterns"), decode_opts(call.metadata, "followpaths"))
        DiffCopySender(call, walk).run()

    return handle
