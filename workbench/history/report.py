"""Text for `workbench history ls|show|logs` and `workbench replay --progress plain`."""

from __future__ import annotations

import io
import os
import time
from typing import Any

from workbench.history.steps import BuildSteps, RecordedStep, fold
from workbench.history.store import RecordedSession
from workbench.progress.events import DeviceGrant, SourceLocation
from workbench.progress.trace import ACTIVE, CACHED, DONE, ENDED, FAILED, paused_label

SLOWEST = 5
ERROR_LOG_LINES = 16
"""The failed step's last log lines `history show` prints (buildx history inspect prints 16)."""


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def seconds(d: float) -> str:
    return f"{d:.1f}s" if d < 60 else f"{int(d // 60)}m{d % 60:04.1f}s"


def _display_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("../..") else path


def counts(s: RecordedSession) -> dict[str, int]:
    """total / cached / failed: from result.json, or folded from the events of a build cut short."""
    recorded = (s.result or {}).get("steps")
    if isinstance(recorded, dict):
        return {k: int(recorded.get(k, 0)) for k in ("total", "cached", "failed")}
    if not s.events:
        from workbench.history.store import load_session

        s.events = load_session(s.path).events
    return fold(s.events).counts


def duration(s: RecordedSession) -> float:
    if s.result is not None:
        return float(s.result.get("duration", 0.0))
    if not s.events:
        from workbench.history.store import load_session

        s.events = load_session(s.path).events
    return (s.events[-1].ts - s.started) if s.events else 0.0


