"""Content checksums of what a copy reads from the build context (never mtimes: a touch is not a change)."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

from workbench.llb.ops import Copy
from workbench.solver.fileops import Excluded, read_entries

_file_hashes: dict[tuple[str, int, int, int, int], str] = {}
_lock = threading.Lock()
_dirty = False


def load_hash_cache(path: Path) -> None:
    """Take the file digests a previous process saved (a re-run then rehashes only changed files)."""
    import marshal

    try:
        data = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return
    if isinstance(data, dict):
        with _lock:
            for k, v in data.items():
                _file_hashes.setdefault(k, v)


def save_hash_cache(path: Path, limit: int = 500_000) -> None:
    """Keep the digests for the next process (atomically; the newest `limit` entries)."""
    import marshal

    global _dirty
    with _lock:
        if not _dirty:
            return
        items = list(_file_hashes.items())[-limit:]
        _dirty = False
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(marshal.dumps(dict(items)))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def _file_digest(path: str, st: os.stat_result) -> str:
    """sha256 of a file, reused while its inode, size, mtime and ctime are unchanged."""
    global _dirty
    key = (path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _lock:
        hit = _file_hashes.get(key)
    if hit is not None:
        return hit
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _lock:
        _file_hashes[key] = digest
        _dirty = True
    return digest


def _entry(path: str, rel: str, follow: bool) -> tuple[str, os.stat_result]:
    st = os.stat(path) if follow else os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    header = f"{rel}\0{kind:o}\0{stat.S_IMODE(st.st_mode):o}\0"
    if stat.S_ISREG(st.st_mode):
        header += f"{st.st_size}\0{_file_digest(path, st)}"
    elif stat.S_ISLNK(st.st_mode):
        header += os.readlink(path)
    return header, st


def copy_checksum(context: Path, action: Copy, excluded: Excluded | None) -> tuple[str, dict[str, str]]:
    """Checksum of everything `action` reads from `context`, and a short digest per path it read (for
    telling which file changed since the last build).

    Only what the copy takes counts: paths left out by .dockerignore, --exclude, or (with --parents) the
    include pattern do not change the key; kept parent dirs do. Raises FileActionError when a source is
    missing, as the copy itself would.
    """
    h = hashlib.sha256()
    files: dict[str, str] = {}
    for rel, host in read_entries(context, action, excluded):
        header, _ = _entry(str(host), rel, follow=False)
        encoded = header.encode()
        h.update(encoded + b"\n")
        files[rel] = hashlib.sha256(encoded).hexdigest()[:16]
    return "sha256:" + h.hexdigest(), files
