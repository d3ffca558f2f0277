"""File actions (mkdir, mkfile, rm, copy) applied to a mounted root, with Dockerfile COPY semantics."""

from __future__ import annotations

import fnmatch
import os
import posixpath
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from workbench.llb.ops import Copy, Mkdir, Mkfile, Rm
from workbench.snapshot.rootpath import resolve_in_root
from workbench.solver.owner import resolve_owner

Excluded = Callable[[str], bool]


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
            os.mkdir(host)
            os.chmod(host, mode)
            if owner is not None:
                os.lchown(host, *owner)
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


def source_paths(src_root: Path, action: Copy, excluded: Excluded | None = None) -> list[str]:
    """The container paths a copy reads, or FileActionError naming the missing source."""
    if action.allow_wildcard and has_glob(action.src):
        matches = _match(src_root, action.src, excluded)
        if not matches and not action.allow_empty_wildcard:
            raise FileActionError(f'"{posixpath.normpath("/" + action.src)}": no source files were specified')
        return matches
    path = posixpath.normpath("/" + action.src)
    host = resolve_in_root(src_root, path, follow_final=action.follow_symlinks)
    if not os.path.lexists(host) or (excluded is not None and path != "/" and excluded(path.lstrip("/"))):
        raise FileActionError(f'"{path}": not found')
    return [path]


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
    sources = source_paths(src_root, action, excluded)
    owner = _owner(dest_root, action.owner)
    if owner is None and reset_owner:
        owner = (0, 0)
    dest = posixpath.normpath("/" + action.dest)
    dest_is_dir = action.dest_is_dir or len(sources) > 1 or action.dest.endswith("/")
    for src in sources:
        src_host = resolve_in_root(src_root, src, follow_final=action.follow_symlinks)
        is_dir = src_host.is_dir() and not src_host.is_symlink()
        if is_dir and action.dir_copy_contents:
            target = _mkdir_all(dest_root, dest, 0o755, owner)
            _copy_dir_contents(src_host, target, src.lstrip("/"), action, owner, excluded)
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
        if is_dir:
            _copy_entry(src_host, target, action, owner)
            _copy_dir_contents(src_host, target, src.lstrip("/"), action, owner, excluded)
        else:
            _copy_entry(src_host, target, action, owner)


def _copy_dir_contents(
    src_dir: Path,
    dest_dir: Path,
    rel: str,
    action: Copy,
    owner: tuple[int, int] | None,
    excluded: Excluded | None,
) -> None:
    for name in sorted(os.listdir(src_dir)):
        child_rel = posixpath.join(rel, name) if rel else name
        if excluded is not None and excluded(child_rel):
            src_child = src_dir / name
            if not (src_child.is_dir() and not src_child.is_symlink()):
                continue
            # An excluded dir may still hold re-included files: walk it, create it only if needed.
            if not _has_included(src_child, child_rel, excluded):
                continue
        src_child = src_dir / name
        dest_child = dest_dir / name
        _copy_entry(src_child, dest_child, action, owner)
        if src_child.is_dir() and not src_child.is_symlink():
            _copy_dir_contents(src_child, dest_child, child_rel, action, owner, excluded)


def _has_included(directory: Path, rel: str, excluded: Excluded) -> bool:
    for dirpath, dirnames, filenames in os.walk(directory):
        base = posixpath.join(rel, os.path.relpath(dirpath, directory)).rstrip("/.")
        for name in filenames + dirnames:
            if not excluded(posixpath.normpath(posixpath.join(base, name))):
                return True
    return False


def _copy_entry(src: Path, dest: Path, action: Copy, owner: tuple[int, int] | None) -> None:
    """Copy one file, symlink, dir (not its contents) or special file, keeping mode and times."""
    st = os.lstat(src)
    if os.path.lexists(dest) and not (stat.S_ISDIR(st.st_mode) and dest.is_dir() and not dest.is_symlink()):
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        else:
            dest.unlink()
    mode = stat.S_IMODE(st.st_mode) if action.mode is None else action.mode
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
