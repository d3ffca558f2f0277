"""BuildKit's `SolveStatus` stream as this project's events, so the printers, the TUI and history read a remote
build as they read a local one.

The daemon sends partial updates: one vertex digest comes several times (started, then completed / cached /
error), so updates are merged by digest and each state change is emitted once. Vertices named `[internal] …`
get ids `internal:<name>`, as the local engine gives its own internal steps. When the daemon runs our own graph,
`graph` maps its op digests to our vertex digests (and `sources` to Dockerfile lines), so the events name our
steps exactly as a local build's do, and `explain` gives each step that runs a miss reason of workbench's own
(workbench.remote.explain).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workbench.progress.events import (
    BuildWarning,
    Event,
    SourceLocation,
    VertexCached,
    VertexCompleted,
    VertexFailed,
    VertexLog,
    VertexStarted,
    VertexStatus,
)


def _seconds(ts: Any) -> float | None:
    """A protobuf Timestamp as Unix seconds; None when unset."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return float(ts.seconds + ts.nanos / 1e9)


@dataclass
class _Vertex:
    id: str
    name: str
    inputs: tuple[str, ...] = ()
    source: SourceLocation | None = None
    started: float | None = None
    state: str = ""  # "", started, cached, completed, failed
    reason: str = ""  # why it ran (workbench's reckoning), when `StatusFold.explain` gives one
    cached_late: bool = False  # a source: reported done for its cache request, then found in the cache


@dataclass
class StatusFold:
    """Turns StatusResponse messages into events on `emit`, in the order the daemon reported them."""

    emit: Callable[[Event], None]
    graph: Mapping[str, str] = field(default_factory=dict)
    """op digest → our vertex digest, for a Definition of ours."""
    sources: Mapping[str, SourceLocation] = field(default_factory=dict)
    """op digest → the step's Dockerfile lines."""
    names: Mapping[str, str] = field(default_factory=dict)
    """op digest → our step's name (a daemon sharing a vertex between jobs may tell another job's name)."""
    explain: Callable[[str], tuple[str, Mapping[str, object] | None]] | None = None
    """our vertex digest → (miss reason, key parts), asked only for a step that runs (workbench.remote.explain)."""
    vertices: dict[str, _Vertex] = field(default_factory=dict)
    _ids: dict[str, str] = field(default_factory=dict)  # digest -> event vertex id
    _statuses_done: set[tuple[str, str]] = field(default_factory=set)

    def vertex_id(self, digest: str, name: str = "") -> str:
        if digest not in self._ids:
            vid = digest
            if digest in self.graph:
                vid = self.graph[digest]
            elif name.startswith("[internal]"):
                vid = "internal:" + name
                if vid in self._ids.values():
                    vid = f"internal:{name} ({digest})"
            self._ids[digest] = vid
        return self._ids[digest]

    def apply(self, response: Any) -> None:
        for v in response.vertexes:
            self._vertex(v)
        for s in response.statuses:
            self._status(s)
        for log in response.logs:
            known = self.vertices.get(log.vertex)
            if known is None:
                continue
            self.emit(VertexLog(known.id, known.name, stream=int(log.stream) or 1, data=bytes(log.msg),
                                ts=_seconds(log.timestamp) or _now()))
        for w in getattr(response, "warnings", ()):  # v0.20 only
            self._warning(w)

    def failed(self) -> list[_Vertex]:
        """The vertices that ended with an error (first reported first)."""
        return [v for v in self.vertices.values() if v.state == "failed"]

    def running(self) -> list[_Vertex]:
        return [v for v in self.vertices.values() if v.state == "started"]

    # -- one kind each -------------------------------------------------------------------------------------

    def _vertex(self, v: Any) -> None:
        known = self.vertices.get(v.digest)
        if known is None:
            ours = self.names.get(v.digest, "")
            known = self.vertices[v.digest] = _Vertex(self.vertex_id(v.digest, ours or v.name), ours or v.name,
                                                      source=self.sources.get(v.digest))
        if v.name and v.digest not in self.names:
            known.name = v.name
        inputs = tuple(self.vertex_id(i) for i in v.inputs)
        known.inputs = inputs or known.inputs
        started, completed = _seconds(v.started), _seconds(v.completed)
        if known.state in ("cached", "completed", "failed"):
            known.cached_late = known.cached_late or (known.state == "completed" and v.cached)
            return  # a repeat of the end
        if v.cached:
            if known.state != "cached":
                known.state = "cached"
                self.emit(VertexCached(known.id, known.name, inputs=known.inputs, source=known.source,
                                       ts=completed or started or _now()))
            return
        if started is not None and known.state == "":
            known.state, known.started = "started", started
            self._started(known, started)
        if v.error:
            end = completed or _now()
            if known.state == "":
                known.started = end
                self._started(known, end)
            known.state = "failed"
            self.emit(VertexFailed(known.id, known.name, error=v.error,
                                   duration=max(end - (known.started or end), 0.0), ts=end))
        elif completed is not None:
            if known.state == "":
                known.started = started or completed
                self._started(known, known.started)
            known.state = "completed"
            self.emit(VertexCompleted(known.id, known.name, duration=max(completed - (known.started or completed), 0.0),
                                      ts=completed))

    def _started(self, known: _Vertex, ts: float) -> None:
        parts = None
        if self.explain is not None:
            known.reason, parts = self.explain(known.id)
        self.emit(VertexStarted(known.id, known.name, inputs=known.inputs, source=known.source, ts=ts,
                                miss_reason=known.reason, key_parts=parts))

    def _status(self, s: Any) -> None:
        known = self.vertices.get(s.vertex)
        if known is None:
            return
        done = _seconds(s.completed) is not None
        key = (s.vertex, s.ID)
        if key in self._statuses_done:
            return
        if done:
            self._statuses_done.add(key)
        self.emit(VertexStatus(known.id, known.name, status_id=s.ID or s.name, current=int(s.current),
                               total=int(s.total), done=done, ts=_seconds(s.timestamp) or _now()))

    def _warning(self, w: Any) -> None:
        from workbench.progress.events import SourceLocation

        source = None
        if w.HasField("info") and len(w.ranges):
            r = w.ranges[0]
            source = SourceLocation(w.info.filename, r.start.line, r.end.line or r.start.line)
        known = self.vertices.get(w.vertex)
        self.emit(BuildWarning(bytes(w.short).decode("utf-8", "replace"), source=source, url=w.url,
                               detail=tuple(bytes(d).decode("utf-8", "replace") for d in w.detail),
                               vertex=known.id if known else ""))


def _now() -> float:
    import time

    return time.time()
