"""File actions (mkdir, mkfile, rm, copy) applied to a mounted root, with Dockerfile COPY/ADD semantics.

Copy filters follow BuildKit's fsutil copier: `exclude_patterns` / `include_patterns` are .dockerignore-style
patterns matched against paths relative to the copied source; `parents` turns the part of `src` after a `/./`
pivot (or all of it) into an include pattern below the pivot; `mode_str` is a chmod(1) mode parsed as BSD
setmode(3) does (BuildKit uses tonistiigi/dchapes-mode); `attempt_unpack` extracts local tar archives.
"""

from __future__ import annotations

import bz2
import enum
import errno
import fnmatch
import gzip
import lzma
import os
import posixpath
import re
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from workbench.frontend.dockerfile.dockerignore import IgnoreMatcher, compile_pattern
from workbench.llb.ops import Copy, Mkdir, Mkfile, Rm
from workbench.snapshot.layers import UnsafeLayerError, _remove_leaf, _Root
from workbench.snapshot.rootpath import resolve_in_root
from workbench.solver.owner import resolve_owner

Excluded = Callable[[str], bool]
Owner = tuple[int, int] | None
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FileActionError(Exception):
    """A file action that cannot be done; the message names the path."""


def has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _owner(root: Path, owner: str) -> tuple[int, int] | None:
    if not owner:
        return None
    return resolve_owner(root, owner)


def _mkdir_all(root: Path, path: str, mode: int, owner: tuple[int, int] | None) -> Path:
    """Create container dir `path` and missing parents (each with `mode` and `owner`)."""
    parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
    current = "/"
    host = Path(root)
    for part in parts:
        current = posixpath.join(current, part)
        host = resolve_in_root(root, current)
        if not os.path.lexists(host):
            # A symlink on the way (`/x -> /a/b`) can name a dir whose parents are missing too: made inside
            # the root, as BuildKit's MkdirAll on the resolved path (missing components are never links).
            missing = [host]
            while not os.path.lexists(missing[-1].parent) and missing[-1].parent != Path(root):
                missing.append(missing[-1].parent)
            for new in reversed(missing):
                os.mkdir(new)
                os.chmod(new, mode)
                if owner is not None:
                    os.lchown(new, *owner)
        elif not host.is_dir():
            raise FileActionError(f"cannot create directory {current}: a file exists there")
    return host


def mkdir(root: Path, action: Mkdir) -> None:
    owner = _owner(root, action.owner)
    if action.make_parents:
        _mkdir_all(root, action.path, action.mode, owner)
        return
    host = resolve_in_root(root, action.path)
    if not os.path.lexists(host):
        os.mkdir(host)
        os.chmod(host, action.mode)
        if owner is not None:
            os.lchown(host, *owner)


def mkfile(root: Path, action: Mkfile) -> None:
    host = resolve_in_root(root, action.path)
    host.write_bytes(action.data)
    os.chmod(host, action.mode)
    owner = _owner(root, action.owner)
    if owner is not None:
        os.lchown(host, *owner)


def rm(root: Path, action: Rm) -> None:
    targets = _match(root, action.path) if action.allow_wildcard and has_glob(action.path) else [action.path]
    for target in targets:
        host = resolve_in_root(root, target, follow_final=False)
        if not os.path.lexists(host):
            if action.allow_not_found:
                continue
            raise FileActionError(f"{target}: not found")
        if host.is_dir() and not host.is_symlink():
            shutil.rmtree(host)
        else:
            host.unlink()


# --- symbolic --chmod (BSD setmode(3), as BuildKit's tonistiigi/dchapes-mode) ------------------------------

_SUID, _SGID, _STXT = 0o4000, 0o2000, 0o1000
_STANDARD = _SUID | _SGID | 0o777
_WHO = {"a": _STANDARD, "u": _SUID | 0o700, "g": _SGID | 0o070, "o": 0o007}
_CLEAR, _SET, _UBITS, _GBITS, _OBITS = 1, 2, 4, 8, 16
_SHIFTS = ((6, _UBITS), (3, _GBITS), (0, _OBITS))