def format_ls(records: list[RecordedSession]) -> str:
    """`history ls`: one row per build, newest first."""
    rows = [("BUILD ID", "CREATED AT", "STATUS", "DURATION", "STEPS", "CACHED", "FAILED", "TARGET", "ENGINE",
             "DOCKERFILE")]
    for s in records:
        c = counts(s)
        rows.append((s.id, when(s.started), s.status, seconds(duration(s)), str(c["total"]), str(c["cached"]),
                     str(c["failed"]), str(s.meta.get("target") or "-"),
                     str(s.meta.get("engine") or "local").split(" at ", 1)[0],  # the daemon; its address is long
                     _display_path(str(s.meta.get("dockerfile", "")))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "".join("  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=False)) + "  " + r[-1] + "\n"
                   for r in rows)


def _step_label(st: RecordedStep) -> str:
    return f"#{st.number} {st.name}"


def _source_lines(s: RecordedSession, loc: SourceLocation | None) -> list[str]:
    if loc is None or not s.dockerfile:
        return []
    src = s.dockerfile.splitlines()
    out = [f"  {loc.filename}:{loc.start_line}" + (f"-{loc.end_line}" if loc.end_line != loc.start_line else "")]
    for n in range(loc.start_line, min(loc.end_line, len(src)) + 1):
        out.append(f"  {n:>4} | {src[n - 1]}")
    return out


def format_show(s: RecordedSession) -> str:
    """`history show`: the request, the outcome, the slowest steps and every miss with its reason."""
    b = fold(s.events)
    m = s.meta
    c = b.counts
    done = sum(1 for st in b.steps if st.state in (CACHED, DONE))
    cached_pct = round(100 * c["cached"] / c["total"]) if c["total"] else 0
    lines = [f"ID:           {s.id}",
             f"Status:       {s.status}",
             f"Dockerfile:   {m.get('dockerfile', '')}",
             f"Context:      {m.get('context', '')}",
             f"Target:       {m.get('target') or '(last stage)'}"]
    if m.get("build_args"):
        lines.append("Build args:   " + " ".join(f"{k}={v}" for k, v in sorted(m["build_args"].items())))
    if m.get("secrets"):
        lines.append("Secrets:      " + ", ".join(m["secrets"]) + " (ids only; values are never recorded)")
    if m.get("entitlements"):
        lines.append("Allowed:      " + ", ".join(m["entitlements"]))
    if m.get("no_cache"):
        lines.append("No cache:     true")
    for o in m.get("outputs") or []:
        lines.append("Output:       " + ",".join(f"{k}={v}" for k, v in o.items()))
    lines += [f"Started:      {when(s.started)}",
              f"Duration:     {seconds(duration(s))}" + (f" ({paused_label(b.paused)})" if b.paused else ""),
              f"Build Steps:  {done}/{c['total']} ({cached_pct}% cached, {c['failed']} failed)"]
    r = s.result or {}
    if r.get("manifest_digest"):
        lines.append(f"Manifest:     {r['manifest_digest']}")
    if s.status in ("error", "canceled"):
        lines += ["", f"Error: {r.get('error', '')}"]
        loc = r.get("location")
        if isinstance(loc, dict):
            lines += _source_lines(s, SourceLocation(loc["filename"], loc["start_line"], loc["end_line"]))
        failed = [st for st in b.steps if st.state == FAILED]
        for st in failed[:1]:
            tail = st.log_text().decode(errors="replace").splitlines()[-ERROR_LOG_LINES:]
            if tail:
                lines += ["", f"Logs of {_step_label(st)} (last {len(tail)} lines):", *(f"  {t}" for t in tail)]
    elif s.status == "interrupted":
        lines += ["", "The build was interrupted (killed or crashed): the record ends at its last event."]
    ran = sorted((st for st in b.steps if st.state in (*ENDED, *ACTIVE)),
                 key=lambda st: -st.elapsed)[:SLOWEST]  # run time: a debugger's pauses are shown apart
    if ran:
        lines += ["", "Slowest steps:"]
        lines += [f"  {seconds(st.elapsed):>7}  {_step_label(st)}" + (f"  ({paused_label(st.paused)})"
                                                                      if st.paused else "") for st in ran]
    grants = [e for e in s.events if isinstance(e, DeviceGrant)]
    if grants:
        lines += ["", "Devices:"]
        by_digest = {st.id: st for st in b.steps}
        for g in grants:
            asked = by_digest.get(g.vertex)
            where = f"#{asked.number} " if asked else ""
            verdict = "granted" if g.granted else "denied"
            lines.append(f"  {where}{g.request}: {verdict} ({g.how})")
    misses = [st for st in b.steps if st.miss_reason]
    if misses:
        lines += ["", "Cache misses:"]
        for st in misses:
            lines += [f"  {_step_label(st)}", f"      {st.miss_reason}"]
    if s.bad_lines:
        lines += ["", f"({s.bad_lines} unreadable event line(s) skipped)"]
    return "\n".join(lines) + "\n"


def plain_output(s: RecordedSession, mode: str = "plain") -> str:
    """What `workbench build --progress MODE` printed for this build: the view of its events, then the error."""
    from workbench.progress.replay import replay_text

    out = io.StringIO()
    replay_text(s.events, mode, out, log_limit(s))
    out.write(closing_error(s))
    return out.getvalue()


def log_limit(s: RecordedSession) -> int | None:
    """The step log clip the build's views applied (its BUILDKIT_STEP_LOG_MAX_SIZE), None when not recorded."""
    from workbench.progress.logclip import DEFAULT_LOG_LIMIT

    if "step_log_max_size" not in s.meta:
        return None
    try:
        return int(s.meta["step_log_max_size"])
    except (TypeError, ValueError):
        return DEFAULT_LOG_LIMIT


def closing_error(s: RecordedSession) -> str:
    """The lines the CLI printed after the progress view of a failed or canceled build."""
    from workbench.errors import format_failure

    r: dict[str, Any] = s.result or {}
    if r.get("status") == "canceled":
        return "ERROR: build canceled\n"
    if r.get("status") != "error" or "error" not in r or r.get("exception"):
        return ""
    loc = r.get("location")
    location = SourceLocation(loc["filename"], loc["start_line"], loc["end_line"]) if isinstance(loc, dict) else None
    return format_failure(r["error"], location, "", s.dockerfile if location else "") + "\n"


def step_logs(b: BuildSteps, st: RecordedStep) -> bytes:
    """One step's output as it ran (stdout and stderr in the order they came)."""
    return st.log_text()
