"""LLB: the build graph as immutable ops, each with a stable digest from its canonical encoding.

A `Vertex` is an op plus its input vertices. Its digest covers the op's fields and its inputs' digests,
never the display name or the source map, so renaming a stage or moving a line keeps the cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from workbench.progress.events import SourceLocation


@dataclass(frozen=True)
class ImageSource:
    """An image from a registry, pinned to a manifest digest."""

    ref: str
    manifest_digest: str
    platform: str = "linux/amd64"


@dataclass(frozen=True)
class ScratchSource:
    """The empty filesystem."""


@dataclass(frozen=True)
class LocalSource:
    """A directory on the client (the build context); `excludes` are .dockerignore patterns."""

    name: str
    excludes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mount:
    """An extra mount of an exec op (cache, secret, tmpfs, bind)."""

    type: str
    target: str
    source: str = ""
    readonly: bool = False


@dataclass(frozen=True)
class ExecOp:
    """Run a process on input 0 as rootfs; the changes it makes are the output."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str = "/"
    user: str = ""
    network: str = "host"
    mounts: tuple[Mount, ...] = ()


@dataclass(frozen=True)
class Mkdir:
    path: str
    mode: int = 0o755
    make_parents: bool = True
    owner: str = ""


@dataclass(frozen=True)
class Mkfile:
    path: str
    data: bytes
    mode: int = 0o644
    owner: str = ""


@dataclass(frozen=True)
class Rm:
    path: str
    allow_not_found: bool = False
    allow_wildcard: bool = False


@dataclass(frozen=True)
class Copy:
    """Copy `src` (a path or glob in input `src_input`) to `dest` (in input 0).

    `dir_copy_contents`: a source directory's contents land in dest (Dockerfile COPY semantics).
    `dest_is_dir`: dest names a directory (it ended with a slash, or there are several sources).
    """

    src_input: int
    src: str
    dest: str
    owner: str = ""
    mode: int | None = None
    follow_symlinks: bool = True
    dir_copy_contents: bool = True
    allow_wildcard: bool = True
    allow_empty_wildcard: bool = False
    dest_is_dir: bool = False
    create_dest_path: bool = True


FileAction = Mkdir | Mkfile | Rm | Copy


@dataclass(frozen=True)
class FileOp:
    """Filesystem actions applied on input 0 (or scratch when there is no input 0)."""

    actions: tuple[FileAction, ...]


Op = ImageSource | ScratchSource | LocalSource | ExecOp | FileOp


def _canonical(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"bytes": hashlib.sha256(value).hexdigest()}
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


@dataclass(frozen=True, eq=False)
class Vertex:
    """An op in the graph, with its inputs and what to show for it."""

    op: Op
    inputs: tuple[Vertex, ...] = ()
    name: str = field(default="", compare=False)
    source: SourceLocation | None = field(default=None, compare=False)
    ignore_cache: bool = field(default=False, compare=False)

    @cached_property
    def digest(self) -> str:
        body = {
            "type": type(self.op).__name__,
            "op": _canonical(asdict(self.op)),
            "inputs": [v.digest for v in self.inputs],
        }
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def walk(self) -> list[Vertex]:
        """Every vertex reachable from this one, inputs before dependents, each once."""
        seen: dict[str, Vertex] = {}

        def visit(v: Vertex) -> None:
            if v.digest in seen:
                return
            for i in v.inputs:
                visit(i)
            seen[v.digest] = v

        visit(self)
        return list(seen.values())
