"""`--progress rawjson`: one `client.SolveStatus` JSON object per event, as `buildctl --progress rawjson`."""

from __future__ import annotations

import base64
import json
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

from workbench.progress.events import (
    BuildFinished,
    BuildWarning,
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
from workbench.progress.logclip import LogClipper
from workbench.progress.units import rfc3339


def _go_json(doc: object) -> str:
    """Compact JSON as Go's json.Encoder writes it (HTML-safe escapes for <, >, &, U+2028 and U+2029)."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _source_json(src: SourceLocation) -> dict[str, object]:
    return {"filename": src.filename, "start_line": src.start_line, "end_line": src.end_line}


def _omit_empty(pairs: Iterable[tuple[str, object]]) -> dict[str, object]:
    return {k: v for k, v in pairs if v not in (None, "", 0, False, (), [], {})}


@dataclass
class _JsonVertex:
    """A vertex as last sent: BuildKit re-sends it whole on each change, planned vertices included (the step
    state of the other views is `progress.trace`; this is the wire form, with the wire's own times)."""

    name: str = ""
    inputs: tuple[str, ...] = ()
    started: float | None = None
    completed: float | None = None
    cached: bool = False
    extra: dict[str, object] = field(default_factory=dict)


class RawJsonPrinter:
    """One `client.SolveStatus` JSON object per event, as `buildctl --progress rawjson` writes them.

    Vertexes are re-sent whole on each change (started, then completed/cached/error); logs carry base64 data;
    statuses carry byte counts. Workbench's extras sit under a `workbench` key: in a vertex `miss_reason`,
    `cache_key`, `source` and `duration`; in a warning `rule`; at the top level `finished` for BuildFinished
    and `device` for each CDI device grant or denial (DeviceGrant).
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.vertexes: dict[str, _JsonVertex] = {}
        self.status_started: dict[tuple[str, str], float] = {}
        self.clip = LogClipper()
        self.lock = threading.Lock()

    def __call__(self, ev: Event) -> None:
        with self.lock:
            doc = self.solve_status(ev)
            if doc:
                self.out.write(_go_json(doc) + "\n")
                self.out.flush()

    def _vertex(self, digest: str, v: _JsonVertex, error: str = "") -> dict[str, object]:
        return _omit_empty([
            ("digest", digest), ("inputs", list(v.inputs)), ("name", v.name),
            ("started", rfc3339(v.started) if v.started is not None else None),
            ("completed", rfc3339(v.completed) if v.completed is not None else None),
            ("cached", v.cached), ("error", error), ("workbench", _omit_empty(v.extra.items())),
        ])

    def solve_status(self, ev: Event) -> dict[str, object]:
        """The SolveStatus object for one event (empty when the event has nothing to say)."""
        if isinstance(ev, VertexEvent):
            v = self.vertexes.setdefault(ev.vertex, _JsonVertex(ev.name))
        if isinstance(ev, VertexPlanned):  # as BuildKit's first status of a solve: the vertex, not started
            v.inputs = ev.inputs
            v.extra.update(source=_source_json(ev.source) if ev.source else None)
            return {"vertexes": [self._vertex(ev.vertex, v)]}
        if isinstance(ev, VertexStarted):
            v.inputs, v.started, v.completed, v.cached = ev.inputs, ev.ts, None, False
            v.extra.update(miss_reason=ev.miss_reason, source=_source_json(ev.source) if ev.source else None)
            return {"vertexes": [self._vertex(ev.vertex, v)]}
        if isinstance(ev, VertexCached):
            v.inputs, v.started, v.completed, v.cached = ev.inputs, ev.ts, ev.ts, True
            v.extra.update(cache_key=ev.cache_key, source=_source_json(ev.source) if ev.source else None)
            return {"vertexes": [self._vertex(ev.vertex, v)]}
        if isinstance(ev, VertexCompleted | VertexFailed):
            if v.started is None:
                v.started = ev.ts - ev.duration
            v.completed = ev.ts
            v.extra["duration"] = round(ev.duration, 6)
            error = ev.error if isinstance(ev, VertexFailed) else ""
            return {"vertexes": [self._vertex(ev.vertex, v, error)]}
        if isinstance(ev, VertexLog):
            data = self.clip(ev.vertex, ev.stream, ev.data)
            if not data:
                return {}
            return {"logs": [{"vertex": ev.vertex, "stream": ev.stream, "data": _b64(data),
                              "timestamp": rfc3339(ev.ts)}]}
        if isinstance(ev, VertexStatus):
            sid = ev.status_id or ev.name
            started = self.status_started.setdefault((ev.vertex, sid), ev.ts)
            status: dict[str, object] = {"id": sid, "vertex": ev.vertex}
            if ev.total:
                status["total"] = ev.total
            status.update(current=ev.current, timestamp=rfc3339(ev.ts), started=rfc3339(started))
            if ev.done:
                status["completed"] = rfc3339(ev.ts)
            return {"statuses": [status]}
        if isinstance(ev, BuildWarning):
            src = ev.source
            return {"warnings": [_omit_empty([
                ("vertex", ev.vertex), ("level", 1), ("short", _b64(ev.message.encode())),
                ("detail", [_b64(d.encode()) for d in ev.detail]), ("url", ev.url),
                ("sourceInfo", {"filename": src.filename, "language": "Dockerfile"} if src else None),
                ("range", [{"start": {"line": src.start_line}, "end": {"line": src.end_line}}] if src else None),
                ("workbench", _omit_empty([("rule", ev.rule)])),
            ])]}
        if isinstance(ev, DeviceGrant):
            return {"workbench": {"device": {
                "vertex": ev.vertex, "request": ev.request, "devices": list(ev.devices), "granted": ev.granted,
                "how": ev.how, "required": ev.required, "timestamp": rfc3339(ev.ts)}}}
        if isinstance(ev, BuildFinished):
            doc: dict[str, object] = {}
            canceled = [(d, cv) for d, cv in self.vertexes.items() if cv.started is not None and cv.completed is None]
            for _, cv in canceled:
                cv.completed = ev.ts
            if canceled:
                doc["vertexes"] = [self._vertex(d, cv, "" if cv.cached else "context canceled") for d, cv in canceled]
            finished: dict[str, object] = {"duration": round(ev.duration, 6)}
            if ev.error:
                finished["error"] = ev.error
            doc["workbench"] = {"finished": finished}
            return doc
        return {}
