"""`workbench history trace`: a recorded build as OpenTelemetry OTLP/JSON (what Jaeger and OTel tools load).

One trace per build: a root span for the build and a child span per step (cached steps are zero-length
spans with `cached=true`), each with its digest, Dockerfile location and cache-miss reason as attributes
and its first log lines as span events. The layout follows the OTLP JSON encoding: ids in lowercase hex,
64-bit integers (times in Unix nanoseconds) as decimal strings, enums as numbers.
"""

from __future__ import annotations

import hashlib
from typing import Any

from workbench.history.steps import fold
from workbench.history.store import RecordedSession
from workbench.progress.trace import ACTIVE, CACHED, CANCELED, FAILED

SPAN_KIND_INTERNAL = 1
STATUS_OK, STATUS_ERROR = 1, 2
MAX_LOG_EVENTS = 100
"""Log chunks kept as span events per step (the full log stays in the session)."""


def _attr(key: str, value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        v: dict[str, Any] = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    elif isinstance(value, float):
        v = {"doubleValue": value}
    else:
        v = {"stringValue": str(value)}
    return {"key": key, "value": v}


def _nanos(ts: float) -> str:
    return str(int(round(ts * 1e9)))


def _span_id(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:16]


def otlp_trace(s: RecordedSession) -> dict[str, Any]:
    """The OTLP/JSON `TracesData` document for session `s`."""
    b = fold(s.events)
    trace_id = hashlib.sha256(("trace:" + s.id).encode()).hexdigest()[:32]
    root_id = _span_id(s.id + ":build")
    start = s.started or b.first_ts
    end = max(b.last_ts, start)
    error = str((s.result or {}).get("error", ""))
    status = s.status
    root_attrs = [_attr("workbench.build.id", s.id), _attr("workbench.build.status", status),
                  _attr("workbench.dockerfile", str(s.meta.get("dockerfile", ""))),
                  _attr("workbench.context", str(s.meta.get("context", "")))]
    if s.meta.get("target"):
        root_attrs.append(_attr("workbench.target", str(s.meta["target"])))
    root = {"traceId": trace_id, "spanId": root_id, "name": "build", "kind": SPAN_KIND_INTERNAL,
            "startTimeUnixNano": _nanos(start), "endTimeUnixNano": _nanos(end), "attributes": root_attrs,
            "status": ({"code": STATUS_ERROR, "message": error or status}
                       if status not in ("completed", "running") else {"code": STATUS_OK})}
    spans = [root]
    for st in b.steps:
        if st.started is None:
            continue
        stop = st.completed if st.completed is not None else end
        attrs = [_attr("vertex", st.id), _attr("cached", st.state == CACHED), _attr("step.index", st.number)]
        if st.miss_reason:
            attrs.append(_attr("cache.miss_reason", st.miss_reason))
        if st.cache_key and st.state == CACHED:  # the key it was found under
            attrs.append(_attr("cache.key", st.cache_key))
        if st.source is not None:
            attrs += [_attr("code.filepath", st.source.filename), _attr("code.lineno", st.source.start_line)]
        events = [{"timeUnixNano": _nanos(ts), "name": "log",
                   "attributes": [_attr("stream", "stderr" if stream == 2 else "stdout"),
                                  _attr("data", data.decode(errors="replace"))]}
                  for ts, stream, data in st.logs[:MAX_LOG_EVENTS]]
        span: dict[str, Any] = {
            "traceId": trace_id, "spanId": _span_id(f"{s.id}:{st.number}:{st.id}"), "parentSpanId": root_id,
            "name": st.name, "kind": SPAN_KIND_INTERNAL, "startTimeUnixNano": _nanos(st.started),
            "endTimeUnixNano": _nanos(max(stop, st.started)), "attributes": attrs,
            "status": {"code": STATUS_OK},
        }
        if events:
            span["events"] = events
        if st.state in (FAILED, CANCELED, *ACTIVE):
            span["status"] = {"code": STATUS_ERROR, "message": st.error or "interrupted"}
        spans.append(span)
    return {"resourceSpans": [{
        "resource": {"attributes": [_attr("service.name", "workbench")]},
        "scopeSpans": [{"scope": {"name": "workbench.history", "version": "1"}, "spans": spans}],
    }]}