@dataclass(frozen=True)
class ModeSet:
    """A parsed chmod mode: (command, copy flags, bits) steps applied in order to permission bits."""

    cmds: tuple[tuple[str, int, int], ...]

    def apply(self, mode: int, is_dir: bool = False) -> int:
        """The bits (07777) `mode` becomes; `X` acts on a dir or when the original mode has an x bit."""
        old = new = mode & 0o7777
        for cmd, flags, bits in self.cmds:
            if cmd == "+":
                new |= bits
            elif cmd == "-":
                new &= ~bits
            elif cmd == "X":
                if old & 0o111 or is_dir:
                    new |= bits
            else:  # "u", "g", "o": copy that class's current bits to the classes in `flags`
                value = (new >> {"u": 6, "g": 3, "o": 0}[cmd]) & 0o7
                if flags & _CLEAR:
                    clear = 0o7 if flags & _SET else value
                    for shift, who in _SHIFTS:
                        if flags & who:
                            new &= ~((clear << shift) & bits)
                if flags & _SET:
                    for shift, who in _SHIFTS:
                        if flags & who:
                            new |= (value << shift) & bits
        return new & 0o7777


def _add_bits(cmds: list[tuple[str, int, int]], op: str, who: int, perm: int, mask: int) -> None:
    if op == "=":
        cmds.append(("-", 0, who or _STANDARD))
        op = "+"
    cmds.append((op, 0, (who & perm) if who else (mask & perm)))


def _add_copy(cmds: list[tuple[str, int, int]], source: str, who: int, op: str, mask: int) -> None:
    if who:
        flags = (_UBITS if who & 0o400 else 0) | (_GBITS if who & 0o040 else 0) | (_OBITS if who & 0o004 else 0)
        bits = -1
    else:
        flags, bits = _UBITS | _GBITS | _OBITS, mask
    flags |= {"+": _SET, "-": _CLEAR, "=": _SET | _CLEAR}[op]
    cmds.append((source, flags, bits))


def parse_chmod(text: str, umask: int = 0) -> ModeSet:
    """Parse an octal (<= 07777) or symbolic chmod(1) mode as BuildKit does; FileActionError if it is invalid.

    Symbolic: comma-separated clauses `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`. A clause without who (`+x`) is
    masked by `umask` (buildkitd runs with umask 0, so it means `a`); `X` only acts with `+`; `s`/`t` are
    ignored for `o` alone; `=` with no perms clears the class.
    """

    def invalid() -> FileActionError:
        return FileActionError(f"invalid chmod parameter '{text}': invalid syntax")

    if not text:
        raise invalid()
    if "0" <= text[0] <= "9":
        if not re.fullmatch(r"[0-7]+", text) or int(text, 8) > 0o7777:
            raise invalid()
        return ModeSet((("-", 0, 0o7777), ("+", 0, int(text, 8))))
    mask = ~umask
    cmds: list[tuple[str, int, int]] = []
    i, n = 0, len(text)
    equal_done = False
    while True:
        who = 0
        while i < n and text[i] in _WHO:
            who |= _WHO[text[i]]
            i += 1
        while True:  # one operator and its perms; repeats for `u+r-w`
            if i >= n or text[i] not in "+-=":
                raise invalid()
            op = text[i]
            i += 1
            if op == "=":
                equal_done = False
            who &= ~_STXT
            perm = perm_x = 0
            while True:
                c = text[i] if i < n else ""
                if c == "r":
                    perm |= 0o444
                elif c == "w":
                    perm |= 0o222
                elif c == "x":
                    perm |= 0o111
                elif c == "X":
                    if op == "+":
                        perm_x = 0o111
                elif c == "s":
                    if who == 0 or who & ~0o007:
                        perm |= _SUID | _SGID
                elif c == "t":
                    if who == 0 or who & ~0o007:
                        who |= _STXT
                        perm |= _STXT
                elif c in ("u", "g", "o"):
                    if perm:
                        _add_bits(cmds, op, who, perm, mask)
                        perm = 0
                    if op == "=":
                        equal_done = True
                    if perm_x:
                        _add_bits(cmds, "X", who, perm_x, mask)
                        perm_x = 0
                    _add_copy(cmds, c, who, op, mask)
                else:
                    if perm or (op == "=" and not equal_done):
                        if op == "=":
                            equal_done = True
                        _add_bits(cmds, op, who, perm, mask)
                    if perm_x:
                        _add_bits(cmds, "X", who, perm_x, mask)
                    break
                i += 1
            if i >= n:
                return ModeSet(tuple(cmds))
            if text[i] == ",":
                i += 1
                break


