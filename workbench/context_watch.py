"""What the build server remembers of build contexts between builds.

A build's checksum of what a COPY reads from the context costs one `lstat` per path (20,000 paths: a
sixth of a second in Python). The server watches each context it has seen with inotify, so it knows when
nothing in it changed since a checksum was taken; the next build then reuses that checksum instead of
walking the context again.

Correctness rests on ordering: a context's watches are in place before its generation is handed out, a
build walks the context only after it got the generation, and any event later than that (a write, a
touch, a rename, a new or removed entry anywhere below) moves the context to a new generation, so a
checksum stored under an older one is never handed out again. What inotify cannot see is ruled out
instead: contexts on filesystems other than local ones (a network or FUSE filesystem changes without
events), mounts appearing or vanishing below a context (checked at every lookup), and a context whose
path now names another directory (its device and inode are compared). Files with more than one link are
refused by the caller (a change through a link outside the context reaches no watched directory).
"""

from __future__ import annotations

import itertools
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from workbench import inotify
from workbench.mountinfo import Mount, mounts

# filesystems whose changes always reach inotify (no remote writers)
LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "bcachefs", "jfs",
                               "reiserfs", "nilfs2"})
MAX_DIRS = 50_000  # a larger context is walked by every build (watches are a limited resource)
MAX_SETUP_S = 2.0  # watching takes longer than this: the server would keep other builds waiting
RETRY_AFTER_S = 600.0  # a context that could not be watched is not tried again for this long
MAX_CONTEXTS = 8
MAX_MEMOS = 64
MAX_MEMO_PATHS = 400_000  # paths over all remembered checksums (each holds a digest per path it read)

_WATCH_MASK = inotify.CHANGES | inotify.IN_ONLYDIR | inotify.IN_DONT_FOLLOW
_generations = itertools.count(1)


@dataclass
class _Context:
    root: str
    ident: tuple[int, int]  # (st_dev, st_ino) of the root when it was watched
    mounts: tuple[str, ...]  # mount points below the root then
    generation: int = 0
    wds: set[int] = field(default_factory=set)


