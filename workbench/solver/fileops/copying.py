"""COPY / ADD of paths from a source root into a mounted root, with mode, owner and times."""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from workbench.fsutil.paths import resolve_in_root
from workbench.fsutil.tar import is_archive
from workbench.llb.ops import Copy
from workbench.solver.fileops.actions import Owner, mkdir_all, owner_of
from workbench.solver.fileops.archive import unpack
from workbench.solver.fileops.chmod import ModeSet, parse_chmod
from workbench.solver.fileops.sources import (
    CopyFilter,
    Excluded,
    Item,
    parents_bases,
    parents_items,
    source_paths,
)


def _target_mode(st_mode: int, action: Copy, mode_set: ModeSet | None) -> int:
    if action.mode is not None:
        return action.mode
    if mode_set is not None:
        return mode_set.apply(stat.S_IMODE(st_mode), stat.S_ISDIR(st_mode))
    return stat.S_IMODE(st_mode)


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
    chown = owner_of(dest_root, action.owner)
    owner = (0, 0) if chown is None and reset_owner else chown
    dest = posixpath.normpath("/" + action.dest)
    if action.parents:
        bases = parents_bases(src_root, action, excluded)
        if not bases:
            return  # a wildcard pivot that matched nothing (allowed empty): no destination either
        items = parents_items(src_root, action, excluded, bases)
        _copy_items(items, mkdir_all(dest_root, dest, 0o755, owner), action, mode_set, owner)
        return
    sources = source_paths(src_root, action, excluded)
    filt = CopyFilter(action, excluded)
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
            target = mkdir_all(dest_root, dest, 0o755, owner)
            _copy_items(filt.walk(src_host, src.lstrip("/")), target, action, mode_set, owner)
            _set_times(target, st)  # the source dir's times, new or existing dest alike (BuildKit's copier)
            continue
        if dest_is_dir:
            parent = mkdir_all(dest_root, dest, 0o755, owner)
            target = parent / posixpath.basename(src.rstrip("/") or "/")
        else:
            parent_path = posixpath.dirname(dest)
            if action.create_dest_path:
                mkdir_all(dest_root, parent_path, 0o755, owner)
            target = resolve_in_root(dest_root, dest)
            if target.is_dir() and not target.is_symlink():
                target = target / posixpath.basename(src)
        _copy_entry(src_host, target, st, _target_mode(st.st_mode, action, mode_set), owner)
        if is_dir:
            _copy_items(filt.walk(src_host, src.lstrip("/")), target, action, mode_set, owner)
            _set_times(target, st)  # what went in below it moved its mtime


def _copy_items(items: Iterable[Item], target: Path, action: Copy, mode_set: ModeSet | None,
                owner: Owner) -> None:
    dirs: list[tuple[Path, os.stat_result]] = []
    for item in items:
        dest = target / item.rel
        _copy_entry(item.host, dest, item.st, _target_mode(item.st.st_mode, action, mode_set), owner)
        if stat.S_ISDIR(item.st.st_mode):
            dirs.append((dest, item.st))
    # a directory's times once everything below it is in (each entry made in it moved its mtime), as BuildKit's
    # copier leaves them: the source's, so the same tree gives the same layer whenever it is copied
    for dest, st in reversed(dirs):
        _set_times(dest, st)


def _set_times(dest: Path, st: os.stat_result) -> None:
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


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