def _target_mode(st_mode: int, action: Copy, mode_set: ModeSet | None) -> int:
    if action.mode is not None:
        return action.mode
    if mode_set is not None:
        return mode_set.apply(stat.S_IMODE(st_mode), stat.S_ISDIR(st_mode))
    return stat.S_IMODE(st_mode)


# --- which source paths a copy reads ------------------------------------------------------------------------


class _Pick(enum.Enum):
    SKIP = 0  # neither the path nor anything below it is copied
    INCLUDE = 1  # copied
    DESCEND = 2  # a dir not copied for itself: created only if something below it is


@dataclass(slots=True)
class _Item:
    rel: str  # relative to the copied source
    ctx_rel: str  # relative to the source root (what `excluded` and the cache key see)
    host: str
    st: os.stat_result


def _entry_name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _walk_all(host_dir: str, ctx_rel: str) -> list[_Item]:
    """Everything below `host_dir`, parents before children, in name order: `_Filter._walk` without filters,
    the common case, kept lean (one lstat per path, no matching, no nested generators)."""
    out: list[_Item] = []
    fmt, dir_kind = stat.S_IFMT, stat.S_IFDIR  # local names in a hot loop
    # (host dir, rel prefix, ctx prefix, insertion index): a dir's children go right after the dir itself
    pending: list[tuple[str, str, str, int]] = [(host_dir, "", ctx_rel + "/" if ctx_rel else "", 0)]
    while pending:
        directory, prefix, ctx_prefix, at = pending.pop()
        with os.scandir(directory) as it:
            entries = sorted(it, key=_entry_name)
        items: list[_Item] = []
        subdirs: list[tuple[str, str, str, int]] = []
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            name = entry.name
            items.append(_Item(prefix + name, ctx_prefix + name, entry.path, st))
            if fmt(st.st_mode) == dir_kind:
                subdirs.append((entry.path, prefix + name + "/", ctx_prefix + name + "/", len(items)))
        out[at:at] = items
        # children of later dirs first, so that the insertion points of earlier ones stay valid
        pending.extend((d, p, c, at + i) for d, p, c, i in subdirs)
    return out


def _join(base: str, name: str) -> str:
    return f"{base}/{name}" if base else name


def _pattern_may_match_below(pattern: str, directory: str) -> bool:
    """Whether some path strictly below `directory` could match `pattern` (component-wise prefix match)."""
    pparts, dparts = pattern.split("/"), directory.split("/")
    for i, part in enumerate(dparts):
        if i >= len(pparts):
            return False
        if "**" in pparts[i]:
            return True
        if not compile_pattern(pparts[i]).match(part):
            return False
    return len(pparts) > len(dparts)


class _Filter:
    """Decides which paths below a copied source are copied.

    Applied in turn: the context's .dockerignore (`excluded`, on source-root-relative paths), then the
    action's exclude patterns and include patterns (each relative to the copied source). An excluded dir is
    skipped whole unless a `!` pattern may re-include something below it; a dir that is only on the way to an
    included path is created when that path is copied.
    """

    def __init__(self, action: Copy, excluded: Excluded | None, extra_include: str = "") -> None:
        self.excluded = excluded
        self.exclude = IgnoreMatcher(list(action.exclude_patterns)) if action.exclude_patterns else None
        groups = [IgnoreMatcher(list(action.include_patterns)), IgnoreMatcher([extra_include] if extra_include else [])]
        self.includes = [g for g in groups if g]  # a path must match one pattern of each group
        self.copies_all = excluded is None and self.exclude is None and not self.includes

    def decide(self, rel: str, ctx_rel: str, is_dir: bool) -> _Pick:
        hidden = False
        if self.excluded is not None and self.excluded(ctx_rel):
            matcher = getattr(self.excluded, "__self__", None)
            if not is_dir or (isinstance(matcher, IgnoreMatcher) and not matcher.may_include_below(ctx_rel)):
                return _Pick.SKIP
            hidden = True
        if self.exclude is not None and self.exclude.excluded(rel):
            if not is_dir or not self.exclude.may_include_below(rel):
                return _Pick.SKIP
            hidden = True
        for group in self.includes:
            if not group.excluded(rel):  # IgnoreMatcher.excluded: "matched by a (non-negated) pattern"
                below = any(not p.exclusion and _pattern_may_match_below(p.text, rel) for p in group.patterns)
                if not is_dir or not below:
                    return _Pick.SKIP
                hidden = True
        return _Pick.DESCEND if hidden else _Pick.INCLUDE

    def walk(self, host_dir: Path | str, ctx_rel: str) -> Iterator[_Item]:
        """What is copied below `host_dir`, parents before children, in name order."""
        if self.copies_all:
            yield from _walk_all(str(host_dir), ctx_rel)
        else:
            yield from self._walk(str(host_dir), "", ctx_rel, [])

    def _walk(self, host_dir: str, rel: str, ctx_rel: str, pending: list[_Item]) -> Iterator[_Item]:
        with os.scandir(host_dir) as it:
            entries = sorted(it, key=_entry_name)
        for entry in entries:
            name = entry.name
            st = entry.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            item = _Item(_join(rel, name), _join(ctx_rel, name), entry.path, st)
            pick = self.decide(item.rel, item.ctx_rel, is_dir)
            if pick is _Pick.SKIP:
                continue
            if pick is _Pick.INCLUDE:
                flushed = pending[:]
                pending.clear()
                yield from flushed
                yield item
            else:
                pending.append(item)
            if is_dir:
                yield from self._walk(entry.path, item.rel, item.ctx_rel, pending)
            if pending and pending[-1] is item:
                pending.pop()


