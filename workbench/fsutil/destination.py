"""Writing an archive on the host without following what is already at its destination.

An archive (`--output type=oci|docker|tar`, `image save`) is written to a temp file of a unique name in DEST's
directory, created O_EXCL|O_NOFOLLOW and flock-ed while it is written, then renamed over DEST: a symlink at
DEST is replaced, never written through, and DEST is never half there. A run killed mid-way leaves only its
temp file; the next archive written in that directory recognises it by its name and its free lock and
removes it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMP_MARK = ".workbench-tmp-"
_TEMP_NAME = re.compile(r"\..*" + re.escape(TEMP_MARK) + "[0-9a-f]{16}", re.DOTALL)
_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO)


class DestinationError(OSError):
    """An export destination that cannot be written; the message names it and says why."""

    def __str__(self) -> str:
        return str(self.args[0])


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write the whole of `data` to `fd` (a write may take less than it is given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def reason(e: OSError) -> str:
    """The OS's words for `e` ("Permission denied"), without Python's decoration."""
    return e.strerror or str(e)


def temp_prefix(name: str) -> str:
    """The start of the temp file names used while writing the file `name` (hidden, same directory)."""
    return f".{name[:180]}{TEMP_MARK}"


@contextmanager
def atomic_file(dest: Path, what: str) -> Iterator[BinaryIO]:
    """`with atomic_file(dest, "--output type=oci") as f:` write the archive to `f`; on a clean exit it
    replaces `dest` (a symlink there is replaced, not followed), else nothing is left behind.

    DestinationError (naming `what` and `dest`) when the destination cannot be written.
    """
    dest = Path(dest)
    if dest.name in ("", ".", ".."):
        raise DestinationError(f"{what}: {dest} is not a file name")
    stream = _stream_target(dest)
    if stream is not None:  # /dev/null, /dev/stdout, a FIFO: written into, never replaced
        with _open_stream(stream, dest, what) as f:
            yield f
        return
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dir_fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileExistsError:
        raise DestinationError(f"{what}: cannot write {dest}: {dest.parent} is not a directory") from None
    except OSError as e:
        raise DestinationError(f"{what}: cannot write {dest}: {reason(e)}") from None
    try:
        try:
            if stat.S_ISDIR(os.stat(dest.name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                raise DestinationError(f"{what}: cannot write {dest}: it is a directory")
        except FileNotFoundError:
            pass
        remove_stale_temps(dir_fd)
        try:
            fd, tmp = create_temp(dir_fd, dest.name)
        except OSError as e:
            raise DestinationError(f"{what}: cannot write {dest}: {reason(e)}") from None
        f = os.fdopen(fd, "wb", buffering=1 << 20)
        try:
            yield f
            f.flush()
            os.fsync(fd)
            os.rename(tmp, dest.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as e:
            _unlink_if_same(dir_fd, tmp, fd)
            if isinstance(e, OSError) and not isinstance(e, DestinationError) and e.errno in _WRITE_ERRORS:
                raise DestinationError(f"{what}: cannot write {dest}: {reason(e)}") from None
            if isinstance(e, IsADirectoryError):
                raise DestinationError(f"{what}: cannot write {dest}: it is a directory") from None
            raise
        finally:
            f.close()  # releases the lock: the file is DEST now, or gone
    finally:
        os.close(dir_fd)


def release_cached_pages(dest: Path) -> None:
    """Drop the page cache of the regular file at `dest` (never through a symlink) that an archive is about
    to replace: its memory is free for the build from its start, not only once the new archive is renamed
    over it (buildctl truncates its destination at the start; this keeps the old file whole until the new
    one is complete). Only clean cached pages go: the file's content is untouched. Anything else at `dest`
    (nothing, a link, a device, a FIFO) is left alone."""
    try:
        if not stat.S_ISREG(os.lstat(dest).st_mode):
            return
        fd = os.open(dest, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def _stream_target(dest: Path) -> Path | None:
    """`dest` when it is (or is a link to) a character device or a FIFO: a stream to write into, not a file to
    replace (`dest=/dev/null`, `/dev/stdout`, a pipe). Regular files and links to them are replaced."""
    try:
        st = os.stat(dest)
    except OSError:
        return None
    return dest if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode) else None


@contextmanager
def _open_stream(path: Path, dest: Path, what: str) -> Iterator[BinaryIO]:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise DestinationError(f"{what}: cannot write {dest}: {reason(e)}") from None
    if not (stat.S_ISCHR(os.fstat(fd).st_mode) or stat.S_ISFIFO(os.fstat(fd).st_mode)):
        os.close(fd)  # it changed under us: refuse rather than write into a file through a link
        raise DestinationError(f"{what}: cannot write {dest}: it changed while it was opened")
    with os.fdopen(fd, "wb", buffering=1 << 20) as f:
        try:
            yield f
            f.flush()
        except OSError as e:
            if isinstance(e, DestinationError) or e.errno not in _WRITE_ERRORS:
                raise
            raise DestinationError(f"{what}: cannot write {dest}: {reason(e)}") from None


def create_temp(dir_fd: int, name: str) -> tuple[int, str]:
    """A new temp file for `name`, open for writing and locked; (fd, its name in the directory)."""
    while True:
        tmp = temp_prefix(name) + secrets.token_hex(8)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                     dir_fd=dir_fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A cleaner may have taken the file for stale between its creation and our lock: then start again.
        if _same_file(dir_fd, tmp, fd):
            return fd, tmp
        os.close(fd)


def remove_stale_temps(dir_fd: int) -> list[str]:
    """Remove the temp files that archive writes killed before the end left in the directory `dir_fd`; a
    temp file whose writer is alive is locked and kept. Returns the names removed."""
    removed = []
    for entry in os.listdir(dir_fd):
        if not _TEMP_NAME.fullmatch(entry):
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being written now
            if _unlink_if_same(dir_fd, entry, fd):
                removed.append(entry)
        finally:
            os.close(fd)
    return removed


def _same_file(dir_fd: int, name: str, fd: int) -> bool:
    try:
        here = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _unlink_if_same(dir_fd: int, name: str, fd: int) -> bool:
    """Unlink `name` if it is still the file open as `fd`."""
    try:
        if _same_file(dir_fd, name, fd):
            os.unlink(name, dir_fd=dir_fd)
            return True
    except OSError:
        pass
    return False
