"""The steps of a recorded build, folded from its events by the one trace fold, with each step's raw output."""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.progress.events import BuildFinished, Event, VertexLog
from workbench.progress.trace import CACHED, FAILED, Step, Trace


@dataclass
class RecordedStep(Step):
    """A step of a recorded build, with its output chunks as they came."""

    logs: list[tuple[float, int, bytes]] = field(default_factory=list)
    """(ts, stream, data) of each chunk; stream 1 is stdout, 2 stderr."""

    def log_text(self) -> bytes:
        return b"".join(data for _, _, data in self.logs)


@dataclass
class BuildSteps:
    steps: list[RecordedStep]
    finished: BuildFinished | None
    first_ts: float
    last_ts: float
    paused: float = 0.0
    """Seconds the build stood at a debugger's pause."""

    @property
    def counts(self) -> dict[str, int]:
        """total, cached, failed: as `history ls` shows them (every vertex, as buildx counts)."""
        return {"total": len(self.steps), "cached": sum(1 for s in self.steps if s.state == CACHED),
                "failed": sum(1 for s in self.steps if s.state == FAILED)}

    def find(self, ref: str) -> RecordedStep | None:
        """A step by #N / N, digest (prefix) or exact name, else the first whose name contains `ref`."""
        number = ref.lstrip("#")
        if number.isdigit():
            n = int(number)
            return self.steps[n - 1] if 0 < n <= len(self.steps) else None
        for s in self.steps:
            if s.id == ref or (len(ref) >= 7 and s.id.removeprefix("sha256:").startswith(
                    ref.removeprefix("sha256:"))) or s.name == ref:
                return s
        return next((s for s in self.steps if ref in s.name), None)


def fold(events: list[Event]) -> BuildSteps:
    """Replay `events` into steps (a build cut short leaves its running steps `running`)."""
    trace = Trace(RecordedStep)
    for ev in events:
        for s in trace.apply(ev):
            if isinstance(ev, VertexLog):
                s.logs.append((ev.ts, ev.stream, ev.data))
    first = events[0].ts if events else 0.0
    last = events[-1].ts if events else 0.0
    return BuildSteps(trace.steps, trace.finished, first, last, trace.paused_for(last))
