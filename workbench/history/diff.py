"""`workbench history diff A B`: the steps whose cache state changed between two recorded builds, and why."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.history.steps import RecordedStep, fold
from workbench.history.store import RecordedSession
from workbench.progress.trace import ACTIVE, CACHED, CANCELED, DONE, ENDED, FAILED, PAUSED, PENDING, RUNNING

_RAN = (*ENDED, *ACTIVE)


def _label(st: RecordedStep | None) -> str:
    if st is None:
        return "-"
    return {CACHED: "CACHED", DONE: "RAN", FAILED: "FAILED", CANCELED: "CANCELED",
            RUNNING: "RUNNING", PAUSED: "PAUSED", PENDING: "PENDING"}[st.state]


@dataclass
class StepChange:
    name: str
    a: RecordedStep | None
    b: RecordedStep | None
    why: str


def _why(a: RecordedStep | None, b: RecordedStep | None) -> str:
    if a is None:
        return "only in B" + (f": {b.miss_reason}" if b and b.miss_reason else "")
    if b is None:
        return "only in A (not part of B's build)"
    if b.state in _RAN and b.miss_reason:
        return b.miss_reason
    if b.state == CACHED and a.state in _RAN:
        reason = f"A missed ({a.miss_reason})" if a.miss_reason else "A ran it"
        return f"{reason}; B found A's result in the cache"
    if b.state in (FAILED, CANCELED) and b.error:
        return b.error
    return ""


def compare(a: RecordedSession, b: RecordedSession) -> tuple[list[StepChange], int]:
    """The steps (internal ones left out) whose state differs, matched by name; and how many stayed the same."""
    steps_a = {st.name: st for st in fold(a.events).steps if not st.internal}
    steps_b = {st.name: st for st in fold(b.events).steps if not st.internal}
    changes: list[StepChange] = []
    same = 0
    for name in [*steps_b, *(n for n in steps_a if n not in steps_b)]:
        sa, sb = steps_a.get(name), steps_b.get(name)
        if sa is not None and sb is not None and _label(sa) == _label(sb):
            same += 1
            continue
        changes.append(StepChange(name, sa, sb, _why(sa, sb)))
    return changes, same


def format_diff(a: RecordedSession, b: RecordedSession) -> str:
    from workbench.history.report import when

    changes, same = compare(a, b)
    lines = [f"A: {a.id}  {when(a.started)}  {a.meta.get('dockerfile', '')}",
             f"B: {b.id}  {when(b.started)}  {b.meta.get('dockerfile', '')}", ""]
    if not changes:
        lines.append(f"No step changed cache state ({same} steps the same).")
        return "\n".join(lines) + "\n"
    rows = [("STEP", "A", "B", "WHY")] + [(c.name, _label(c.a), _label(c.b), c.why) for c in changes]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines += ["  ".join(f"{c:<{w}}" for c, w in zip(r[:3], width, strict=False)) + "  " + r[3] for r in rows]
    lines += ["", f"{len(changes)} step(s) changed cache state, {same} the same."]
    return "\n".join(lines) + "\n"
