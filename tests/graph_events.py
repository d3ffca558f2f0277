"""Replayable builds of known shapes for the graph tests: a straight chain, two stages forked from a base and
merged by `COPY --from`, and 500 steps in 20 chained stages."""

from __future__ import annotations

from workbench.progress.events import (
    BuildFinished,
    Event,
    SourceLocation,
    VertexCached,
    VertexCompleted,
    VertexStarted,
)

T0 = 1_800_000_000.0


def digest(n: int) -> str:
    return f"sha256:{n:064d}"


def events_of(steps: list[tuple[str, tuple[int, ...], float | None, int]]) -> list[Event]:
    """Steps as (name, input step indexes, duration or None for cached, Dockerfile line), run one after another."""
    events: list[Event] = []
    ts = T0
    for n, (name, inputs, duration, line) in enumerate(steps):
        vid, ins, src = digest(n), tuple(digest(i) for i in inputs), SourceLocation("Dockerfile", line, line)
        if duration is None:
            events.append(VertexCached(vid, name, inputs=ins, source=src, ts=ts))
            continue
        events.append(VertexStarted(vid, name, inputs=ins, source=src, miss_reason="no earlier build", ts=ts))
        ts += duration
        events.append(VertexCompleted(vid, name, duration=duration, ts=ts))
    events.append(BuildFinished(duration=ts - T0, ts=ts))
    return events


CHAIN = [("[1/4] FROM localhost:5055/busybox", (), None, 1), ("[2/4] RUN echo a", (0,), 0.5, 2),
         ("[3/4] RUN echo b", (1,), 1.5, 3), ("[4/4] RUN echo c", (2,), 0.25, 4)]
CHAIN_DOCKERFILE = "FROM localhost:5055/busybox\nRUN echo a\nRUN echo b\nRUN echo c\n"

FORK_MERGE = [("[base 1/2] FROM localhost:5055/busybox", (), None, 1), ("[base 2/2] COPY a.txt /a", (0,), 0.5, 2),
              ("[build 1/1] RUN make", (1,), 3.0, 4), ("[stage-2 1/2] RUN echo final", (1,), 1.0, 6),
              ("[stage-2 2/2] COPY --from=build /out /out", (3, 2), 0.2, 7)]
FORK_MERGE_DOCKERFILE = ("FROM localhost:5055/busybox AS base\nCOPY a.txt /a\nFROM base AS build\nRUN make\n"
                         "FROM base\nRUN echo final\nCOPY --from=build /out /out\n")
"""base's last step is read by two stages (a fork); stage-2 goes on in base's lane and takes build's output
(a merge). The critical path: FROM, COPY a.txt, RUN make, COPY --from (0.5 + 3.0 + 0.2 s)."""


def big(stages: int = 20, per_stage: int = 25) -> list[tuple[str, tuple[int, ...], float | None, int]]:
    """`stages` chained stages of `per_stage` steps (each stage's first step reads the previous stage's last)."""
    steps: list[tuple[str, tuple[int, ...], float | None, int]] = []
    for s in range(stages):
        for k in range(per_stage):
            n = len(steps)
            inputs = (n - 1,) if n else ()
            steps.append((f"[stage{s} {k + 1}/{per_stage}] RUN step {s}.{k}", inputs, 0.01, n + 1))
    return steps
