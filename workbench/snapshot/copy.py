"""The copying snapshotter: snapshots without overlayfs, for user namespaces that cannot mount it.

A writable snapshot is a full copy of its parent's merged tree (each layer applied in turn, files copied by
`cp --reflink=auto`, which clones or uses copy_file_range; never hard links: a RUN may change a file in place).
What a step changed is found by tracking, not by comparing contents: every path's inode and ctime are taken
once the copy is made, and any write, chmod, chown, rename or link changes the ctime, which nothing in user
space can set back. The changes are moved into the snapshot dir in the same overlay upper-dir format the
overlay snapshotter leaves (a deletion is a 0:0 char device, a directory made where something was is opaque),
so layers are written the same way.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.fsutil.tar import is_opaque, opaque_markers, opaque_xattr
from workbench.snapshot.scratch import remove_tree

_WHITEOUT = os.makedev(0, 0)

Tracked = dict[str, tuple[int, int]]
"""Relative path ("" for the root) → (inode, ctime in ns), as the copy was when the step began."""


class CopyError(OSError):
    """A copy or a diff failed; the message names the path and the cause."""


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == _WHITEOUT


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        remove_tree(Path(path))
    elif os.path.lexists(path):
        os.unlink(path)


def _prepare(layer: str, dest: str, done: list[str]) -> None:
    """Make `dest` ready for `cp -a layer/. dest/`: apply whiteouts and opaque dirs, and unlink every
    non-dir the layer replaces (cp would truncate it in place, through any hard link). `done` gets the
    dest paths to clean after the copy (whiteout devices and opaque marks that cp carries over)."""
    with os.scandir(layer) as it:
        entries = list(it)
    for e in entries:
        st = e.stat(follow_symlinks=False)
        target = os.path.join(dest, e.name)
        exists = os.path.lexists(target)
        if _is_whiteout(st):
            if exists:
                _remove(target)
            done.append(target)
        elif stat.S_ISDIR(st.st_mode):
            opaque = is_opaque(e.path)
            if exists and (opaque or not os.path.isdir(target) or os.path.islink(target)):
                _remove(target)
            if opaque:
                done.append(target)
            _prepare(e.path, target, done)  # where dest has no such dir, this only notes the whiteouts below
        elif exists:
            _remove(target)


def _cp(src: Path, dest: Path) -> None:
    proc = subprocess.run(["cp", "-a", "--reflink=auto", "--", f"{src}/.", f"{dest}/"], capture_output=True,
                          text=True, errors="replace")
    if proc.returncode != 0:
        raise CopyError(f"copying {src} to {dest}: {proc.stderr.strip()}")


def apply_layers(lowers: list[Path], dest: Path) -> None:
    """Fill the empty dir `dest` with the merged view of `lowers` (overlay lower dirs, topmost first)."""
    for layer in reversed(lowers):
        cleanup: list[str] = []
        _prepare(str(layer), str(dest), cleanup)
        _cp(layer, dest)
        for path in cleanup:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if _is_whiteout(st):
                os.unlink(path)
                continue
            for name in opaque_markers():
                try:
                    os.removexattr(path, name, follow_symlinks=False)
                except OSError:
                    pass


def track(root: Path) -> Tracked:
    """Every path under `root` with its inode and ctime; returns once the clock has moved past them all,
    so that a change made next gets a ctime of its own even on a coarse clock."""
    tracked: Tracked = {}
    newest = 0

    def visit(rel: str, path: str) -> None:
        nonlocal newest
        with os.scandir(path) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                child = f"{rel}/{e.name}" if rel else e.name
                tracked[child] = (st.st_ino, st.st_ctime_ns)
                newest = max(newest, st.st_ctime_ns)
                if stat.S_ISDIR(st.st_mode):
                    visit(child, e.path)

    st = os.lstat(root)
    tracked[""] = (st.st_ino, st.st_ctime_ns)
    newest = st.st_ctime_ns
    visit("", str(root))
    _wait_past(root, newest)
    return tracked


def _wait_past(root: Path, ctime_ns: int) -> None:
    probe = root.parent / f".{root.name}-tick"
    probe.touch()
    try:
        deadline = time.monotonic() + 1.0
        while os.lstat(probe).st_ctime_ns <= ctime_ns and time.monotonic() < deadline:
            time.sleep(0.001)
            os.utime(probe)
    finally:
        probe.unlink()


def extract_changes(tracked: Tracked, merged: Path, upper: Path) -> None:
    """Move what changed in `merged` since `track` into the empty dir `upper`, in overlay upper-dir format.

    `merged` is left incomplete: it is a step's throwaway copy.
    """
    made: list[tuple[str, str, os.stat_result]] = []  # (upper dir, merged dir, its stat before we moved from it)
    children: dict[str, set[str]] = {}
    for rel in tracked:
        if rel:
            parent, _, name = rel.rpartition("/")
            children.setdefault(parent, set()).add(name)

    def ensure(rel: str) -> str:
        """The dir `rel` in upper, made (with its parents) as a copy-up of merged's."""
        dest = os.path.join(upper, rel) if rel else str(upper)
        if rel and not os.path.isdir(dest):
            ensure(os.path.dirname(rel))
            os.mkdir(dest)
            src = os.path.join(merged, rel)
            made.append((dest, src, os.lstat(src)))  # before a child moves out, which changes its mtime
        return dest

    def changed(rel: str, st: os.stat_result) -> bool:
        return tracked.get(rel) != (st.st_ino, st.st_ctime_ns)

    def visit(rel: str, path: str) -> None:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        names = set()
        for e in entries:
            names.add(e.name)
            child = f"{rel}/{e.name}" if rel else e.name
            st = e.stat(follow_symlinks=False)
            same_dir = stat.S_ISDIR(st.st_mode) and tracked.get(child, (None,))[0] == st.st_ino
            if same_dir:
                if changed(child, st):
                    ensure(child)
                visit(child, e.path)
            elif changed(child, st):
                dest = os.path.join(ensure(rel), e.name)
                os.rename(e.path, dest)
                if stat.S_ISDIR(st.st_mode) and child in tracked:
                    os.setxattr(dest, opaque_xattr(), b"y", follow_symlinks=False)
        for gone in sorted(children.get(rel, set()) - names):
            os.mknod(os.path.join(ensure(rel), gone), stat.S_IFCHR, _WHITEOUT)

    try:
        root_st = os.lstat(merged)
        visit("", str(merged))
        if changed("", root_st):
            made.insert(0, (str(upper), str(merged), root_st))
        for dest, src, st in reversed(made):  # children before parents: filling a dir changes its mtime
            os.chown(dest, st.st_uid, st.st_gid)
            shutil.copystat(src, dest, follow_symlinks=False)  # the mode and xattrs
            os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    except OSError as e:
        raise CopyError(f"recording the step's changes under {merged}: {e}") from e


