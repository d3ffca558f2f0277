"""Looking at step filesystems: `ls`, `cat`, and the diff between two steps (added / changed / removed)."""

from __future__ import annotations

import difflib
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.fsutil.paths import resolve_in_root
from workbench.results import ViewError

if TYPE_CHECKING:
    pass

TEXT_DIFF_LIMIT = 64 * 1024  # files larger than this get no line diff


@dataclass(frozen=True)
class Entry:
    """One directory entry as `ls -l` shows it (`target`: where a symlink points, else None)."""

    name: str
    mode: int
    uid: int
    gid: int
    size: int
    target: str | None = None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def line(self) -> str:
        shown = self.name + ("/" if self.is_dir else "")
        if self.target is not None:
            shown += f" -> {self.target}"
        return f"{stat.filemode(self.mode)} {self.uid:>5} {self.gid:>5} {self.size:>10}  {shown}"


def entries(root: Path, path: str) -> list[Entry]:
    """The entries of directory `path` inside `root`, by name (the path itself when it is not a directory;
    symlinks resolved inside `root` only)."""
    host = resolve_in_root(root, path)
    if not os.path.lexists(host):
        raise ViewError(f"{path}: no such file or directory")
    if not host.is_dir():
        return [_entry(host, path)]
    return [_entry(host / name, name) for name in sorted(os.listdir(host))]


def list_dir(root: Path, path: str) -> list[str]:
    """`ls -l`-like lines for `path` inside `root` (symlinks resolved inside `root` only)."""
    return [e.line() for e in entries(root, path)]


def _entry(host: Path, name: str) -> Entry:
    st = os.lstat(host)
    target = os.readlink(host) if stat.S_ISLNK(st.st_mode) else None
    return Entry(name, st.st_mode, st.st_uid, st.st_gid, st.st_size, target)


def read_file(root: Path, path: str, limit: int = 1 << 20) -> bytes:
    """The bytes of a regular file inside `root` (at most `limit`)."""
    host = resolve_in_root(root, path)
    if not host.is_file():
        raise ViewError(f"{path}: not a regular file" if os.path.lexists(host) else f"{path}: no such file")
    with open(host, "rb") as f:
        return f.read(limit)


@dataclass(frozen=True)
class Change:
    """One path that differs between two filesystems."""

    kind: str  # "added", "changed" or "removed"
    path: str
    size: int  # the new size (the old one for "removed")
    old_size: int = 0


def diff_trees(a: Path, b: Path) -> list[Change]:
    """What changed from `a` to `b`: paths added, changed (type, mode, owner, size, content, link) or removed."""
    old, new = _index(a), _index(b)
    changes: list[Change] = []
    for path in sorted(old.keys() | new.keys()):
        if path not in new:
            changes.append(Change("removed", path, old[path][0].st_size))
        elif path not in old:
            changes.append(Change("added", path, new[path][0].st_size))
        elif _differs(old[path], new[path]):
            changes.append(Change("changed", path, new[path][0].st_size, old[path][0].st_size))
    return changes


def _index(root: Path) -> dict[str, tuple[os.stat_result, Path]]:
    out: dict[str, tuple[os.stat_result, Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            host = Path(dirpath) / name
            out["/" + str(host.relative_to(root))] = (os.lstat(host), host)
    return out


def _differs(a: tuple[os.stat_result, Path], b: tuple[os.stat_result, Path]) -> bool:
    (sa, ha), (sb, hb) = a, b
    if (sa.st_mode, sa.st_uid, sa.st_gid) != (sb.st_mode, sb.st_uid, sb.st_gid):
        return True
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(ha) != os.readlink(hb)
    if stat.S_ISREG(sa.st_mode):
        return sa.st_size != sb.st_size or _digest(ha) != _digest(hb)
    return False


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def format_diff(changes: list[Change], a: Path, b: Path, text_diffs: bool = True) -> list[str]:
    """Lines: `A /path (size)`, `C /path (old → new)`, `D /path`, and unified diffs of small text files."""
    lines: list[str] = []
    for c in changes:
        if c.kind == "added":
            lines.append(f"A {c.path} ({_size(c.size)})")
        elif c.kind == "removed":
            lines.append(f"D {c.path} ({_size(c.size)})")
        else:
            lines.append(f"C {c.path} ({_size(c.old_size)} → {_size(c.size)})")
            if text_diffs:
                lines += _text_diff(resolve_in_root(a, c.path, follow_final=False),
                                    resolve_in_root(b, c.path, follow_final=False), c.path)
    if not changes:
        lines.append("no differences")
    return lines


def _text_diff(a: Path, b: Path, path: str) -> list[str]:
    if not (a.is_file() and b.is_file() and not a.is_symlink() and not b.is_symlink()):
        return []
    if a.stat().st_size > TEXT_DIFF_LIMIT or b.stat().st_size > TEXT_DIFF_LIMIT:
        return []
    try:
        old, new = a.read_text(), b.read_text()
    except (UnicodeDecodeError, OSError):
        return []
    return ["    " + line.rstrip("\n") for line in difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"a{path}", f"b{path}")]


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"