def _match(root: Path, pattern: str, excluded: Excluded | None = None) -> list[str]:
    """Container paths under `root` matching a glob `pattern` (one level per component)."""
    parts = [p for p in posixpath.normpath("/" + pattern).split("/") if p]
    found = ["/"]
    for part in parts:
        nxt = []
        for base in found:
            host = resolve_in_root(root, base)
            if not has_glob(part):
                cand = posixpath.join(base, part)
                if os.path.lexists(resolve_in_root(root, cand, follow_final=False)):
                    nxt.append(cand)
                continue
            if not host.is_dir():
                continue
            for name in sorted(os.listdir(host)):
                if fnmatch.fnmatchcase(name, part):
                    nxt.append(posixpath.join(base, name))
        found = nxt
    if excluded is not None:
        found = [p for p in found if not excluded(p.lstrip("/"))]
    return found


def _glob_base(pattern: str) -> str:
    """The container dir before the first glob component of `pattern`."""
    parts = [p for p in posixpath.normpath("/" + pattern).split("/") if p]
    base = "/"
    for part in parts:
        if has_glob(part):
            break
        base = posixpath.join(base, part)
    return base


def source_paths(src_root: Path, action: Copy, excluded: Excluded | None = None) -> list[str]:
    """The container paths a copy reads, or FileActionError naming the missing source.

    A glob's matches that are not dirs are also filtered by the exclude patterns (relative to the glob's
    fixed leading dirs); a matched dir is filtered inside. For `parents`, these are the pivot dirs.
    """
    if action.parents:
        return [base for base, _ in _parents_bases(src_root, action, excluded)]
    if action.allow_wildcard and has_glob(action.src):
        matches = _match(src_root, action.src, excluded)
        if not matches and not action.allow_empty_wildcard:
            raise FileActionError(f'"{posixpath.normpath("/" + action.src)}": no source files were specified')
        if action.exclude_patterns:
            patterns = IgnoreMatcher(list(action.exclude_patterns))
            base = _glob_base(action.src)
            matches = [
                m for m in matches
                if resolve_in_root(src_root, m, follow_final=action.follow_symlinks).is_dir()
                or not patterns.excluded(posixpath.relpath(m, base))
            ]
        return matches
    path = posixpath.normpath("/" + action.src)
    host = resolve_in_root(src_root, path, follow_final=action.follow_symlinks)
    if not os.path.lexists(host) or (excluded is not None and path != "/" and excluded(path.lstrip("/"))):
        raise FileActionError(f'"{path}": not found')
    return [path]


def split_parents(src: str) -> tuple[str, str]:
    """COPY --parents `src` → (pivot dir, pattern below it): split at the first `/./`, else pivot "/"."""
    base, sep, pattern = src.partition("/./")
    if not sep:
        base, pattern = "/", src
    pattern = posixpath.normpath("/" + pattern).lstrip("/")
    return posixpath.normpath("/" + base), pattern