class Views:
    """The merged trees of the chains this build made, kept in `dir`: the next step on a chain takes its tree
    instead of copying every layer again (a linear build reuses only its newest: `KEEP` are kept)."""

    KEEP = 4

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        self._views: dict[tuple[str, ...], Path] = {}
        self._pending: dict[Path, tuple[tuple[str, ...], Path]] = {}  # prepared snapshot → (chain, its view)
        self._lock = threading.Lock()

    def _take(self, chain: list[str]) -> Path | None:
        with self._lock:
            return self._views.pop(tuple(chain), None)

    @contextmanager
    def writable(self, chain: list[str], lowers: list[Path], target: Path, upper: Path) -> Iterator[Path]:
        """The empty dir `target` filled with `chain`'s merged tree (its kept view, moved: no copy); on a normal
        exit the changes are moved into `upper` and the tree, now as the new snapshot merges, kept for
        `committed`."""
        try:
            view = self._take(chain)
            if view is not None:
                os.rename(view, target)
            else:
                apply_layers(lowers, target)
            tracked = track(target)
            yield target
            extract_changes(tracked, target, upper)
            apply_layers([upper], target)
            self.dir.mkdir(exist_ok=True)
            view = self.dir / secrets.token_hex(6)
            os.rename(target, view)
            with self._lock:
                self._pending[upper.parent] = (tuple(chain), view)
        finally:
            if target.exists():
                remove_tree(target)

    @contextmanager
    def readonly(self, chain: list[str], lowers: list[Path], target: Path) -> Iterator[Path]:
        """`chain`'s merged tree: its kept view, lent (readers never write to it; a writable step wanting
        it meanwhile makes its own copy), else `target` filled."""
        view = self._take(chain)
        try:
            if view is None:
                apply_layers(lowers, target)
            yield view or target
        finally:
            remove_tree(target)
            if view is not None:
                with self._lock:
                    again = self._views.setdefault(tuple(chain), view)  # unless made again meanwhile
                if again is not view:
                    remove_tree(view)

    def committed(self, prepared: Path, snapshot: str) -> None:
        """`prepared` became `snapshot`: its view is the merged tree of its chain and `snapshot`."""
        with self._lock:
            chain, view = self._pending.pop(prepared, ((), None))
            if view is None:
                return
            self._views[(*chain, snapshot)] = view
            old = list(self._views)[:-self.KEEP]
            dropped = [self._views.pop(k) for k in old]
        for path in dropped:
            remove_tree(path)

    def discard(self, prepared: Path) -> None:
        with self._lock:
            _, view = self._pending.pop(prepared, ((), None))
        if view is not None:
            remove_tree(view)


def probe_overlay(scratch: Path) -> str | None:
    """Whether a writable overlay mounts under `scratch` here: None, or why not (the mount's error)."""
    import secrets

    from workbench.snapshot.overlay import mount_overlay, unmount

    test = scratch / f"overlay-probe-{secrets.token_hex(4)}"
    try:
        for d in ("lower", "upper", "work", "merged"):
            (test / d).mkdir(parents=True)
        mount_overlay([test / "lower"], test / "upper", test / "work", test / "merged")
        unmount(test / "merged")
        return None
    except OSError as e:
        return e.strerror or str(e)
    finally:
        shutil.rmtree(test, ignore_errors=True)
