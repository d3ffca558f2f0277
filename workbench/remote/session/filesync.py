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

from workbench.frontend.dockerfile.dockerignore import load_dockerignore
from workbench.fsutil.paths import DIR_FLAGS
from workbench.fsutil.patterns import IgnoreMatcher, may_match_below
from workbench.remote.session.h2server import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    UNKNOWN,
    Call,
    CallClosed,
    GrpcError,
    Handler,
)
from workbench.remote.session.proto.fsutil_types_pb2 import Packet, Stat

CHUNK = 256 * 1024  # per DATA packet (Go sends 32 KiB; larger costs fewer Python round trips)
LINGER = 0.001  # seconds a sender holding small files' data waits for the next request before it writes
SENDERS = 2  # files read at once (fsutil: 4; more Python threads only add GIL contention)
STAT_BATCH = 32  # STATs in the first write (the receiver may ask for a file only once its STAT arrived) ...
STAT_BATCH_MAX = 512  # ... each later write twice as many, up to this: fewer h2 frames for a big tree

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


def make_stat(rel: str, s: os.stat_result, linkname: str = "", xattrs: Mapping[str, bytes] | None = None) -> Stat:
    """fsutil's Stat of one entry; uid and gid 0, as the docker CLI and buildctl send local sources."""
    mode = s.st_mode
    if (gmode := _GO_MODES.get(mode)) is None:
        gmode = _GO_MODES[mode] = go_mode(mode)  # a tree has few distinct modes
    if st.S_ISDIR(mode):
        out = Stat(path=rel, mode=gmode, modTime=s.st_mtime_ns)
    else:
        out = Stat(path=rel, mode=gmode, modTime=s.st_mtime_ns, size=s.st_size, linkname=linkname)
        if mode & (st.S_IFBLK | st.S_IFCHR):  # Go tests the bits, not the type: 0 for links and sockets
            out.devmajor = (s.st_rdev >> 8) & 0xFFF
            out.devminor = (s.st_rdev & 0xFF) | ((s.st_rdev >> 12) & 0xFFF00)
    if xattrs:
        for name, value in xattrs.items():
            out.xattrs[name] = value
    return out


_GO_MODES: dict[int, int] = {}


def read_xattrs(target: str | int) -> dict[str, bytes]:
    """The extended attributes of a path (not followed) or of an open fd."""
    follow = {} if isinstance(target, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(target, **follow)
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.ENOENT):
            raise
        return {}
    out = {}
    for name in names:
        try:
            out[name] = os.getxattr(target, name, **follow)
        except OSError:
            pass
    return out


_PROC_FD = os.path.isdir("/proc/self/fd")


def _at(dir_fd: int, name: str, root: Path, rel: str) -> str:
    """A path naming `name` inside the directory open as `dir_fd` (the fd pins it: no component is re-resolved),
    for the calls that take no dir_fd (xattrs); without /proc, `root`/`rel`."""
    return f"/proc/self/fd/{dir_fd}/{name}" if _PROC_FD else os.path.join(root, rel)


def stat_packet(stat: Stat) -> bytes:
    """Packet(type=STAT, stat=stat) serialised, without copying `stat` into a Packet: field 2 (the type, 0,
    is proto3's default and not written)."""
    body = stat.SerializeToString()
    n, head = len(body), bytearray(b"\x12")
    while n > 0x7F:
        head.append(n & 0x7F | 0x80)
        n >>= 7
    head.append(n)
    return bytes(head) + body


class UnsendableName(Exception):
    """An entry whose name the session cannot carry (fsutil's Stat.path is a protobuf string: UTF-8 only)."""


def check_name(rel: str, label: str, text: str | None = None, what: str = "its name") -> None:
    """UnsendableName naming `rel` when `text` (default: `rel` itself) is not UTF-8."""
    try:
        (rel if text is None else text).encode()
    except UnicodeEncodeError:
        raise UnsendableName(f"{label} file {os.fsencode(rel)!r}: {what} is not UTF-8, which a BuildKit session "
                             "cannot carry; rename it or add it to .dockerignore") from None


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


