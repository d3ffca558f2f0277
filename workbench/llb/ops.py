"""LLB: the build graph as immutable ops, each with a stable digest from its canonical encoding.

A `Vertex` is an op plus its input vertices. Its digest covers the op's fields and its inputs' digests,
never the display name or the source map, so renaming a stage or moving a line keeps the cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
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
class HttpSource:
    """A file downloaded over HTTP(S); the output holds one file `filename` (mode 0600 unless `mode`)."""

    url: str
    checksum: str = ""  # "sha256:…": the download must match it, and it alone keys the cache
    filename: str = ""  # default: the last path segment of the URL, else "index"
    mode: int | None = None


@dataclass(frozen=True)
class GitSource:
    """A git repository checked out at `ref` (branch, tag or commit; default: the remote HEAD)."""

    remote: str
    ref: str = ""
    subdir: str = ""
    keep_git_dir: bool = False


@dataclass(frozen=True)
class Mount:
    """An extra mount of an exec op, as `RUN --mount` describes it.

    `input` is the index in the vertex's inputs of what a bind (or a cache seeded `from`) mounts, its
    `source` path inside that input; -1 for none. Secrets and ssh sockets are named by `id` only: their
    content comes from the build's session and never reaches a digest or a cache key.
    """

    type: str  # bind | cache | tmpfs | secret | ssh
    target: str
    input: int = -1
    source: str = "/"
    readonly: bool = False
    id: str = ""  # cache id (default: the target), secret id, ssh id
    sharing: str = "shared"  # cache: shared | private | locked
    required: bool = False  # secret / ssh
    mode: int | None = None  # secret / ssh / cache
    uid: int | None = None
    gid: int | None = None
    size: int = 0  # tmpfs, bytes; 0: the kernel's default
    env: str = ""  # secret: also (or only, without a target) exposed as this env var


@dataclass(frozen=True)
class Device:
    """A CDI device request of `RUN --device` (name as kind, kind=name or kind=*)."""

    name: str
    required: bool = False


@dataclass(frozen=True)
class ExecOp:
    """Run a process on input 0 as rootfs; the changes it makes are the output."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str = "/"
    user: str = ""
    network: str = "host"
    mounts: tuple[Mount, ...] = ()
    security: str = "sandbox"  # or "insecure": needs the security.insecure entitlement
    devices: tuple[Device, ...] = ()


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
    `mode_str`: a symbolic --chmod (`u+x,g=r`) applied to each copied path's own mode; `mode` wins if set.
    `include_patterns` / `exclude_patterns`: COPY --exclude (and BuildKit's include filters) relative to src.
    `parents`: COPY --parents: keep the source's parent directories (from a `/./` marker in src if any).
    `attempt_unpack`: ADD of a local archive: a tar (plain, gzip, bzip2, xz, zstd) is extracted into dest.
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
    mode_str: str = ""
    include_patterns: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()
    parents: bool = False
    attempt_unpack: bool = False


FileAction = Mkdir | Mkfile | Rm | Copy


@dataclass(frozen=True)
class FileOp:
    """Filesystem actions applied on input 0 (or scratch when there is no input 0)."""

    actions: tuple[FileAction, ...]


@dataclass(frozen=True)
class MergeOp:
    """The inputs' layers stacked in order (COPY --link puts its layer on the base this way)."""


Op = ImageSource | ScratchSource | LocalSource | HttpSource | GitSource | ExecOp | FileOp | MergeOp


@dataclass(frozen=True)
class StepConfig:
    """The stage's image config as it stands at a step (ENV, ARG, WORKDIR and USER before it): what a RUN
    there would get, and what a debugger's shell at a step that is not a RUN gets. Display only: it is in
    no digest (an ExecOp's own env, cwd and user are)."""

    env_map: Mapping[str, str] = field(default_factory=dict, hash=False)
    """The environment, in order (a snapshot, never changed: a copy is cheap where thousands of steps each
    hold one; `env` spells it out only when asked)."""
    workdir: str = "/"
    user: str = ""

    @property
    def env(self) -> tuple[str, ...]:
        """The environment as `KEY=value` entries."""
        return tuple(f"{k}={v}" for k, v in self.env_map.items())


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
    arg_names: frozenset[str] = field(default=frozenset(), compare=False)
    """Names of the env entries that are build args (so a miss can say "build arg X changed")."""
    instruction: str = field(default="", compare=False)
    """The Dockerfile instruction as written (the name shows values substituted): what a miss compares."""
    hidden: bool = field(default=False, compare=False)
    """Not shown in the progress (the merge half of a `COPY --link`, shown by its copy)."""
    config: StepConfig | None = field(default=None, compare=False)
    """The stage's config at this step (None outside a Dockerfile stage); not part of the digest."""

    @cached_property
    def digest(self) -> str:
        # inputs first, without recursion: a chain of a few hundred steps is deeper than Python's stack
        for v in self._unhashed_below():
            v.digest  # noqa: B018
        body = {
            "type": type(self.op).__name__,
            "op": _canonical(asdict(self.op)),
            "inputs": [v.digest for v in self.inputs],
        }
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def _unhashed_below(self) -> list[Vertex]:
        """The vertices below this one whose digest is not known yet, inputs before dependents."""
        out: list[Vertex] = []
        seen: set[int] = set()
        stack: list[tuple[Vertex, bool]] = [(i, False) for i in reversed(self.inputs)]
        while stack:
            v, expanded = stack.pop()
            if expanded:
                out.append(v)
                continue
            if id(v) in seen or "digest" in v.__dict__:
                continue
            seen.add(id(v))
            stack.append((v, True))
            stack.extend((i, False) for i in reversed(v.inputs))
        return out

    def walk(self) -> list[Vertex]:
        """Every vertex reachable from this one, inputs before dependents, each once."""
        seen: dict[str, Vertex] = {}
        stack: list[tuple[Vertex, bool]] = [(self, False)]
        while stack:  # a depth-first post-order without recursion (chains can be thousands of steps deep)
            v, expanded = stack.pop()
            if v.digest in seen:
                continue
            if expanded:
                seen[v.digest] = v
                continue
            stack.append((v, True))
            stack.extend((i, False) for i in reversed(v.inputs))
        return list(seen.values())


def config_at(v: Vertex) -> StepConfig | None:
    """The env, workdir and user a process at `v` gets: an exec's own, else the stage's config at that step
    (None where no Dockerfile stage made it)."""
    op = v.op
    if isinstance(op, ExecOp):
        return StepConfig(dict(e.partition("=")[::2] for e in op.env), op.cwd or "/", op.user)
    return v.config


def ignores_cache(v: Vertex, no_cache: bool) -> bool:
    """Whether `v` runs again whatever the cache holds: its own `ignore_cache`, or a build's `--no-cache` on a
    step it applies to. As BuildKit's Dockerfile frontend marks them, those are RUN, COPY and ADD: exec ops,
    file ops that copy and the merge of a `COPY --link`. A base image, a WORKDIR, an inline document and a
    remote source (checked against its origin on every build anyway) stay cached; what depends on a step
    that runs again runs again too (the solver's concern)."""
    if v.ignore_cache:
        return True
    if not no_cache:
        return False
    op = v.op
    return (isinstance(op, ExecOp | MergeOp)
            or isinstance(op, FileOp) and any(isinstance(a, Copy) for a in op.actions))


def rerun_roots(target: Vertex, no_cache: bool) -> dict[str, Vertex | None]:
    """For each vertex below `target` (by digest), the step at or below it that ignores the cache (`ignores_cache`),
    or None: such a step runs again, and so does everything that depends on it, as in BuildKit."""
    roots: dict[str, Vertex | None] = {}
    for v in target.walk():  # inputs first
        roots[v.digest] = v if ignores_cache(v, no_cache) else \
            next((r for i in v.inputs if (r := roots[i.digest]) is not None), None)
    return roots
