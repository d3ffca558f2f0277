"""mkdir, mkfile and rm on a mounted root; container paths resolved with the root as "/"."""

from __future__ import annotations

import os
import posixpath
import shutil
from pathlib import Path

from workbench.fsutil.paths import resolve_in_root
from workbench.llb.ops import Mkdir, Mkfile, Rm
from workbench.solver.fileops.errors import FileActionError
from workbench.solver.fileops.sources import has_glob, match
from workbench.solver.owner import resolve_owner

Owner = tuple[int, int] | None


def owner_of(root: Path, owner: str) -> tuple[int, int] | None:
    """A --chown `owner` (names looked up in `root`'s passwd/group) as (uid, gid); None when not given."""
    if not owner:
        return None
    return resolve_owner(root, owner)


def mkdir_all(root: Path, path: str, mode: int, owner: tuple[int, int] | None) -> Path:
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
    owner = owner_of(root, action.owner)
    if action.make_parents:
        mkdir_all(root, action.path, action.mode, owner)
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
    owner = owner_of(root, action.owner)
    if owner is not None:
        os.lchown(host, *owner)


def rm(root: Path, action: Rm) -> None:
    targets = match(root, action.path) if action.allow_wildcard and has_glob(action.path) else [action.path]
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
