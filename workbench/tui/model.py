"""What the TUI knows about a build, folded from the event stream; plain Python, no Textual."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from workbench.progress.events import (
    BuildFinished,
    BuildWarning,
    DebugPaused,
    DebugResumed,
    DeviceGrant,
    Event,
    SourceLocation,
    VertexCached,
    VertexCompleted,
    VertexEvent,
    VertexFailed,
    VertexLog,
    VertexPlanned,
    VertexStarted,
    VertexStatus,
)

PENDING, RUNNING, CACHED, DONE, FAILED, CANCELED = "pending", "running", "cached", "done", "failed", "canceled"
SYMBOLS = {PENDING: "·", RUNNING: "▶", CACHED: "≡", DONE: "✔", FAILED: "✘", CANCELED: "⊘"}
"""A symbol per state, so a node reads without colour too."""

_STAGE = re.compile(r"^\[(?:(?P<stage>[^\]\s]+) )? *\d+/\d+\]")  # `[ 1/10]`: padded as BuildKit


def stage_of(name: str) -> str:
    """The stage a vertex belongs to, from its BuildKit-style name (`[build 2/4] RUN ...` -> `build`)."""
    if name.startswith("[internal]") or name.startswith("exporting"):
        return "internal"
    m = _STAGE.match(name)
    if m is None:
        return "other"
    return m.group("stage") or "main"


@dataclass
class LogBuffer:
    """A step's full output as lines (never clipped); the unfinished last line is kept apart."""

    lines: list[str] = field(default_factory=list)
    partial: str = ""
    total_bytes: int = 0

    def feed(self, data: bytes) -> int:
        """Add a chunk; returns how many complete lines it added."""
        self.total_bytes += len(data)
        text = self.partial + data.decode("utf-8", "replace")
        parts = text.split("\n")
        self.partial = parts.pop()
        self.lines.extend(p[:-1] if p.endswith("\r") else p for p in parts)
        return len(parts)

    def all_lines(self) -> list[str]:
        return self.lines + [self.partial] if self.partial else self.lines

    def __len__(self) -> int:
        return len(self.lines) + (1 if self.partial else 0)


@dataclass
class VertexState:
    """One node of the DAG and everything the panels show about it."""

    id: str
    name: str
    number: int
    inputs: tuple[str, ...] = ()
    state: str = PENDING
    started: float | None = None
    duration: float | None = None
    source: SourceLocation | None = None
    miss_reason: str = ""
    cache_key: str = ""
    key_parts: Mapping[str, object] | None = None
    snapshot: str = ""
    error: str = ""
    status: str = ""
    log: LogBuffer = field(default_factory=LogBuffer)
    stage: str = ""

    def __post_init__(self) -> None:
        self.stage = self.stage or stage_of(self.name)

    @property
    def internal(self) -> bool:
        return self.id.startswith("internal:")


@dataclass
class BuildModel:
    """The state of one build (live or replayed), updated by `apply`."""

    vertices: dict[str, VertexState] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    warnings: list[BuildWarning] = field(default_factory=list)
    grants: list[DeviceGrant] = field(default_factory=list)
    combined: list[tuple[int, str]] = field(default_factory=list)
    """Every step's lines interleaved as they arrived, with the step's number (like --progress plain)."""
    finished: BuildFinished | None = None
    paused: DebugPaused | None = None
    """Where the debugger holds the build now (None: not paused)."""
    started_at: float | None = None
    revision: int = 0
    """Bumped on every change of a vertex's state or set (not on log lines), so views redraw only then."""

    def vertex(self, ev: VertexEvent) -> VertexState:
        v = self.vertices.get(ev.vertex)
        if v is None:
            v = VertexState(ev.vertex, ev.name, len(self.order) + 1)
            self.vertices[ev.vertex] = v
            self.order.append(ev.vertex)
            self.revision += 1
        return v

    def apply(self, ev: Event) -> None:
        if self.started_at is None:
            self.started_at = ev.ts
        if isinstance(ev, VertexPlanned):  # the graph shows the steps as they start or come from the cache
            return
        if isinstance(ev, VertexLog):
            v = self.vertex(ev)
            before = len(v.log.lines)
            v.log.feed(ev.data)
            self.combined.extend((v.number, line) for line in v.log.lines[before:])
            return
        if isinstance(ev, VertexStatus):
            self.vertex(ev).status = "" if ev.done else ev.status_id
            return
        self.revision += 1
        if isinstance(ev, VertexStarted):
            v = self.vertex(ev)
            v.state, v.started, v.miss_reason = RUNNING, ev.ts, ev.miss_reason
            v.inputs, v.source, v.key_parts = ev.inputs or v.inputs, ev.source or v.source, ev.key_parts
        elif isinstance(ev, VertexCached):
            v = self.vertex(ev)
            v.state, v.cache_key, v.snapshot = CACHED, ev.cache_key, ev.snapshot
            v.inputs, v.source, v.key_parts = ev.inputs or v.inputs, ev.source or v.source, ev.key_parts
        elif isinstance(ev, VertexCompleted):
            v = self.vertex(ev)
            v.state, v.duration, v.status = DONE, ev.duration, ""
            v.cache_key, v.snapshot = ev.cache_key or v.cache_key, ev.snapshot or v.snapshot
        elif isinstance(ev, VertexFailed):
            v = self.vertex(ev)
            v.state = CANCELED if ev.error == "canceled" else FAILED
            v.error, v.duration, v.status = ev.error, ev.duration, ""
        elif isinstance(ev, BuildWarning):
            self.warnings.append(ev)
        elif isinstance(ev, DeviceGrant):
            self.grants.append(ev)
        elif isinstance(ev, DebugPaused):
            self.paused = ev
        elif isinstance(ev, DebugResumed):
            self.paused = None
        elif isinstance(ev, BuildFinished):
            self.finished, self.paused = ev, None
            for v in self.vertices.values():
                if v.state == RUNNING:
                    v.state = CANCELED if ev.error == "canceled" else FAILED

    def running(self) -> list[VertexState]:
        return [self.vertices[i] for i in self.order if self.vertices[i].state == RUNNING]

    def first_failed(self) -> VertexState | None:
        return next((self.vertices[i] for i in self.order if self.vertices[i].state == FAILED), None)

    def depth(self) -> dict[str, int]:
        """Each vertex's layer: 0 for those without (known) inputs, else one more than its deepest input."""
        out: dict[str, int] = {}
        for vid in self.order:  # events arrive inputs first, so one pass is enough
            v = self.vertices[vid]
            out[vid] = 1 + max((out.get(i, 0) for i in v.inputs if i in self.vertices), default=-1)
        return out

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.vertices.values():
            out[v.state] = out.get(v.state, 0) + 1
        return out
