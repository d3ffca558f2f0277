"""Two recorded builds step by step: `workbench history diff A B` (the steps whose cache state changed, and
why) and the TUI's side-by-side comparison (every step, its state and run time in each, the miss reason)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from workbench.history.steps import RecordedStep, fold
from workbench.history.store import RecordedSession
from workbench.progress.trace import ACTIVE, CACHED, CANCELED, DONE, ENDED, FAILED, PAUSED, PENDING, RUNNING

_RAN = (*ENDED, *ACTIVE)
_COUNTER = re.compile(r"^\[(?:(?P<stage>[^\]\s]+) )? *\d+/\d+\] ")
"""The `[stage-0 2/4] ` that starts a step's name: the counter shifts when an edit adds or removes a step."""
ABSENT = "absent"


def _label(st: RecordedStep | None) -> str:
    if st is None:
        return "-"
    return {CACHED: "CACHED", DONE: "RAN", FAILED: "FAILED", CANCELED: "CANCELED",
            RUNNING: "RUNNING", PAUSED: "PAUSED", PENDING: "PENDING"}[st.state]


def outcome(st: RecordedStep | None) -> str:
    """A step's state in one build, as the comparison shows it: cached, ran, failed, canceled, … or absent."""
    return ABSENT if st is None else _label(st).lower()


@dataclass
class StepChange:
    """One step of either build: its record in A and in B (None: not in that build) and what changed."""

    name: str
    a: RecordedStep | None
    b: RecordedStep | None
    why: str

    @property
    def changed(self) -> bool:
        """Whether its cache state differs between the builds (or the step itself was edited)."""
        return _label(self.a) != _label(self.b) or (self.a is not None and self.b is not None
                                                     and _loose(self.a.name) != _loose(self.b.name))


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


def _loose(name: str) -> str:
    """The name without its counter (`[stage-0 2/4] COPY a /a` -> `stage-0 COPY a /a`)."""
    m = _COUNTER.match(name)
    return f"{m.group('stage') or ''} {name[m.end():]}" if m else name


def _stage(st: RecordedStep) -> str:
    m = _COUNTER.match(st.name)
    return (m.group("stage") or "") if m else ""


def pair_steps(steps_a: list[RecordedStep], steps_b: list[RecordedStep]) \
        -> list[tuple[RecordedStep | None, RecordedStep | None]]:
    """B's steps in B's order, each with the same step of A (None: A has none), then A's steps B lacks.

    The same step: by name; else (an edit added or removed a step, shifting the counters) the same
    instruction in the same stage; else (the instruction itself was edited) the step of the same stage on the
    same Dockerfile line.
    """
    rest = list(steps_a)
    pairs: dict[int, RecordedStep] = {}
    for key in (lambda s: s.name, lambda s: _loose(s.name),
                lambda s: (_stage(s), s.source.start_line) if s.source is not None else None):
        wanted: dict[object, RecordedStep] = {}
        for sa in rest:
            k = key(sa)
            if k is not None:
                wanted.setdefault(k, sa)
        for n, sb in enumerate(steps_b):
            if n in pairs:
                continue
            k = key(sb)
            match = wanted.pop(k, None) if k is not None else None
            if match is not None:
                pairs[n] = match
                rest.remove(match)
    out: list[tuple[RecordedStep | None, RecordedStep | None]] = [(pairs.get(n), sb) for n, sb in enumerate(steps_b)]
    return out + [(sa, None) for sa in rest]


def side_by_side(a: RecordedSession, b: RecordedSession) -> list[StepChange]:
    """Every step of either build (internal ones left out), B's order first, with why its state is what it is."""
    steps_a = [st for st in fold(a.events).steps if not st.internal]
    steps_b = [st for st in fold(b.events).steps if not st.internal]
    return [StepChange(sb.name if sb is not None else sa.name if sa is not None else "", sa, sb, _why(sa, sb))
            for sa, sb in pair_steps(steps_a, steps_b)]


def compare(a: RecordedSession, b: RecordedSession) -> tuple[list[StepChange], int]:
    """The steps (internal ones left out) whose state differs; and how many stayed the same."""
    rows = side_by_side(a, b)
    changes = [r for r in rows if r.changed]
    return changes, len(rows) - len(changes)


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
