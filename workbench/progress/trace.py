"""The one fold of the event stream: each step's state, timing and cache facts, as every view reads them.

The printers, the TUI model and the history reports all keep a `Trace`; each may hang its own extras (log
buffers, a terminal emulation) on a subclass of `Step`, but the state machine is this one. Steps are the
vertices that ran or came from the cache: a `VertexPlanned` announcement alone makes no step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from workbench.progress.events import (
    BuildFinished,
    BuildWarning,
    Event,
    SourceLocation,
    VertexCached,
    VertexCompleted,
    VertexEvent,
    VertexFailed,
    VertexPlanned,
    VertexStarted,
    VertexStatus,
)

PENDING, RUNNING, CACHED, DONE, FAILED, CANCELED = "pending", "running", "cached", "done", "failed", "canceled"
"""A step's states; it ends in CACHED, DONE, FAILED or CANCELED."""
ENDED = (DONE, FAILED, CANCELED)
"""The states of a step that ran (not from the cache) and ended."""


def is_cancel(error: str) -> bool:
    """Whether a step's error says it was canceled rather than failed (`canceled`, `context canceled`)."""
    return error.endswith("canceled")


@dataclass
class Status:
    """A sub-task of a step (resolve, a layer's download or extraction) with its byte progress."""

    id: str
    started: float
    timestamp: float
    current: int = 0
    total: int = 0
    completed: float | None = None


@dataclass
class Step:
    """One vertex of the build, as the events told it so far."""

    id: str
    """The vertex digest (`internal:...` for the build's own steps)."""
    name: str
    number: int
    """#N in the plain output: the order of first appearance, from 1."""
    state: str = PENDING
    inputs: tuple[str, ...] = ()
    source: SourceLocation | None = None
    started: float | None = None
    completed: float | None = None
    """When it ended: its start plus the duration it reported (a cached step ends as it starts)."""
    duration: float | None = None
    """The duration the step reported on ending; None while it runs, when cached or canceled by the build's end."""
    miss_reason: str = ""
    cache_key: str = ""
    key_parts: Mapping[str, object] | None = None
    snapshot: str = ""
    error: str = ""
    status: str = ""
    """The sub-task it is busy with now (the last status update's id; empty once that is done)."""
    statuses: dict[str, Status] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def internal(self) -> bool:
        return self.id.startswith("internal:")

    @property
    def elapsed(self) -> float:
        """Seconds from its start to its end (0 while either is unknown)."""
        if self.started is None or self.completed is None:
            return 0.0
        return max(self.completed - self.started, 0.0)


S = TypeVar("S", bound=Step)


class Trace(Generic[S]):
    """The steps of a build in the order they appeared, updated by `apply`; `make` builds a view's step record."""

    def __init__(self, make: Callable[[str, str, int], S]) -> None:
        self.make = make
        self.vertices: dict[str, S] = {}
        self.order: list[str] = []
        self.steps: list[S] = []
        self.warnings: list[BuildWarning] = []
        self.finished: BuildFinished | None = None
        self.start: float | None = None
        """When the first step event came."""

    def step(self, ev: VertexEvent) -> S:
        """The step of `ev`'s vertex, made on its first event."""
        s = self.vertices.get(ev.vertex)
        if s is None:
            s = self.vertices[ev.vertex] = self.make(ev.vertex, ev.name, len(self.steps) + 1)
            self.order.append(ev.vertex)
            self.steps.append(s)
        if self.start is None:
            self.start = ev.ts
        return s

    def apply(self, ev: Event) -> list[S]:
        """Update from `ev`; returns the steps it changed: its own, or those the build's end canceled."""
        if isinstance(ev, BuildWarning):
            self.warnings.append(ev)
            if ev.vertex in self.vertices:
                self.vertices[ev.vertex].warnings.append(ev.message)
            return []
        if isinstance(ev, BuildFinished):
            self.finished = ev
            return self.encore(ev.ts)
        if not isinstance(ev, VertexEvent) or isinstance(ev, VertexPlanned):  # steps are what ran
            return []
        s = self.step(ev)
        if isinstance(ev, VertexStarted):
            s.state, s.started, s.completed, s.duration, s.error = RUNNING, ev.ts, None, None, ""
            s.miss_reason, s.key_parts = ev.miss_reason, ev.key_parts
            s.inputs, s.source = ev.inputs or s.inputs, ev.source or s.source
        elif isinstance(ev, VertexCached):
            s.state, s.started, s.completed, s.duration, s.error = CACHED, ev.ts, ev.ts, None, ""
            s.cache_key, s.snapshot, s.key_parts = ev.cache_key, ev.snapshot, ev.key_parts
            s.inputs, s.source = ev.inputs or s.inputs, ev.source or s.source
        elif isinstance(ev, VertexStatus):
            sid = ev.status_id or ev.name
            st = s.statuses.get(sid)
            if st is None:
                st = s.statuses[sid] = Status(sid, ev.ts, ev.ts)
            st.current, st.total, st.timestamp = ev.current, ev.total, ev.ts
            if ev.done:
                st.completed = ev.ts
            s.status = "" if ev.done else ev.status_id
        elif isinstance(ev, VertexCompleted | VertexFailed):
            if s.started is None:
                s.started = ev.ts - ev.duration
            s.completed = s.started + ev.duration if ev.duration > 0 else max(ev.ts, s.started)
            s.duration, s.status = ev.duration, ""
            if isinstance(ev, VertexFailed):
                s.state, s.error = CANCELED if is_cancel(ev.error) else FAILED, ev.error
            else:
                s.state, s.error = DONE, ""
                s.cache_key, s.snapshot = ev.cache_key or s.cache_key, ev.snapshot or s.snapshot
        return [s]

    def encore(self, ts: float) -> list[S]:
        """At the end, steps still running end as canceled (BuildKit's solver/progress.go encore)."""
        out = [s for s in self.steps if s.state == RUNNING]
        for s in out:
            s.state, s.completed = CANCELED, ts
        return out
