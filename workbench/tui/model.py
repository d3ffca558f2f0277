"""What the TUI knows about a build, folded from the event stream; plain Python, no Textual."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from workbench.progress.events import (
    BuildFinished,
    BuildWarning,
    DebugPaused,
    DebugResumed,
    DeviceGrant,
    Event,
    VertexLog,
    VertexPlanned,
    VertexStatus,
)
from workbench.progress.trace import CACHED, CANCELED, DONE, FAILED, PENDING, RUNNING, Step, Trace

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
class VertexState(Step):
    """One node of the DAG: the step as the events told it, its whole log, and its stage."""

    log: LogBuffer = field(default_factory=LogBuffer)
    stage: str = ""

    def __post_init__(self) -> None:
        self.stage = self.stage or stage_of(self.name)


class BuildModel:
    """The state of one build (live or replayed), updated by `apply`: the steps' trace plus what only the TUI
    keeps (whole logs, device grants, the debugger's pause, a revision for redraws)."""

    def __init__(self) -> None:
        self.trace = Trace(VertexState)
        self.grants: list[DeviceGrant] = []
        self.combined: list[tuple[int, str]] = []
        """Every step's lines interleaved as they arrived, with the step's number (like --progress plain)."""
        self.paused: DebugPaused | None = None
        """Where the debugger holds the build now (None: not paused)."""
        self.started_at: float | None = None
        self.revision = 0
        """Bumped on every change of a vertex's state or set (not on log lines), so views redraw only then."""

    @property
    def vertices(self) -> dict[str, VertexState]:
        return self.trace.vertices

    @property
    def order(self) -> list[str]:
        return self.trace.order

    @property
    def warnings(self) -> list[BuildWarning]:
        return self.trace.warnings

    @property
    def finished(self) -> BuildFinished | None:
        return self.trace.finished

    def apply(self, ev: Event) -> None:
        if self.started_at is None:
            self.started_at = ev.ts
        known = len(self.trace.order)
        changed = self.trace.apply(ev)
        if len(self.trace.order) != known:
            self.revision += 1
        if isinstance(ev, VertexPlanned):  # the graph shows the steps as they start or come from the cache
            return
        if isinstance(ev, VertexLog):
            v = changed[0]
            before = len(v.log.lines)
            v.log.feed(ev.data)
            self.combined.extend((v.number, line) for line in v.log.lines[before:])
            return
        if isinstance(ev, VertexStatus):
            return
        self.revision += 1
        if isinstance(ev, DeviceGrant):
            self.grants.append(ev)
        elif isinstance(ev, DebugPaused):
            self.paused = ev
        elif isinstance(ev, DebugResumed | BuildFinished):
            self.paused = None

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
