"""Persistent `RUN --mount=type=cache` directories, kept under the build root across builds and processes.

Each cache (id, plus the seeding input if any) owns a folder `ROOT/cachemounts/<hash>/` holding one or
more instance dirs `0`, `1`, ... A user holds an flock on `<n>.use` while it mounts instance n: shared
users take it shared, private and locked users exclusively. As in BuildKit: a shared user joins an
instance other shared users have; a private user takes a free instance or makes a new one; a locked user
takes a free instance or waits for one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.state_root import make_private_dir, write_private

SHARINGS = ("shared", "private", "locked")
_POLL_S = 0.1


class CacheMountError(Exception):
    """A cache mount that cannot be set up (bad sharing mode, canceled while waiting)."""


def cache_dir_key(cache_id: str, seed: str = "") -> str:
    """The folder name of cache `cache_id` (seeded from `seed`, an input key + path, if any)."""
    return hashlib.sha256(f"{cache_id}\0{seed}".encode()).hexdigest()[:32]


def _lock(path: Path, flags: int) -> int | None:
    """An fd holding flock `flags` on `path`, or None when it would block (LOCK_NB given)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, flags)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class CacheMounts:
    """The cache mount dirs under one build root."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "cachemounts"

    def _instances(self, base: Path) -> list[int]:
        return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir())

    def _create(self, base: Path, n: int, mode: int, uid: int, gid: int, seed_from: Path | None) -> None:
        tmp = base / f"{n}.new"
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        if seed_from is not None:
            if seed_from.is_dir():
                subprocess.run(["cp", "-a", "--", f"{seed_from}/.", str(tmp)], check=True, capture_output=True)
            else:
                subprocess.run(["cp", "-a", "--", str(seed_from), str(tmp)], check=True, capture_output=True)
        os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.rename(tmp, base / str(n))

    @contextmanager
    def acquire(
        self,
        cache_id: str,
        sharing: str = "shared",
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        seed: str = "",
        seed_from: Callable[[], Path | None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Path]:
        """Hold an instance dir of cache `cache_id` for the duration of the block; yields its path.

        `mode`/`uid`/`gid` (default 0755, 0:0) and the content of `seed_from()` apply only to a new dir.
        """
        if sharing not in SHARINGS:
            raise CacheMountError(f"invalid cache sharing option: {sharing!r} (shared, private or locked)")
        base = self.dir / cache_dir_key(cache_id, seed)
        make_private_dir(base)  # its instance dirs below take the mount's own mode
        if not (base / "id").exists():
            write_private(base / "id", cache_id + "\n")
        flags = (fcntl.LOCK_SH if sharing == "shared" else fcntl.LOCK_EX) | fcntl.LOCK_NB
        held: int | None = None
        chosen = -1
        while held is None:
            guard = _lock(base / ".lock", fcntl.LOCK_EX)
            assert guard is not None
            try:
                existing = self._instances(base)
                for n in existing:
                    held = _lock(base / f"{n}.use", flags)
                    if held is not None:
                        chosen = n
                        break
                if held is None and (sharing != "locked" or not existing):
                    chosen = max(existing, default=-1) + 1
                    held = _lock(base / f"{chosen}.use", flags)
                    assert held is not None  # nobody else can use an instance that does not exist yet
                    try:
                        source = seed_from() if seed_from is not None else None
                        self._create(base, chosen, 0o755 if mode is None else mode, uid or 0, gid or 0, source)
                    except BaseException:
                        _unlock(held)
                        raise
            finally:
                _unlock(guard)
            if held is None:
                if cancel is not None and cancel.wait(_POLL_S):
                    raise CacheMountError("canceled while waiting for a locked cache mount")
                if cancel is None:
                    threading.Event().wait(_POLL_S)
        try:
            yield base / str(chosen)
        finally:
            _unlock(held)