def _parents_bases(src_root: Path, action: Copy, excluded: Excluded | None) -> list[tuple[str, str]]:
    """(pivot dir, pattern) for a --parents copy; FileActionError when a path without globs is missing."""
    base, pattern = split_parents(action.src)
    if has_glob(base):
        bases = _match(src_root, base, excluded)
        if not bases and not action.allow_empty_wildcard:
            raise FileActionError(f'"{base}": no source files were specified')
    else:
        bases = [base]
    for b in bases:
        host = resolve_in_root(src_root, b)
        if not os.path.lexists(host):
            raise FileActionError(f'"{b}": not found')
        if not host.is_dir():
            raise FileActionError(f'"{b}": not a directory (the part of a --parents source before "/./")')
    if pattern and not has_glob(base) and not has_glob(pattern):
        full = posixpath.join(base, pattern)
        host = resolve_in_root(src_root, full, follow_final=False)
        if not os.path.lexists(host) or (excluded is not None and excluded(full.lstrip("/"))):
            raise FileActionError(f'"{full}": not found')
    return [(b, pattern) for b in bases]


def _parents_items(src_root: Path, action: Copy, excluded: Excluded | None,
                   bases: list[tuple[str, str]] | None = None) -> list[_Item]:
    """What a --parents copy copies, relative to its pivot dir(s) (`bases`, found when not given)."""
    items: list[_Item] = []
    if bases is None:
        bases = _parents_bases(src_root, action, excluded)
    for base, pattern in bases:
        filt = _Filter(action, excluded, extra_include=pattern)
        items += filt.walk(resolve_in_root(src_root, base), base.lstrip("/"))
    if not items and has_glob(action.src) and not action.allow_empty_wildcard:
        raise FileActionError(f'"{posixpath.normpath("/" + action.src)}": no source files were specified')
    return items


def read_entries(src_root: Path, action: Copy,
                 excluded: Excluded | None = None) -> Iterator[tuple[str, str, os.stat_result | None]]:
    """(source-root-relative path, host path, its lstat when already known) of each path `copy` reads,
    parents first.

    Raises FileActionError when a source is missing, as the copy itself would.
    """
    if action.parents:
        for item in _parents_items(src_root, action, excluded):
            yield item.ctx_rel, item.host, item.st
        return
    filt = _Filter(action, excluded)
    for src in source_paths(src_root, action, excluded):
        host = resolve_in_root(src_root, src, follow_final=action.follow_symlinks)
        yield src.lstrip("/"), str(host), None
        if host.is_dir() and not host.is_symlink():
            for item in filt.walk(host, src.lstrip("/")):
                yield item.ctx_rel, item.host, item.st


# --- copy ---------------------------------------------------------------------------------------------------


def copy(
    src_root: Path,
    dest_root: Path,
    action: Copy,
    excluded: Excluded | None = None,
    reset_owner: bool = False,
) -> None:
    """Do one Copy action from `src_root` into `dest_root`.

    `reset_owner`: the source is the build context, whose files count as owned by 0:0.
    """
    mode_set = parse_chmod(action.mode_str) if action.mode_str and action.mode is None else None
    chown = _owner(dest_root, action.owner)
    owner = (0, 0) if chown is None and reset_owner else chown
    dest = posixpath.normpath("/" + action.dest)
    if action.parents:
        bases = _parents_bases(src_root, action, excluded)
        if not bases:
            return  # a wildcard pivot that matched nothing (allowed empty): no destination either
        items = _parents_items(src_root, action, excluded, bases)
        _copy_items(items, _mkdir_all(dest_root, dest, 0o755, owner), action, mode_set, owner)
        return
    sources = source_paths(src_root, action, excluded)
    filt = _Filter(action, excluded)
    # several matches and a dest without a slash: each is copied to dest in turn, as BuildKit's copier does
    dest_is_dir = action.dest_is_dir or action.dest.endswith("/")
    for src in sources:
        src_host = resolve_in_root(src_root, src, follow_final=action.follow_symlinks)
        if action.attempt_unpack and is_archive(src_host):
            unpack(src_host, dest_root, dest, chown, name=src)  # archive owners are kept unless --chown
            continue
        st = os.lstat(src_host)
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir and action.dir_copy_contents:
            target = _mkdir_all(dest_root, dest, 0o755, owner)
            _copy_items(filt.walk(src_host, src.lstrip("/")), target, action, mode_set, owner)
            continue
        if dest_is_dir:
            parent = _mkdir_all(dest_root, dest, 0o755, owner)
            target = parent / posixpath.basename(src.rstrip("/") or "/")
        else:
            parent_path = posixpath.dirname(dest)
            if action.create_dest_path:
                _mkdir_all(dest_root, parent_path, 0o755, owner)
            target = resolve_in_root(dest_root, dest)
            if target.is_dir() and not target.is_symlink():
                target = target / posixpath.basename(src)
        _copy_entry(src_host, target, st, _target_mode(st.st_mode, action, mode_set), owner)
        if is_dir:
            _copy_items(filt.walk(src_host, src.lstrip("/")), target, action, mode_set, owner)