# Every open goes through a directory fd with O_NOFOLLOW, one component at a time: a directory of the tree
# swapped for a link (by anyone who can write in it, at the moment a daemon picks) is never followed out of it.
# O_NONBLOCK: a FIFO put in a file's place opens at once instead of waiting for a writer (fstat then refuses it)
FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
_VANISHED = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)  # gone, or replaced by a file or a link

FileId = tuple[int, int]  # (st_dev, st_ino) of a regular file as the walk saw it


def open_dir_at(dir_fd: int, name: str, expect: os.stat_result | None = None) -> int:
    """`name` in `dir_fd` opened as a directory, never through a link; with `expect`, it must still be that
    directory (OSError ENOENT otherwise)."""
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    if expect is not None:
        s = os.fstat(fd)
        if (s.st_dev, s.st_ino) != (expect.st_dev, expect.st_ino):
            os.close(fd)
            raise FileNotFoundError(errno.ENOENT, "replaced since it was listed", name)
    return fd


@dataclass
class _Dir:
    rel: str
    stat: os.stat_result
    fd: int
    sent: bool


class TreeWalk:
    """The filtered listing of `root` as fsutil's FilterFS walks it. `floor` (exclude patterns) and `only` (the
    paths allowed, with the directories above them) are the session's own limits: the daemon's patterns can
    only narrow them."""

    def __init__(self, root: Path, includes: Sequence[str] = (), excludes: Sequence[str] = (),
                 followpaths: Sequence[str] = (), floor: Sequence[str] = (), only: frozenset[str] | None = None,
                 label: str = "context") -> None:
        self.root = root
        self.label = label
        patterns = list(includes) + (follow_links(root, followpaths) if followpaths else [])
        include = IgnoreMatcher(patterns)
        self.include = include if include else None
        self.include_texts = [p.text for p in include.patterns if not p.exclusion]
        exclude = IgnoreMatcher(list(excludes))
        self.exclude = exclude if exclude else None
        floor_matcher = IgnoreMatcher(list(floor))
        self.floor = floor_matcher if floor_matcher else None
        self.only = only
        self.filtered = any(f is not None for f in (self.include, self.exclude, self.floor, only))

    def __iter__(self) -> Iterator[Stat]:
        for stat, _ in self.entries():
            yield stat

    def entries(self, root_fd: int | None = None) -> Iterator[tuple[Stat, FileId | None]]:
        """Each Stat to send, with the identity of the file the receiver may ask for (None for the others)."""
        fd = os.open(self.root, DIR_FLAGS) if root_fd is None else root_fd
        try:
            yield from self._dir(_Dir("", os.fstat(fd), fd, True), [], {})
        finally:
            if root_fd is None:
                os.close(fd)

    def _leave_out(self, rel: str, is_dir: bool) -> bool | None:
        """True: not sent, nor anything below; None: a directory not sent unless something below it is;
        False: sent."""
        skip = False
        if self.only is not None and rel not in self.only:
            if not is_dir or not any(o.startswith(rel + "/") for o in self.only):
                return True
            skip = True
        if self.floor is not None and self.floor.excluded(rel):
            if not is_dir or not self.floor.may_include_below(rel):
                return True
            skip = True
        if self.include is not None and not self.include.excluded(rel):  # excluded(): "matched"
            if not is_dir or not any(may_match_below(t, rel) for t in self.include_texts):
                return True
            skip = True
        if self.exclude is not None and self.exclude.excluded(rel):
            if not is_dir or not self.exclude.may_include_below(rel):
                return True
            skip = True
        return None if skip else False

    def _dir_stat(self, d: _Dir) -> Stat:
        check_name(d.rel, self.label)
        return make_stat(d.rel, d.stat, xattrs=read_xattrs(d.fd))

    def _dir(self, top: _Dir, parents: list[_Dir],
             seen: dict[FileId, str]) -> Iterator[tuple[Stat, FileId | None]]:
        with os.scandir(top.fd) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for entry in entries:
            rel = f"{top.rel}/{entry.name}" if top.rel else entry.name
            leave: bool | None = False
            if self.filtered:  # decided on the listing's type first: what is left out is never stat'ed
                try:
                    listed_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if (leave := self._leave_out(rel, listed_dir)):
                    continue
            try:
                s = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we walk
            is_dir = st.S_ISDIR(s.st_mode)
            if self.filtered and is_dir != listed_dir and (leave := self._leave_out(rel, is_dir)):
                continue  # replaced by another type since it was listed
            if is_dir:
                try:
                    fd = open_dir_at(top.fd, entry.name, s)
                except OSError as e:
                    if e.errno in _VANISHED:
                        continue
                    raise
                try:
                    d = _Dir(rel, s, fd, leave is False)
                    if d.sent:
                        yield from self._parents(parents)
                        yield self._dir_stat(d), None
                    parents.append(d)
                    try:
                        yield from self._dir(d, parents, seen)
                    finally:
                        parents.pop()
                finally:
                    os.close(fd)
                continue
            check_name(rel, self.label)
            try:
                link = os.readlink(entry.name, dir_fd=top.fd) if st.S_ISLNK(s.st_mode) else ""
            except FileNotFoundError:
                continue
            check_name(rel, self.label, link, "its link target")
            try:
                stat = make_stat(rel, s, link, read_xattrs(_at(top.fd, entry.name, self.root, rel)))
            except UnicodeEncodeError:
                raise UnsendableName(f"{self.label} file {os.fsencode(rel)!r}: an extended attribute name is not "
                                     "UTF-8, which a BuildKit session cannot carry; remove it or add the file to "
                                     ".dockerignore") from None
            yield from self._parents(parents)
            ident: FileId | None = None
            if st.S_ISREG(s.st_mode):
                ident = (s.st_dev, s.st_ino)
                if s.st_nlink > 1:
                    first = seen.setdefault(ident, rel)
                    if first != rel:
                        stat.linkname = first
            yield stat, ident

    def _parents(self, parents: list[_Dir]) -> Iterator[tuple[Stat, None]]:
        """The directories above, sent only now that something in them is."""
        for parent in parents:
            if not parent.sent:
                parent.sent = True
                yield self._dir_stat(parent), None


