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
    DebugHeld,
    DebugPaused,
    DebugResumed,
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
PAUSED = "paused"
"""A step the debugger holds: paused at it (before it runs, or after it failed) or waiting behind another pause."""
ENDED = (DONE, FAILED, CANCELED)
"""The states of a step that ran (not from the cache) and ended."""
ACTIVE = (RUNNING, PAUSED)
"""The states of a step under way (it started and has not ended)."""


def paused_label(seconds: float) -> str:
    """`paused 40s`: how long a step or build was held, as the views show it beside a duration."""
    if seconds >= 60:
        return f"paused {int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"paused {seconds:.0f}s" if seconds >= 10 else f"paused {seconds:.1f}s"


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
    """The duration the step reported on ending (its run time, pauses left out); None while it runs, when cached
    or canceled by the build's end."""
    paused: float = 0.0
    """Seconds the debugger held it (ended holds only; `paused_for` adds the one under way)."""
    paused_since: float | None = None
    """When the hold under way began (None: not held now)."""
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
        """Seconds it ran, from its start to its end less its pauses (0 while either is unknown)."""
        if self.started is None or self.completed is None:
            return 0.0
        return max(self.completed - self.started - self.paused, 0.0)

    def paused_for(self, now: float) -> float:
        """Seconds the debugger has held it by `now`."""
        return self.paused + (max(now - self.paused_since, 0.0) if self.paused_since is not None else 0.0)

    def run_time(self, now: float) -> float:
        """Seconds it had run by `now` (a log line's stamp, a live timer): its pauses up to then left out."""
        return now - self.started - self.paused_for(now) if self.started is not None else 0.0

    def hold(self, ts: float) -> None:
        """The debugger holds it from `ts` (a pause, or a wait behind one)."""
        if self.paused_since is None:
            self.paused_since = ts
        if self.state == RUNNING:
            self.state = PAUSED

    def let_go(self, ts: float) -> None:
        """The debugger's hold ended at `ts`."""
        if self.paused_since is not None:
            self.paused += max(ts - self.paused_since, 0.0)
            self.paused_since = None
        if self.state == PAUSED:
            self.state = RUNNING


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
        self.paused = 0.0
        """Seconds the build stood at a pause (ended pauses; `paused_for` adds the one under way)."""
        self.paused_since: float | None = None

    def paused_for(self, now: float) -> float:
        """Seconds the build has stood at a pause by `now`."""
        return self.paused + (max(now - self.paused_since, 0.0) if self.paused_since is not None else 0.0)

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
        if isinstance(ev, DebugPaused | DebugHeld | DebugResumed):
            return self._debug(ev)
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
            s.let_go(ev.ts)
            s.paused = ev.paused or s.paused  # the solver's own count, where it gives one
            if s.started is None:
                s.started = ev.ts - ev.duration - s.paused
            ran = s.paused + ev.duration
            s.completed = s.started + ran if ran > 0 else max(ev.ts, s.started)
            s.duration, s.status = ev.duration, ""
            if isinstance(ev, VertexFailed):
                s.state, s.error = CANCELED if is_cancel(ev.error) else FAILED, ev.error
            else:
                s.state, s.error = DONE, ""
                s.cache_key, s.snapshot = ev.cache_key or s.cache_key, ev.snapshot or s.snapshot
        return [s]

    def _debug(self, ev: DebugPaused | DebugHeld | DebugResumed) -> list[S]:
        """A step held by the debugger, or let go; the build's own pause time (a held step waits on a pause)."""
        if isinstance(ev, DebugPaused) and self.paused_since is None:
            self.paused_since = ev.ts
        elif isinstance(ev, DebugResumed) and ev.how and self.paused_since is not None:
            self.paused += max(ev.ts - self.paused_since, 0.0)
            self.paused_since = None
        s = self.vertices.get(ev.vertex)
        if s is None:
            return []
        if isinstance(ev, DebugResumed):
            s.let_go(ev.ts)
        else:
            s.hold(ev.ts)
        return [s]

    def encore(self, ts: float) -> list[S]:
        """At the end, steps still under way end as canceled (BuildKit's solver/progress.go encore)."""
        if self.paused_since is not None:
            self.paused += max(ts - self.paused_since, 0.0)
            self.paused_since = None
        out = [s for s in self.steps if s.state in ACTIVE]
        for s in out:
            s.let_go(ts)
            s.state, s.completed = CANCELED, ts
        return out
