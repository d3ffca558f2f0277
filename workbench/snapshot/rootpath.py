"""Resolve container paths inside a root directory, following symlinks as the container would see them."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

_MAX_LINKS = 255


class PathEscapeError(OSError):
    pass


def resolve_in_root(root: Path, path: str, follow_final: bool = True) -> Path:
    """The host path of container path `path` under `root`.

    Symlinks are resolved with `root` as "/" so no result can point outside `root`. The final component
    is followed only when `follow_final`; missing components are kept as they are.
    """
    parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
    resolved: list[str] = []
    links = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        if name == ".":
            continue
        candidate = os.path.join(root, *resolved, name)
        is_last = not parts
        if (follow_final or not is_last) and os.path.islink(candidate):
            links += 1
            if links > _MAX_LINKS:
                raise PathEscapeError(f"too many levels of symbolic links in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(name)
    return Path(root, *resolved)
