"""The build API: what a build is asked for (`BuildRequest`, `OutputSpec`), what it gives back (`BuildResult`,
`BuildFailure`), and what may watch it run (`BuildRecorder`). The engine and every front end speak it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from workbench.progress.events import EventBus, SourceLocation
from workbench.solver.session import Session

if TYPE_CHECKING:
    from workbench.llb.ops import Vertex
    from workbench.progress.redact import Redactor
    from workbench.solver.hooks import StepHooks


def default_root() -> Path:
    """`$WORKBENCH_ROOT`, else `/var/lib/workbench` for root, else `$XDG_DATA_HOME/workbench` (workbench.xdg:
    the root of our rootless namespace is the user)."""
    from workbench.xdg import data_root

    if env := os.environ.get("WORKBENCH_ROOT"):
        return Path(env)
    return Path(data_root())


class OutputSpecError(ValueError):
    pass


OUTPUT_TYPES = ("image", "oci", "docker", "tar", "local")


@dataclass(frozen=True)
class OutputSpec:
    """One `--output`: type (image, oci, docker, tar, local) and its attributes (dest, name, push, ...)."""

    type: str
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.attrs.get("dest", "")


def parse_output(text: str) -> OutputSpec:
    """Parse `type=oci,dest=out.tar` (CSV: `"name=a,b"` quotes a comma); a bare path means
    `type=local,dest=PATH` as in buildx."""
    import csv

    if not text.strip():  # not "export into the current directory": an empty value is a mistake
        raise OutputSpecError(f"--output {text!r}: empty output spec (give type=...,dest=... or a directory)")
    if "=" not in text.split(",")[0]:
        return OutputSpec("local", {"dest": text})
    attrs: dict[str, str] = {}
    for part in next(csv.reader([text])):
        k, eq, v = part.partition("=")
        if not eq:
            raise OutputSpecError(f"--output {text!r}: {part!r} is not key=value")
        attrs[k.strip()] = v.strip()
    kind = attrs.pop("type", "")
    if kind == "registry":  # buildx: type=registry is type=image,push=true
        kind, attrs["push"] = "image", "true"
    if kind not in OUTPUT_TYPES:
        raise OutputSpecError(f"--output {text!r}: unsupported type {kind!r} "
                              "(supported: image, registry, oci, docker, tar, local)")
    if kind == "image":
        if not attrs.get("name"):
            raise OutputSpecError(f"--output {text!r}: name= is required for type={kind}")
        from workbench.image.reference import InvalidReference, parse_reference

        for name in attrs["name"].split(","):
            try:
                parse_reference(name.strip())
            except InvalidReference as e:
                raise OutputSpecError(f"--output {text!r}: name {name.strip()!r}: {e}") from None
    elif not attrs.get("dest"):
        raise OutputSpecError(f"--output {text!r}: dest= is required for type={kind}")
    return OutputSpec(kind, attrs)


@dataclass
class BuildRequest:
    context: Path
    dockerfile: Path
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    outputs: list[OutputSpec] = field(default_factory=list)
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    """Stages whose RUN, COPY and ADD steps ignore the cache (`--no-cache-filter`; names matched ignoring case)."""
    root: Path = field(default_factory=default_root)
    session: Session = field(default_factory=Session)
    cache_from: list[Any] = field(default_factory=list)
    """`--cache-from` specs (workbench.cache.remote.spec.CacheSpec): imported before the solve."""
    cache_to: list[Any] = field(default_factory=list)
    """`--cache-to` specs: exported after a successful build."""
    cancel: threading.Event | None = None
    """Set it to cancel the build: running steps are killed and nothing half-done is cached."""
    debugger: StepHooks | None = None
    """The build's step hooks: a workbench.debug.controller.Debugger (breakpoints and pauses: `workbench debug`,
    the TUI)."""
    cdi_spec_dirs: list[str] = field(default_factory=list)
    """`--cdi-spec-dir` values: they replace the config file's CDI spec dirs."""
    config: Path | None = None
    """The config file (`--config`, else $WORKBENCH_CONFIG, else /etc/workbench/workbench.toml if present)."""
    engine: str = "local"
    """Which engine runs the build, as the history record names it (a remote one: its daemon and address)."""

    def __post_init__(self) -> None:
        # Resolved once, at the start: every host path handed on (to runc above all, which resolves a
        # relative bind source against its bundle dir) is then absolute and names what the user meant.
        self.context = Path(os.path.realpath(self.context))
        self.dockerfile = Path(os.path.abspath(self.dockerfile))
        self.root = Path(os.path.abspath(self.root))


@dataclass
class BuildResult:
    manifest_digest: str | None
    image: dict[str, Any]
    duration: float
    steps_run: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    """What `--metadata-file` holds (containerimage.digest, image.name, ...), as buildctl writes it."""


class BuildFailure(Exception):
    """A failed build: what failed, and where in the Dockerfile when that is known."""

    def __init__(self, message: str, location: SourceLocation | None = None, step: str = "",
                 dockerfile_text: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.step = step
        self.dockerfile_text = dockerfile_text


class BuildRecorder(Protocol):
    """What watches one build from start to end (workbench.history.recorder.Recording keeps it as a session)."""

    def record_llb(self, target: Vertex, dockerfile_text: str) -> None:
        """The converted graph, once the frontend has made it."""

    def finish(self, status: str, duration: float, *, result: BuildResult | None = None, error: str = "",
               location: SourceLocation | None = None, step: str = "", exception: str = "") -> None:
        """How the build ended: `completed`, `error` or `canceled`."""


RecorderFactory = Callable[[BuildRequest, EventBus, "Redactor"], BuildRecorder]
"""Starts a BuildRecorder for a request (e.g. `Recording.start`), given the bus the build emits on (secret
values already masked there) and the redactor that masks them, for what it writes besides the events."""
