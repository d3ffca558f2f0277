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
    SourceLocation,
    VertexFailed,
    VertexLog,
    VertexPlanned,
    VertexStatus,
)
from workbench.progress.trace import (
    ACTIVE,
    CACHED,
    CANCELED,
    DONE,
    FAILED,
    PAUSED,
    PENDING,
    RUNNING,
    Step,
    Trace,
    is_cancel,
)

SYMBOLS = {PENDING: "·", RUNNING: "▶", PAUSED: "‖", CACHED: "≡", DONE: "✔", FAILED: "✘", CANCELED: "⊘"}
"""A symbol per state, so a node reads without colour too."""

BUILD_ERROR = "internal:build error"
"""The node of an error no step reported (a parse, conversion or check error, a refused entitlement)."""
BUILD_ERROR_NAME = "[internal] failed to solve"

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


def failure_log(error: str, source: SourceLocation | None) -> str:
    """The log of a build error's own node: where it points, then the error (as the CLI's closing lines)."""
    where = ""
    if source is not None:
        lines = f"{source.start_line}" + (f"-{source.end_line}" if source.end_line != source.start_line else "")
        where = f"{source.filename}:{lines}\n"
    return f"{where}ERROR: failed to solve: {error}\n"


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
        self.predicted: dict[str, str] = {}
        """Vertex id of this graph -> why the next build will re-run it (workbench.tui.predict; a new build's
        model starts without)."""
        self.prediction_note = ""
        """One line for the status bar about the prediction: of the next build, or how this build kept to it."""

    def set_prediction(self, predicted: dict[str, str], note: str) -> None:
        """Mark the steps the next build will re-run (with why), and say so in `note`."""
        self.predicted, self.prediction_note = dict(predicted), note
        self.revision += 1

    def warn(self, message: str, vertex: str = "") -> None:
        """A warning of the TUI's own about this build (a wrong prediction): kept with the build's warnings and
        written into the step's log (and the interleaved one), so it is seen where the step is."""
        self.trace.apply(BuildWarning(message, vertex=vertex))
        v = self.vertices.get(vertex)
        if v is not None:
            before = len(v.log.lines)
            if v.log.partial:
                v.log.feed(b"\n")
            v.log.feed(f"WARNING: {message}\n".encode())
            self.combined.extend((v.number, line) for line in v.log.lines[before:])
        self.revision += 1

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
        if isinstance(ev, BuildFinished) and ev.error and not is_cancel(ev.error):
            self._show_failure(ev)

    def _show_failure(self, ev: BuildFinished) -> None:
        """Make the build's error visible as a failed node: the step that reported it (given the error's line
        when it had none), else a node of its own holding the error, so an error before the solve is seen."""
        failed = self.first_failed()
        if failed is not None:
            if failed.source is None:
                failed.source = ev.source
            return
        named = next((v for v in self.trace.steps if ev.step and v.name == ev.step), None)
        if named is not None and named.state == CANCELED:
            return  # aborted at a pause before it ran: nothing failed
        vid, name = (named.id, named.name) if named is not None else (BUILD_ERROR, ev.step or BUILD_ERROR_NAME)
        v = self.trace.apply(VertexFailed(vid, name, error=ev.error, ts=ev.ts))[0]
        v.source = ev.source or v.source
        before = len(v.log.lines)
        v.log.feed(failure_log(ev.error, v.source).encode())
        self.combined.extend((v.number, line) for line in v.log.lines[before:])

    def running(self) -> list[VertexState]:
        """The steps under way: running, or held by the debugger."""
        return [self.vertices[i] for i in self.order if self.vertices[i].state in ACTIVE]

    def first_failed(self) -> VertexState | None:
        return next((self.vertices[i] for i in self.order if self.vertices[i].state == FAILED), None)

    def error_lines(self) -> dict[int, str]:
        """0-based Dockerfile line -> the error of a failed step (or of the build) that points there."""
        out: dict[int, str] = {}
        for vid in self.order:
            v = self.vertices[vid]
            if v.state == FAILED and v.source is not None:
                out.setdefault(v.source.start_line - 1, "ERROR: " + v.error.split("\n", 1)[0])
        fin = self.finished
        if fin is not None and fin.source is not None and fin.error and not is_cancel(fin.error):
            out.setdefault(fin.source.start_line - 1, "ERROR: " + fin.error.split("\n", 1)[0])
        return out

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