class _DirCache:
    """One sender's open directory: requests come in walk order, so the next file is mostly in the same one."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.rel = ""
        self.fd = root_fd

    def get(self, rel: str) -> int:
        if rel != self.rel:
            self.close()
            fd = self.root_fd
            try:
                for name in rel.split("/") if rel else ():
                    child = open_dir_at(fd, name)
                    if fd != self.root_fd:
                        os.close(fd)
                    fd = child
            except OSError:
                if fd != self.root_fd:
                    os.close(fd)
                raise
            self.rel, self.fd = rel, fd
        return self.fd

    def close(self) -> None:
        if self.fd != self.root_fd:
            os.close(self.fd)
        self.rel, self.fd = "", self.root_fd


def open_listed(dirs: _DirCache, path: str, ident: FileId) -> int:
    """The regular file the walk listed at `path`, or -1 when it is gone or is no longer that file (fsutil sends
    a file it cannot open empty)."""
    parent, _, name = path.rpartition("/")
    try:
        dir_fd = dirs.get(parent)
        s = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)  # a device or FIFO in its place is never opened
        if not st.S_ISREG(s.st_mode) or (s.st_dev, s.st_ino) != ident:
            return -1
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return -1
    s = os.fstat(fd)
    if not st.S_ISREG(s.st_mode) or (s.st_dev, s.st_ino) != ident:
        os.close(fd)
        return -1
    return fd


def decode_opts(metadata: Mapping[str, list[str]], key: str) -> list[str]:
    """A filesync option's values; v0.20 query-escapes them and adds `<key>-encoded: 1` for non-ASCII."""
    from urllib.parse import unquote_plus

    values = list(metadata.get(key, []))
    flag = (metadata.get(f"{key}-encoded") or [""])[0]
    if flag in ("1", "t", "T", "true", "TRUE", "True"):
        values = [unquote_plus(v) for v in values]
    return values


