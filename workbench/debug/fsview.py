"""Looking at step filesystems: `ls`, `cat`, and the diff between two steps (added / changed / removed).

A filesystem is a root directory, or a `StepFiles`: a paused step's root as its process sees it, with the
step's mounts over it and relative paths taken from its working directory.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.fsutil.paths import DIR_FLAGS, open_beneath, resolve_in_root
from workbench.results import ViewError

if TYPE_CHECKING:
    from workbench.solver.hooks import StepContext

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


@dataclass(frozen=True)
class MountPoint:
    """A mount of a step: `target` in the step, `host` the directory or file it shows (None: an empty tmpfs)."""

    target: str
    host: Path | None
    secret: bool = False


@dataclass(frozen=True)
class StepFiles:
    """A step's filesystem as its process sees it: `root`, the step's mounts over it, and its working dir."""

    root: Path
    cwd: str = "/"
    mounts: tuple[MountPoint, ...] = ()

    def absolute(self, path: str) -> str:
        """`path` as an absolute path in the step (relative ones start at the working directory)."""
        return _clean(posixpath.join(self.cwd or "/", path or "."))

    def locate(self, path: str) -> tuple[Path | None, str, MountPoint | None]:
        """Where `path` lives: (the root it is inside, its path there, the mount it is under or None);
        the root is None inside a tmpfs, which shows as empty here."""
        absolute = self.absolute(path)
        best: MountPoint | None = None
        for m in self.mounts:
            if absolute == m.target or absolute.startswith(m.target.rstrip("/") + "/"):
                if best is None or len(m.target) > len(best.target):
                    best = m
        if best is None:
            return self.root, absolute, None
        if best.host is not None and not best.host.is_dir():  # a file mounted on a file
            return (best.host.parent, "/" + best.host.name, best) if absolute == best.target else (None, "", best)
        return best.host, "/" + absolute[len(best.target):].lstrip("/"), best


Files = Path | StepFiles
"""What `entries`, `list_dir` and `read_file` look in: a plain root, or a step's files."""


def _files(files: Files) -> StepFiles:
    return files if isinstance(files, StepFiles) else StepFiles(files)


@contextmanager
def step_files(step: StepContext) -> Iterator[StepFiles]:
    """A paused step's files as its process sees them: its workspace, its mounts (set up for the block) and
    its working directory. Secret mounts are listed but never read here."""
    from workbench.llb.ops import ExecOp

    op = step.vertex.op
    secrets = {_clean(m.target) for m in op.mounts if m.type == "secret"} if isinstance(op, ExecOp) else set()
    root = step.workspace()
    with step.container_spec(["true"]) as spec:
        mounts = tuple(MountPoint(_clean(m.destination), Path(m.source) if m.type == "bind" else None,
                                  _clean(m.destination) in secrets) for m in spec.mounts)
        yield StepFiles(root, spec.cwd or "/", mounts)


def _clean(path: str) -> str:
    """An absolute, normalized container path (never `//x`, which normpath keeps)."""
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def entries(files: Files, path: str) -> list[Entry]:
    """The entries of directory `path`, by name (the path itself when it is not a directory; symlinks
    resolved inside their root only); in a step's files, its mount points show in their parent directory, and
    the directories leading to them even where the root has none (a secret at /run/secrets/s without /run)."""
    fs = _files(files)
    root, inner, mount = fs.locate(path)
    if root is None:  # inside a tmpfs: empty
        if mount is not None and fs.absolute(path) == mount.target:
            return []
        raise ViewError(f"{path}: no such file or directory")
    here = fs.absolute(path)
    mounted: dict[str, Entry] = {}  # a mount shows as what it mounts, whether or not its target exists below
    leading: dict[str, Entry] = {}  # a directory on the way to a deeper mount, where the root lacks it
    for m in fs.mounts:
        rest = posixpath.relpath(m.target, here)
        if m.target == here or rest.startswith(".."):
            continue
        name, _, deeper = rest.partition("/")
        if deeper:
            leading.setdefault(name, Entry(name, stat.S_IFDIR | 0o755, 0, 0, 0))
        else:
            mounted[name] = _entry(m.host, name) if m.host is not None and os.path.lexists(m.host) \
                else Entry(name, stat.S_IFDIR | 0o755, 0, 0, 0)
    try:
        found = {e.name: e for e in _list_in_root(root, inner, path)}
    except ViewError:
        if not (mounted or leading):
            raise
        found = {}
    found = {**leading, **found, **mounted}
    return [found[name] for name in sorted(found)]


