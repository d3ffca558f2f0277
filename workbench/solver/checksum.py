"""Content checksums of what a copy reads from the build context (never mtimes: a touch is not a change)."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

from workbench.llb.ops import Copy
from workbench.solver import context_memo
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
    from workbench.state_root import write_private

    try:
        write_private(path, marshal.dumps(dict(items)))
    except OSError:
        pass  # the digests are only a speed-up: the next build hashes again


_buffers = threading.local()


def _hash_file(path: str, size: int) -> str:
    """sha256 of a file's bytes. Large files are read into one reused buffer: a fresh 1 MiB bytes object per
    read costs page faults that take longer than the hashing."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        if size <= 1 << 18:
            h.update(f.read())
            while chunk := f.read(1 << 16):  # the file grew since it was stat'ed
                h.update(chunk)
            return h.hexdigest()
        buf = getattr(_buffers, "buf", None)
        if buf is None:
            buf = _buffers.buf = bytearray(1 << 20)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _file_digest(path: str, st: os.stat_result) -> str:
    """sha256 of a file, reused while its inode, size, mtime and ctime are unchanged."""
    global _dirty
    key = (path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _lock:
        hit = _file_hashes.get(key)
    if hit is not None:
        return hit
    digest = _hash_file(path, st.st_size)
    with _lock:
        _file_hashes[key] = digest
        _dirty = True
    return digest


_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def quote_name(name: str) -> str:
    """A context path as messages print it: as it is when plain printable text, else quoted as Go's %q
    quotes the name's bytes (`"caf\\xe9"`, `"new\\nline"`; names are read with surrogateescape)."""
    if name.isprintable() and '"' not in name and "\\" not in name:
        return name
    out = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF or code < 0x80 and ch not in _ESCAPES and not ch.isprintable():
            out.append(f"\\x{code & 0xFF:02x}")  # a control byte, or one that is not UTF-8
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def copy_checksum(context: Path, action: Copy, excluded: Excluded | None) -> tuple[str, dict[str, str]]:
    """Checksum of everything `action` reads from `context`, and a short digest per path it read (for
    telling which file changed since the last build).

    Only what the copy takes counts: paths left out by .dockerignore, --exclude, or (with --parents) the
    include pattern do not change the key; kept parent dirs do. Raises FileActionError when a source is
    missing, as the copy itself would. Under the build server, a context unchanged since an earlier build
    is not walked again (workbench.solver.context_memo).
    """
    return context_memo.checksum(context, action, excluded, _walk_checksum)


def _walk_checksum(context: Path, action: Copy, excluded: Excluded | None) -> tuple[str, dict[str, str], bool]:
    """copy_checksum's walk; the flag says whether a file it read has other links (which a change could
    reach from outside the context)."""
    h = hashlib.sha256()
    files: dict[str, str] = {}
    linked = False
    # a tight loop (a context of 20,000 files is common): local names, and the digest cache read directly
    sha256, lstat, file_digest, known = hashlib.sha256, os.lstat, _file_digest, _file_hashes
    for rel, host, st in read_entries(context, action, excluded):
        if st is None:
            st = lstat(host)
        kind = st.st_mode & 0o170000
        header = f"{rel}\0{kind:o}\0{st.st_mode & 0o7777:o}\0"
        if kind == stat.S_IFREG:
            digest = known.get((host, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
            header += f"{st.st_size}\0{digest or file_digest(host, st)}"
            if st.st_nlink > 1:
                linked = True
        elif kind == stat.S_IFLNK:
            header += os.readlink(host)
        encoded = header.encode("utf-8", "surrogateescape")  # names are bytes; not all are UTF-8
        h.update(encoded)
        h.update(b"\n")
        files[rel] = sha256(encoded).hexdigest()[:16]
    return "sha256:" + h.hexdigest(), files, linked