class _Pending:
    """Packets a sender holds back, to go out in one write."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.size = 0

    def add(self, *packets: bytes) -> None:
        self.packets += packets
        self.size += sum(map(len, packets))


class DiffCopySender:
    """One FileSync.DiffCopy call: the walk in the handler's thread, REQs read by a reader thread, file
    data sent by `SENDERS` threads. However the call ends, the threads are stopped and joined before `run`
    returns."""

    def __init__(self, call: Call, walk: TreeWalk) -> None:
        self.call = call
        self.walk = walk
        self.files: dict[int, tuple[str, FileId]] = {}
        self.lock = threading.Lock()
        self.work: queue.Queue[tuple[int, str, FileId] | None] = queue.Queue()
        self.done = threading.Event()
        self.stopped = False  # the call failed: queued files are not sent
        self.fin = False
        self.error = ""
        self.root_fd = -1
        # started at the first REQ: a daemon that has every file (a rebuild) asks for none
        self.senders = [threading.Thread(target=self._send_files, name="filesync-data", daemon=True)
                        for _ in range(SENDERS)]
        self.closing = False

    def send(self, packet: Packet) -> None:
        self.call.send(packet.SerializeToString())

    def run(self) -> None:
        try:
            self.root_fd = os.open(self.walk.root, DIR_FLAGS)
        except OSError as e:
            raise GrpcError(NOT_FOUND if e.errno == errno.ENOENT else UNKNOWN, f"{e.strerror}: {e.filename}") from None
        reader = threading.Thread(target=self._read, name="filesync-reqs", daemon=True)
        senders = self.senders
        ok = False
        try:
            reader.start()
            self._walk()
            self.done.wait()
            ok = True
        finally:
            with self.lock:
                self.closing = True  # no sender starts from now on
            self.stopped = not ok
            self.done.set()
            for _ in senders:
                self.work.put(None)
            for t in senders:
                if t.ident is not None:
                    t.join()
            if reader.is_alive():
                # the peer has not half-closed and never will (the call failed here): end its inbox, which is
                # what the server does when the peer half-closes, so the reader's recv() returns
                self.call._end(reset=False)
            if reader.ident is not None:
                reader.join()
            os.close(self.root_fd)
        if self.error:
            raise GrpcError(UNKNOWN, self.error)
        if self.fin:
            self.send(Packet(type=Packet.PACKET_FIN))

    def _walk(self) -> None:
        try:
            i, limit = 0, STAT_BATCH
            batch: list[bytes] = []
            files, lock = self.files, self.lock
            for stat, ident in self.walk.entries(self.root_fd):
                if self.error:  # the receiver gave up
                    break
                if ident is not None:
                    with lock:
                        files[i] = (stat.path, ident)
                i += 1
                batch.append(stat_packet(stat))
                if len(batch) >= limit:
                    self.call.send_many(batch)
                    batch, limit = [], min(limit * 2, STAT_BATCH_MAX)
            batch.append(Packet(type=Packet.PACKET_STAT).SerializeToString())
            self.call.send_many(batch)
        except OSError as e:
            message = f"{e.strerror or e}: {e.filename}" if e.filename else str(e)
            self._abort(message)
            raise GrpcError(NOT_FOUND if e.errno == errno.ENOENT else UNKNOWN, message) from None
        except UnsendableName as e:
            self._abort(str(e))
            raise GrpcError(INVALID_ARGUMENT, str(e)) from None

    def _abort(self, message: str) -> None:
        try:
            self.send(Packet(type=Packet.PACKET_ERR, data=message.encode()))
        except CallClosed:
            pass

    def _read(self) -> None:
        try:
            for raw in self.call.messages():
                p = Packet.FromString(raw)
                if p.type == Packet.PACKET_REQ:
                    with self.lock:
                        listed = self.files.pop(p.ID, None)
                        if not self.closing and self.senders[0].ident is None:
                            for t in self.senders:
                                t.start()
                    if listed is None:
                        self.error = f"invalid file id {p.ID}"
                        break
                    self.work.put((p.ID, *listed))
                elif p.type == Packet.PACKET_FIN:
                    self.fin = True
                    break
                elif p.type == Packet.PACKET_ERR:
                    self.error = f"error from receiver: {p.data.decode(errors='replace')}"
                    break
        except CallClosed:
            self.error = "the call was canceled"
        except Exception as e:  # a packet that does not parse: end the call rather than wait for it forever
            self.error = f"bad packet from the receiver: {e}"
        finally:
            self.done.set()

    def _send_files(self) -> None:
        dirs = _DirCache(self.root_fd)
        pending = _Pending()  # small files' DATA, sent together (one h2 frame rather than one each)
        try:
            item = self.work.get()
            while item is not None:
                if not self.stopped and not self._send_file(dirs, *item, pending):
                    return
                if pending.size >= CHUNK and not self._flush(pending):
                    return
                try:
                    # the receiver's REQs come a few at a time: what it asks for a moment later joins this write
                    item = self.work.get(timeout=LINGER) if pending.packets else self.work.get()
                except queue.Empty:
                    if not self._flush(pending):
                        return
                    item = self.work.get()
            self._flush(pending)
        finally:
            dirs.close()

    def _flush(self, pending: _Pending) -> bool:
        """Sends what `pending` holds (nothing once the call failed); False once the call is gone."""
        try:
            if pending.packets and not self.stopped:
                self.call.send_many(pending.packets)
        except CallClosed:
            return False
        finally:
            pending.packets, pending.size = [], 0
        return True

    def _send_file(self, dirs: _DirCache, file_id: int, path: str, ident: FileId, pending: _Pending) -> bool:
        """Sends one file's DATA and its end (a file of one chunk: added to `pending`); False once the call is
        gone."""
        fd = open_listed(dirs, path, ident)
        eof = Packet(type=Packet.PACKET_DATA, ID=file_id).SerializeToString()
        try:
            chunk = os.read(fd, CHUNK) if fd >= 0 else b""
            while chunk:
                data = Packet(type=Packet.PACKET_DATA, ID=file_id, data=chunk).SerializeToString()
                chunk = os.read(fd, CHUNK)
                if not chunk:  # the last chunk and the end together
                    pending.add(data, eof)
                    break
                if not self._flush(pending):
                    return False
                self.call.send(data)
            else:
                pending.add(eof)
        except CallClosed:
            return False
        except OSError as e:  # fsutil fails the transfer on a read error
            self.error = f"{e.strerror or e}: {path}"
            self._abort(self.error)
            self.done.set()
            return False
        finally:
            if fd >= 0:
                os.close(fd)
        return True


@dataclass(frozen=True)
class ServedDir:
    """One directory the session serves, with its floor (see TreeWalk)."""

    root: Path
    floor: tuple[str, ...] = ()
    only: frozenset[str] | None = None


DOCKERFILE = "dockerfile"  # the dir-name BuildKit's Dockerfile frontend reads the Dockerfile from


def served_dirs(dirs: Mapping[str, Path]) -> dict[str, ServedDir]:
    """What each named directory may give the daemon, whatever it asks. `dirs["dockerfile"]` names the
    Dockerfile itself: only it and its ignore files are served from its folder (given a folder, only
    `Dockerfile` and its ignore files in it). Every other directory is served less what its `.dockerignore`
    excludes; the context's is the one the build uses (`<Dockerfile>.dockerignore` first)."""
    dockerfile: Path | None = None
    out: dict[str, ServedDir] = {}
    if (given := dirs.get(DOCKERFILE)) is not None:
        folder, name = (given, "Dockerfile") if os.path.isdir(given) else (given.parent, given.name)
        root = Path(os.path.realpath(folder))
        dockerfile = root / name
        names = [name, f"{name}.dockerignore", ".dockerignore"]
        out[DOCKERFILE] = ServedDir(root, only=frozenset(names) | frozenset(follow_links(root, names)))
    for key, path in dirs.items():
        if key != DOCKERFILE:
            root = Path(os.path.realpath(path))
            out[key] = ServedDir(root, tuple(load_dockerignore(root, dockerfile if key == "context" else None)))
    return out


def diffcopy_handler(dirs: Mapping[str, Path]) -> Handler:
    """The FileSync.DiffCopy handler serving the session's named directories (`dir-name` picks one), each
    within its floor (`served_dirs`, read once here)."""
    served = served_dirs(dirs)

    def handle(call: Call) -> None:
        name = call.first("dir-name")
        d = served.get(name)
        if d is None:
            raise GrpcError(NOT_FOUND, f"no access allowed to dir {name!r}")
        walk = TreeWalk(d.root, decode_opts(call.metadata, "include-patterns"),
                        decode_opts(call.metadata, "exclude-patterns"), decode_opts(call.metadata, "followpaths"),
                        floor=d.floor, only=d.only, label=name)
        DiffCopySender(call, walk).run()

    return handle