def _list_in_root(root: Path, inner: str, path: str) -> list[Entry]:
    """The entries of `inner` in `root` (symlinks resolved inside it), or `path`'s own entry when it is
    not a directory. The resolved path is then reached one directory fd at a time, following no symlink:
    a symlink swapped in meanwhile is refused, never followed out of the root."""
    parts = list(resolve_in_root(root, inner).relative_to(root).parts)
    root_fd = os.open(root, DIR_FLAGS)
    try:
        try:
            fd = open_beneath(root_fd, parts)
        except FileNotFoundError:
            raise ViewError(f"{path}: no such file or directory") from None
        except OSError:
            parent = _parent_fd(root_fd, parts, path)
            try:
                return [_entry_at(parent, parts[-1], path)]
            finally:
                os.close(parent)
        try:
            return [_entry_at(fd, name, name) for name in os.listdir(fd)]
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)


def _parent_fd(root_fd: int, parts: list[str], path: str) -> int:
    """A no-follow fd on the directory holding `parts`' last name (ViewError when the tree changed)."""
    if not parts:
        raise ViewError(f"{path}: not a regular file")
    try:
        return open_beneath(root_fd, parts[:-1])
    except FileNotFoundError:
        raise ViewError(f"{path}: no such file or directory") from None
    except OSError:
        raise ViewError(f"{path}: changed while being read (a symlink where a directory was)") from None


def _entry_at(dir_fd: int, name: str, shown: str) -> Entry:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise ViewError(f"{shown}: no such file or directory") from None
    target = os.readlink(name, dir_fd=dir_fd) if stat.S_ISLNK(st.st_mode) else None
    return Entry(shown, st.st_mode, st.st_uid, st.st_gid, st.st_size, target)


def list_dir(files: Files, path: str) -> list[str]:
    """`ls -l`-like lines for `path` (symlinks resolved inside their root only)."""
    return [e.line() for e in entries(files, path)]


def _entry(host: Path, name: str) -> Entry:
    st = os.lstat(host)
    target = os.readlink(host) if stat.S_ISLNK(st.st_mode) else None
    return Entry(name, st.st_mode, st.st_uid, st.st_gid, st.st_size, target)


def read_file(files: Files, path: str, limit: int = 1 << 20) -> bytes:
    """The bytes of a regular file (at most `limit`); a secret mount's value is refused."""
    root, inner, mount = _files(files).locate(path)
    if mount is not None and mount.secret:
        raise ViewError(f"{path}: a secret mount; its value is not shown (`exec cat {path}` prints it)")
    if root is None:
        raise ViewError(f"{path}: no such file")
    parts = list(resolve_in_root(root, inner).relative_to(root).parts)
    root_fd = os.open(root, DIR_FLAGS)
    try:
        parent = _parent_fd(root_fd, parts, path)
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
        except FileNotFoundError:
            raise ViewError(f"{path}: no such file") from None
        except OSError:
            raise ViewError(f"{path}: not a regular file") from None
        finally:
            os.close(parent)
    finally:
        os.close(root_fd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ViewError(f"{path}: not a regular file")
        return f.read(limit)


@dataclass(frozen=True)
class Change:
    """One path that differs between two filesystems."""

    kind: str  # "added", "changed" or "removed"
    path: str
    size: int  # the new size (the old one for "removed")
    old_size: int = 0
    is_dir: bool = False


def diff_trees(a: Path, b: Path) -> list[Change]:
    """What changed from `a` to `b`: paths added, changed (type, mode, owner, size, content, link) or removed."""
    old, new = _index(a), _index(b)
    changes: list[Change] = []
    for path in sorted(old.keys() | new.keys()):
        if path not in new:
            changes.append(Change("removed", path, old[path][0].st_size, is_dir=_is_dir(old[path][0])))
        elif path not in old:
            changes.append(Change("added", path, new[path][0].st_size, is_dir=_is_dir(new[path][0])))
        elif _differs(old[path], new[path]):
            changes.append(Change("changed", path, new[path][0].st_size, old[path][0].st_size,
                                  is_dir=_is_dir(new[path][0])))
    return changes


def _is_dir(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode)


def summarize(changes: list[Change]) -> str:
    """One line: how many paths were added, changed and removed, and the bytes of their files
    (`2 added (6.1 kB), 1 changed (120 B → 130 B), 0 removed`)."""
    parts = []
    for kind in ("added", "changed", "removed"):
        these = [c for c in changes if c.kind == kind]
        size = sum(c.size for c in these if not c.is_dir)
        if not these:
            parts.append(f"0 {kind}")
        elif kind == "changed":
            old = sum(c.old_size for c in these if not c.is_dir)
            parts.append(f"{len(these)} {kind} ({_size(old)} → {_size(size)})")
        else:
            parts.append(f"{len(these)} {kind} ({_size(size)})")
    return ", ".join(parts)


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