def _copy_items(items: Iterable[_Item], target: Path, action: Copy, mode_set: ModeSet | None,
                owner: Owner) -> None:
    for item in items:
        _copy_entry(item.host, target / item.rel, item.st, _target_mode(item.st.st_mode, action, mode_set), owner)


def _copy_entry(src: Path | str, dest: Path, st: os.stat_result, mode: int, owner: Owner) -> None:
    """Copy one file, symlink, dir (not its contents) or special file, with `mode` and the source's times."""
    if stat.S_ISREG(st.st_mode) and _copy_new_file(src, dest, st, mode, owner):
        return
    if os.path.lexists(dest) and not (stat.S_ISDIR(st.st_mode) and dest.is_dir() and not dest.is_symlink()):
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        else:
            dest.unlink()
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dest)
    elif stat.S_ISDIR(st.st_mode):
        if not dest.exists():
            os.mkdir(dest)
        os.chmod(dest, mode)
    elif stat.S_ISREG(st.st_mode):
        shutil.copyfile(src, dest, follow_symlinks=False)
        os.chmod(dest, mode)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        os.mknod(dest, stat.S_IFMT(st.st_mode) | mode, st.st_rdev)
    else:
        return
    uid, gid = owner if owner is not None else (st.st_uid, st.st_gid)
    os.lchown(dest, uid, gid)
    if not stat.S_ISLNK(st.st_mode):
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_new_file(src: Path | str, dest: Path, st: os.stat_result, mode: int, owner: Owner) -> bool:
    """The common case, on descriptors only (a COPY of 20,000 files is mostly syscalls): a regular file to
    a path that does not exist yet. False, having done nothing, when `dest` exists."""
    try:
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _copy_data(fd, out)
        finally:
            os.close(fd)
        uid, gid = owner if owner is not None else (st.st_uid, st.st_gid)
        os.fchown(out, uid, gid)  # before the chmod: a chown clears setuid/setgid bits
        os.fchmod(out, mode)
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    except BaseException:
        os.close(out)
        os.unlink(dest)
        raise
    os.close(out)
    return True


def _copy_data(src_fd: int, dest_fd: int) -> None:
    """All of `src_fd` into `dest_fd`, in the kernel where it can."""
    try:
        while os.copy_file_range(src_fd, dest_fd, 1 << 30):
            pass
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(src_fd, 1 << 20):
        os.write(dest_fd, chunk)


# --- ADD: local tar archives --------------------------------------------------------------------------------


def _decompressed(f: IO[bytes]) -> IO[bytes]:
    """`f` decompressed by its magic bytes (gzip, bzip2, xz, zstd), or `f` itself."""
    head = f.read(6)
    f.seek(0)
    if head[:3] == b"\x1f\x8b\x08":
        return cast(IO[bytes], gzip.GzipFile(fileobj=f, mode="rb"))
    if head[:3] == b"BZh":
        return cast(IO[bytes], bz2.BZ2File(f))
    if head == b"\xfd7zXZ\x00":
        return cast(IO[bytes], lzma.LZMAFile(f))
    if head[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True))
    return f


