"""The typed event stream of a build: every view (printers, TUI, recorder) reads these and nothing else."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SourceLocation:
    """Where a vertex came from in the Dockerfile (1-based, inclusive lines)."""

    filename: str
    start_line: int
    end_line: int


@dataclass(frozen=True)
class Event:
    """Base of every event; `ts` is wall-clock seconds."""

    ts: float = field(default_factory=time.time, kw_only=True)


@dataclass(frozen=True)
class VertexEvent(Event):
    vertex: str
    """The vertex digest."""
    name: str


@dataclass(frozen=True)
class VertexPlanned(VertexEvent):
    """A vertex of the graph about to be solved, announced before any step runs (as BuildKit announces a
    solve's whole graph); it may never start. Views that show only what ran leave it out."""

    inputs: tuple[str, ...] = ()
    source: SourceLocation | None = None


@dataclass(frozen=True)
class VertexStarted(VertexEvent):
    """A vertex missed the cache (or must always run) and starts now."""

    inputs: tuple[str, ...] = ()
    source: SourceLocation | None = None
    miss_reason: str = ""
    key_parts: Mapping[str, object] | None = None
    """What the cache key was made of (op digest, input keys, context files read with their digests)."""


@dataclass(frozen=True)
class VertexCached(VertexEvent):
    """A vertex's result came from the cache store."""

    inputs: tuple[str, ...] = ()
    source: SourceLocation | None = None
    cache_key: str = ""
    snapshot: str = ""
    """The top snapshot of the cached result (empty for a result without files)."""
    key_parts: Mapping[str, object] | None = None


@dataclass(frozen=True)
class VertexCompleted(VertexEvent):
    duration: float = 0.0
    """Seconds it ran: from its start to its end, less `paused`."""
    cache_key: str = ""
    snapshot: str = ""
    """The top snapshot the step produced (empty for internal steps and results without files)."""
    paused: float = 0.0
    """Seconds the debugger held it (paused at it, or waiting behind another pause); not in `duration`."""


@dataclass(frozen=True)
class VertexFailed(VertexEvent):
    error: str = ""
    duration: float = 0.0
    """Seconds it ran, less `paused`."""
    paused: float = 0.0
    """Seconds the debugger held it (a pause before it ran, or after it failed)."""


@dataclass(frozen=True)
class VertexLog(VertexEvent):
    """A chunk of a step's output; stream 1 is stdout, 2 is stderr."""

    stream: int = 1
    data: bytes = b""


@dataclass(frozen=True)
class VertexStatus(VertexEvent):
    """A sub-task of a vertex (resolve, extract a layer, transfer) with byte progress."""

    status_id: str = ""
    current: int = 0
    total: int = 0
    done: bool = False


@dataclass(frozen=True)
class BuildWarning(Event):
    """A warning about the build; `rule`/`url` are set for build-check (lint) warnings."""

    message: str
    source: SourceLocation | None = None
    rule: str = ""
    url: str = ""
    detail: tuple[str, ...] = ()
    """Longer explanation lines (BuildKit's VertexWarning.detail: a check's rule description)."""
    vertex: str = ""
    """The digest of the vertex the warning belongs to, if any."""


@dataclass(frozen=True)
class DeviceGrant(Event):
    """A CDI device request of a step, and what was decided: granted (how) or denied (why)."""

    vertex: str
    """The digest of the requesting vertex."""
    request: str
    """The device as the Dockerfile asked for it (`vendor.com/class=name`, a class, an alias)."""
    devices: tuple[str, ...] = ()
    """The fully qualified CDI devices it resolved to (empty when none)."""
    granted: bool = False
    how: str = ""
    """How it was granted: `auto-allow (annotation)`, `auto-allow (config)`, `--allow device`,
    `--allow device=NAME`, `--allow device=NAME,alias=ALIAS`; or why it was denied."""
    required: bool = False


@dataclass(frozen=True)
class DebugPaused(Event):
    """The debugger stopped the build at a step: before it runs (a breakpoint, `next`) or after it failed."""

    vertex: str
    name: str
    reason: str
    """`breakpoint`, `step` (after `next`) or `error`."""
    source: SourceLocation | None = None
    error: str = ""


@dataclass(frozen=True)
class DebugHeld(Event):
    """A step waits while the debugger holds another one (one pause at a time): to pause in its turn, or to go
    on after it failed. The hold ends with the step's own DebugPaused, or a DebugResumed with `how` empty."""

    vertex: str
    name: str


@dataclass(frozen=True)
class DebugResumed(Event):
    """The user let the build go on from a pause: `next`, `continue` or `abort` (empty: a held step let go
    without a pause of its own)."""

    vertex: str
    how: str


@dataclass(frozen=True)
class DebugShell(Event):
    """A process the user ran inside a paused step's container (`exec`): started, then ended with a code."""

    vertex: str
    command: tuple[str, ...]
    exit_code: int | None = None
    """None when it starts."""


@dataclass(frozen=True)
class BuildFinished(Event):
    """The whole build ended; `error` is empty on success."""

    error: str = ""
    duration: float = 0.0
    source: SourceLocation | None = None
    """Where in the Dockerfile the error points, when it does (a parse error's line, the failing step's)."""
    step: str = ""
    """The name of the step the error belongs to, when one does (BuildKit's `> [2/3] RUN ...:` line)."""


Sink = Callable[[Event], None]


class EventBus:
    """Fans events out to subscribers, from any thread, one event at a time."""

    def __init__(self) -> None:
        self._sinks: list[Sink] = []
        self._lock = threading.Lock()

    def subscribe(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def emit(self, event: Event) -> None:
        with self._lock:
            for sink in self._sinks:
                sink(event)
