"""Reading a Dockerfile from disk, refusing what would hang or exhaust a build instead of failing it."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MAX_DOCKERFILE_BYTES = 16 << 20
"""A Dockerfile larger than this is refused: no real one comes near, and every step keeps the text."""


class DockerfileReadError(Exception):
    """The Dockerfile cannot be read; the message names the path and why."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


def read_dockerfile(path: Path) -> str:
    """The text of the Dockerfile at `path`.

    Bytes that are not UTF-8 stay as surrogate escapes (`\\udc80`-`\\udcff`), as BuildKit keeps a
    Dockerfile's bytes; the parser reports what they break. A FIFO, device or socket is refused before
    it is read (reading a FIFO nobody writes would block the build forever).
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; regular files ignore it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise DockerfileReadError(f"failed to read dockerfile: {path}: {_reason(e)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DockerfileReadError(f"failed to read dockerfile: {path}: is {_kind(st.st_mode)}, "
                                      "not a regular file")
        if st.st_size > MAX_DOCKERFILE_BYTES:
            raise DockerfileReadError(f"failed to read dockerfile: {path}: {st.st_size} bytes, over the "
                                      f"{MAX_DOCKERFILE_BYTES >> 20} MiB limit")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_DOCKERFILE_BYTES + 1)
    except OSError as e:
        raise DockerfileReadError(f"failed to read dockerfile: {path}: {_reason(e)}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_DOCKERFILE_BYTES:
        raise DockerfileReadError(f"failed to read dockerfile: {path}: over the {MAX_DOCKERFILE_BYTES >> 20} "
                                  "MiB limit")
    return data.decode("utf-8", "surrogateescape")


def _reason(e: OSError) -> str:
    if e.errno == errno.EISDIR:
        return "is a directory, not a regular file"
    return e.strerror or str(e)