def is_archive(path: Path) -> bool:
    """Whether `path` is a regular file holding a tar (plain or compressed), by content, as BuildKit checks."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open(path, "rb") as f, tarfile.open(fileobj=_decompressed(f), mode="r|") as tar:
            return tar.next() is not None
    except Exception:  # unreadable, not compressed as it claims, or no valid first tar header
        return False


def _archive_parts(name: str) -> list[str]:
    """A member name → components below the extraction dir; FileActionError if it climbs out with `..`."""
    clean = posixpath.normpath(name.lstrip("/"))
    if clean in ("", "."):
        return []
    if clean == ".." or clean.startswith("../"):
        raise FileActionError(f"archive path {name!r} is outside extraction root")
    return clean.split("/")


def unpack(archive: Path, dest_root: Path, dest: str, owner: Owner = None, name: str = "") -> None:
    """Extract tar `archive` into container dir `dest` of `dest_root` (created 0755), never writing outside it.

    Members keep their mode, mtime and numeric owner (`owner`, from --chown, wins). Absolute names and symlink
    targets met on the way are taken from the extraction dir, a relative `..` stops there, a name that climbs
    out is an error, and a hard link must point at a member already extracted. `.wh.` names are plain files.
    """
    target = _mkdir_all(dest_root, dest, 0o755, owner)
    root = _Root(target)
    dir_times: list[tuple[tuple[str, ...], float]] = []
    try:
        with open(archive, "rb") as f, tarfile.open(fileobj=_decompressed(f), mode="r|") as tar:
            for m in tar:
                parts = _archive_parts(m.name)
                if parts:
                    _extract(root, tar, m, parts, owner, dir_times)
        for canonical, mtime in reversed(dir_times):  # children changed their parents' times
            try:
                fd, _ = root.open_dir(list(canonical), "", create=False, follow=False)
            except (OSError, UnsafeLayerError):
                continue
            try:
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
    except (OSError, UnsafeLayerError, tarfile.TarError, EOFError) as e:
        raise FileActionError(f"failed to extract {name or archive}: {e}") from None
    finally:
        root.close()


def _extract(root: _Root, tar: tarfile.TarFile, m: tarfile.TarInfo, parts: list[str], owner: Owner,
             dir_times: list[tuple[tuple[str, ...], float]]) -> None:
    pfd, canonical = root.parent(tuple(parts[:-1]), m.name)
    base = parts[-1]
    uid, gid = owner if owner is not None else (m.uid, m.gid)
    mode = m.mode & 0o7777
    try:
        existing: os.stat_result | None = os.stat(base, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        existing = None
    if existing is not None and not (m.isdir() and stat.S_ISDIR(existing.st_mode)):
        _remove_leaf(pfd, base)
    if m.isreg():
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
        try:
            data = tar.extractfile(m)
            if data is not None:
                with os.fdopen(os.dup(fd), "wb") as out:
                    shutil.copyfileobj(data, out, 1 << 20)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)
    elif m.isdir():
        if existing is None or not stat.S_ISDIR(existing.st_mode):
            os.mkdir(base, 0o700, dir_fd=pfd)
        fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        dir_times.append(((*canonical, base), m.mtime))
    elif m.issym():
        os.symlink(m.linkname, base, dir_fd=pfd)
        os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
        os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
    elif m.islnk():
        _hardlink(root, m, pfd, base)
        if not stat.S_ISLNK(os.stat(base, dir_fd=pfd, follow_symlinks=False).st_mode):
            os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
            os.chmod(base, mode, dir_fd=pfd)
            os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
    elif m.ischr() or m.isblk() or m.isfifo():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
        os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor) if not m.isfifo() else 0, dir_fd=pfd)
        os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(base, mode, dir_fd=pfd, follow_symlinks=False)
        os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)


def _hardlink(root: _Root, m: tarfile.TarInfo, pfd: int, base: str) -> None:
    """Hard link `base` to `m.linkname`, an extracted path reached without any symlink."""
    target = _archive_parts(m.linkname)
    if not target:
        raise FileActionError(f"archive hard link {m.name!r} targets the extraction root")
    try:
        tfd, _ = root.open_dir(target[:-1], m.name, create=False, follow=False)
    except (FileNotFoundError, NotADirectoryError):
        raise FileActionError(f"archive hard link {m.name!r}: target {m.linkname!r} is not in the archive") from None
    try:
        if stat.S_ISDIR(os.stat(target[-1], dir_fd=tfd, follow_symlinks=False).st_mode):
            raise FileActionError(f"archive hard link {m.name!r}: target {m.linkname!r} is a directory")
        os.link(target[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        raise FileActionError(f"archive hard link {m.name!r}: target {m.linkname!r} is not in the archive") from None
    finally:
        os.close(tfd)
