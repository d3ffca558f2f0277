"""The steps of a recorded build, folded from its events: state, timing, miss reason, logs."""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.progress.events import (
    BuildFinished,
    Event,
    SourceLocation,
    VertexCached,
    VertexCompleted,
    VertexEvent,
    VertexFailed,
    VertexLog,
    VertexPlanned,
    VertexStarted,
)


@dataclass
class Step:
    """One vertex of the build as the events told it."""

    digest: str
    name: str
    index: int
    """#N in the plain output (order of first appearance, from 1)."""
    state: str = "pending"
    """pending, running, cached, done, error, canceled."""
    started: float | None = None
    completed: float | None = None
    miss_reason: str = ""
    cache_key: str = ""
    error: str = ""
    source: SourceLocation | None = None
    inputs: tuple[str, ...] = ()
    logs: list[tuple[float, int, bytes]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        if self.started is None or self.completed is None:
            return 0.0
        return max(self.completed - self.started, 0.0)

    @property
    def internal(self) -> bool:
        return self.digest.startswith("internal:")

    def log_text(self) -> bytes:
        return b"".join(data for _, _, data in self.logs)


@dataclass
class BuildSteps:
    steps: list[Step]
    finished: BuildFinished | None
    first_ts: float
    last_ts: float

    @property
    def counts(self) -> dict[str, int]:
        """total, cached, failed: as `history ls` shows them (every vertex, as buildx counts)."""
        return {"total": len(self.steps), "cached": sum(1 for s in self.steps if s.state == "cached"),
                "failed": sum(1 for s in self.steps if s.state == "error")}

    def find(self, ref: str) -> Step | None:
        """A step by #N / N, digest (prefix) or exact name, else the first whose name contains `ref`."""
        number = ref.lstrip("#")
        if number.isdigit():
            n = int(number)
            return self.steps[n - 1] if 0 < n <= len(self.steps) else None
        for s in self.steps:
            if s.digest == ref or (len(ref) >= 7 and s.digest.removeprefix("sha256:").startswith(
                    ref.removeprefix("sha256:"))) or s.name == ref:
                return s
        return next((s for s in self.steps if ref in s.name), None)


def fold(events: list[Event]) -> BuildSteps:
    """Replay `events` into steps (a build cut short leaves its running steps `running`)."""
    by_digest: dict[str, Step] = {}
    steps: list[Step] = []
    finished = None
    for ev in events:
        if isinstance(ev, BuildFinished):
            finished = ev
            for running in steps:
                if running.state == "running":
                    running.state, running.completed = "canceled", ev.ts
            continue
        if not isinstance(ev, VertexEvent) or isinstance(ev, VertexPlanned):  # steps are what ran
            continue
        found = by_digest.get(ev.vertex)
        if found is None:
            found = by_digest[ev.vertex] = Step(ev.vertex, ev.name, len(steps) + 1)
            steps.append(found)
        s = found
        if isinstance(ev, VertexStarted):
            s.state, s.started, s.completed, s.error = "running", ev.ts, None, ""
            s.miss_reason, s.source, s.inputs = ev.miss_reason, ev.source or s.source, ev.inputs or s.inputs
        elif isinstance(ev, VertexCached):
            s.state, s.started, s.completed = "cached", ev.ts, ev.ts
            s.cache_key, s.source, s.inputs = ev.cache_key, ev.source or s.source, ev.inputs or s.inputs
        elif isinstance(ev, VertexCompleted | VertexFailed):
            if s.started is None:
                s.started = ev.ts - ev.duration
            s.completed = s.started + ev.duration if ev.duration > 0 else ev.ts
            if isinstance(ev, VertexFailed):
                s.error = ev.error
                s.state = "canceled" if ev.error.endswith("canceled") else "error"
            else:
                s.state = "done"
        elif isinstance(ev, VertexLog):
            s.logs.append((ev.ts, ev.stream, ev.data))
    first = events[0].ts if events else 0.0
    last = events[-1].ts if events else 0.0
    return BuildSteps(steps, finished, first, last)