def mounts_of(root: str, table: list[Mount] | None = None) -> tuple[str, tuple[str, ...]] | None:
    """(filesystem type holding `root`, mount points strictly below it), from `table` or this namespace's."""
    if table is None:
        try:
            table = mounts()
        except OSError:
            return None
    best, best_type, below = "", "", []
    prefix = root.rstrip("/") + "/"
    for point, fstype in table:
        if point.startswith(prefix):
            below.append(point)
        elif (root == point or root.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, best_type = point, fstype
    return (best_type, tuple(sorted(below))) if best else None


class ContextWatcher:
    """Contexts under watch, their generations, and the checksums taken in each."""

    def __init__(self) -> None:
        self._inotify: inotify.Inotify | None = None
        self._contexts: OrderedDict[str, _Context] = OrderedDict()  # least recently used first
        self._owners: dict[int, set[str]] = {}  # watch descriptor -> roots it serves
        self._paths: dict[int, str] = {}  # watch descriptor -> a path of its directory
        self._memos: OrderedDict[tuple[str, str], tuple[int, Any]] = OrderedDict()
        self._refused: dict[tuple[str, tuple[int, int]], float] = {}  # (root, ident) -> when to try again

    @property
    def fd(self) -> int | None:
        """The descriptor to select on (None before the first context is watched)."""
        return self._inotify.fd if self._inotify is not None else None

    def lookup(self, root: str, ident: tuple[int, int], signature: str) -> tuple[int | None, Any]:
        """(generation, checksum stored under it or None); generation None: this context is not watched."""
        self.drain()
        ctx = self._contexts.get(root)
        if ctx is not None:
            where = mounts_of(root)
            if ctx.ident != ident or where is None or where[1] != ctx.mounts:
                self._forget(ctx)
                ctx = None
        if ctx is None:
            if self._refused.get((root, ident), 0.0) > time.monotonic():
                return None, None
            ctx = self._watch(root, ident)
            if ctx is None:
                if len(self._refused) > 256:
                    self._refused.clear()
                self._refused[(root, ident)] = time.monotonic() + RETRY_AFTER_S
                return None, None
        self._contexts.move_to_end(root)
        memo = self._memos.get((root, signature))
        if memo is not None and memo[0] == ctx.generation:
            self._memos.move_to_end((root, signature))
            return ctx.generation, memo[1]
        return ctx.generation, None

    def store(self, root: str, signature: str, generation: int, value: Any) -> None:
        """Keep `value` (a checksum taken by a walk that began in `generation`) while that generation lasts."""
        self.drain()
        ctx = self._contexts.get(root)
        if ctx is None or ctx.generation != generation:
            return  # something changed while it was walked
        self._memos[(root, signature)] = (generation, value)
        self._memos.move_to_end((root, signature))
        while len(self._memos) > MAX_MEMOS or (len(self._memos) > 1 and self._memo_paths() > MAX_MEMO_PATHS):
            self._memos.popitem(last=False)

    def _memo_paths(self) -> int:
        return sum(len(v[1]) for _, v in self._memos.values() if isinstance(v, tuple) and len(v) == 2
                   and isinstance(v[1], dict))

    def drain(self) -> None:
        """Apply the events queued so far: every context they touch moves to a new generation."""
        if self._inotify is None:
            return
        for event in self._inotify.read():
            if event.mask & inotify.IN_Q_OVERFLOW:  # events were lost: nothing is known any more
                for ctx in list(self._contexts.values()):
                    self._forget(ctx)
                continue
            roots = self._owners.get(event.wd, ())
            for root in list(roots):
                if root in self._contexts:
                    self._contexts[root].generation = next(_generations)
            if event.mask & inotify.IN_IGNORED:  # the directory is gone (or unmounted): its watch too
                for root in self._owners.pop(event.wd, set()):
                    if root in self._contexts:
                        self._contexts[root].wds.discard(event.wd)
                self._paths.pop(event.wd, None)
            elif event.mask & inotify.IN_ISDIR and event.mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO):
                parent = self._paths.get(event.wd)
                for root in list(roots):
                    grown = self._contexts.get(root)
                    if grown is not None and parent is not None:
                        if not self._add_tree(grown, os.path.join(parent, event.name)):
                            self._forget(grown)

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    # -- watches ------------------------------------------------------------------------------------

    def _watch(self, root: str, ident: tuple[int, int]) -> _Context | None:
        try:
            table = mounts()
        except OSError:
            return None
        where = mounts_of(root, table)
        if where is None or where[0] not in LOCAL_FILESYSTEMS:
            return None
        for point in where[1]:
            below = mounts_of(point, table)
            if below is None or below[0] not in LOCAL_FILESYSTEMS:
                return None
        if self._inotify is None:
            try:
                self._inotify = inotify.Inotify()
            except OSError:
                return None
        ctx = _Context(root, ident, where[1])
        self._contexts[root] = ctx
        if not self._add_tree(ctx, root):
            self._forget(ctx)
            return None
        ctx.generation = next(_generations)  # after every watch is in place
        while len(self._contexts) > MAX_CONTEXTS:
            self._forget(next(iter(self._contexts.values())))
        return ctx

    def _add_tree(self, ctx: _Context, top: str) -> bool:
        """Watch `top` and every directory below it (each one before it is listed, so that an entry made
        meanwhile is either listed or reported); False if the context is too large or cannot be watched."""
        assert self._inotify is not None
        pending = [top]
        give_up = time.monotonic() + MAX_SETUP_S
        while pending:
            if time.monotonic() > give_up:
                return False
            directory = pending.pop()
            try:
                wd = self._inotify.add_watch(directory, _WATCH_MASK)
            except FileNotFoundError:
                continue  # removed meanwhile: its parent's watch reported it
            except OSError:
                return False  # out of watches, or not readable
            ctx.wds.add(wd)
            self._owners.setdefault(wd, set()).add(ctx.root)
            self._paths.setdefault(wd, directory)
            if len(ctx.wds) > MAX_DIRS:
                return False
            try:
                with os.scandir(directory) as entries:
                    pending += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
            except FileNotFoundError:
                continue
            except OSError:
                return False
        return True

    def _forget(self, ctx: _Context) -> None:
        self._contexts.pop(ctx.root, None)
        for key in [k for k in self._memos if k[0] == ctx.root]:
            del self._memos[key]
        for wd in ctx.wds:
            owners = self._owners.get(wd)
            if owners is None:
                continue
            owners.discard(ctx.root)
            if not owners:
                del self._owners[wd]
                self._paths.pop(wd, None)
                if self._inotify is not None:
                    self._inotify.rm_watch(wd)
        ctx.wds.clear()
