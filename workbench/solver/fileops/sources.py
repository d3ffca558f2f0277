"""Which source paths a copy reads, as BuildKit's fsutil copier picks them.

`exclude_patterns` / `include_patterns` are .dockerignore-style patterns matched against paths relative to the
copied source; `parents` turns the part of `src` after a `/./` pivot (or all of it) into an include pattern
below the pivot.
"""

from __future__ import annotations

import enum
import fnmatch
import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from workbench.fsutil.paths import resolve_in_root
from workbench.fsutil.patterns import IgnoreMatcher, may_match_below
from workbench.llb.ops import Copy
from workbench.solver.fileops.errors import FileActionError

Excluded = Callable[[str], bool]


def has_glob(path: str) -> bool:
    """Whether `path` holds a wildcard (`*`, `?`, `[`)."""
    return any(c in path for c in "*?[")


class _Pick(enum.Enum):
    SKIP = 0  # neither the path nor anything below it is copied
    INCLUDE = 1  # copied
    DESCEND = 2  # a dir not copied for itself: created only if something below it is


@dataclass(slots=True)
class Item:
    """A path below a copied source, with its lstat."""

    rel: str  # relative to the copied source
    ctx_rel: str  # relative to the source root (what `excluded` and the cache key see)
    host: str
    st: os.stat_result


def _entry_name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _walk_all(host_dir: str, ctx_rel: str) -> list[Item]:
    """Everything below `host_dir`, parents before children, in name order: `CopyFilter._walk` without filters,
    the common case, kept lean (one lstat per path, no matching, no nested generators)."""
    out: list[Item] = []
    fmt, dir_kind = stat.S_IFMT, stat.S_IFDIR  # local names in a hot loop
    # (host dir, rel prefix, ctx prefix, insertion index): a dir's children go right after the dir itself
    pending: list[tuple[str, str, str, int]] = [(host_dir, "", ctx_rel + "/" if ctx_rel else "", 0)]
    while pending:
        directory, prefix, ctx_prefix, at = pending.pop()
        with os.scandir(directory) as it:
            entries = sorted(it, key=_entry_name)
        items: list[Item] = []
        subdirs: list[tuple[str, str, str, int]] = []
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            name = entry.name
            items.append(Item(prefix + name, ctx_prefix + name, entry.path, st))
            if fmt(st.st_mode) == dir_kind:
                subdirs.append((entry.path, prefix + name + "/", ctx_prefix + name + "/", len(items)))
        out[at:at] = items
        # children of later dirs first, so that the insertion points of earlier ones stay valid
        pending.extend((d, p, c, at + i) for d, p, c, i in subdirs)
    return out


def _join(base: str, name: str) -> str:
    return f"{base}/{name}" if base else name


class CopyFilter:
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
                below = any(not p.exclusion and may_match_below(p.text, rel) for p in group.patterns)
                if not is_dir or not below:
                    return _Pick.SKIP
                hidden = True
        return _Pick.DESCEND if hidden else _Pick.INCLUDE

    def walk(self, host_dir: Path | str, ctx_rel: str) -> Iterator[Item]:
        """What is copied below `host_dir`, parents before children, in name order."""
        if self.copies_all:
            yield from _walk_all(str(host_dir), ctx_rel)
        else:
            yield from self._walk(str(host_dir), "", ctx_rel, [])

    def _walk(self, host_dir: str, rel: str, ctx_rel: str, pending: list[Item]) -> Iterator[Item]:
        with os.scandir(host_dir) as it:
            entries = sorted(it, key=_entry_name)
        for entry in entries:
            name = entry.name
            st = entry.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            item = Item(_join(rel, name), _join(ctx_rel, name), entry.path, st)
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


def match(root: Path, pattern: str, excluded: Excluded | None = None) -> list[str]:
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
        return [base for base, _ in parents_bases(src_root, action, excluded)]
    if action.allow_wildcard and has_glob(action.src):
        matches = match(src_root, action.src, excluded)
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


def parents_bases(src_root: Path, action: Copy, excluded: Excluded | None) -> list[tuple[str, str]]:
    """(pivot dir, pattern) for a --parents copy; FileActionError when a path without globs is missing."""
    base, pattern = split_parents(action.src)
    if has_glob(base):
        bases = match(src_root, base, excluded)
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


def parents_items(src_root: Path, action: Copy, excluded: Excluded | None,
                   bases: list[tuple[str, str]] | None = None) -> list[Item]:
    """What a --parents copy copies, relative to its pivot dir(s) (`bases`, found when not given)."""
    items: list[Item] = []
    if bases is None:
        bases = parents_bases(src_root, action, excluded)
    for base, pattern in bases:
        filt = CopyFilter(action, excluded, extra_include=pattern)
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
        for item in parents_items(src_root, action, excluded):
            yield item.ctx_rel, item.host, item.st
        return
    filt = CopyFilter(action, excluded)
    for src in source_paths(src_root, action, excluded):
        host = resolve_in_root(src_root, src, follow_final=action.follow_symlinks)
        yield src.lstrip("/"), str(host), None
        if host.is_dir() and not host.is_symlink():
            for item in filt.walk(host, src.lstrip("/")):
                yield item.ctx_rel, item.host, item.st
