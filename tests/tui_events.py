"""A fixed, replayable event list of a small failed build (for deterministic TUI tests and snapshots)."""

from __future__ import annotations

from workbench.progress.events import (
    BuildFinished,
    BuildWarning,
    Event,
    SourceLocation,
    VertexCached,
    VertexCompleted,
    VertexFailed,
    VertexLog,
    VertexStarted,
)

T0 = 1_800_000_000.0
DOCKERFILE = """\
FROM localhost:5055/busybox AS base
RUN echo preparing && sleep 1
COPY app.txt /app.txt

FROM base
RUN echo building; echo "\x1b[31mbroken\x1b[0m" >&2; exit 3
"""


def sample_events() -> list[Event]:
    src = "Dockerfile"
    base = "sha256:" + "a" * 64
    prep = "sha256:" + "b" * 64
    copy = "sha256:" + "c" * 64
    run = "sha256:" + "d" * 64
    return [
        VertexStarted("internal:load", "[internal] load build definition from Dockerfile", ts=T0),
        VertexCompleted("internal:load", "[internal] load build definition from Dockerfile", duration=0.01,
                        ts=T0 + 0.01),
        VertexStarted("internal:meta", "[internal] load metadata for localhost:5055/busybox:latest", ts=T0 + 0.02),
        VertexCompleted("internal:meta", "[internal] load metadata for localhost:5055/busybox:latest",
                        duration=0.05, ts=T0 + 0.07),
        BuildWarning("StageNameCasing: Stage name 'base' should be lowercase", SourceLocation(src, 1, 1),
                     rule="StageNameCasing", ts=T0 + 0.08),
        VertexCached(base, "[base 1/3] FROM localhost:5055/busybox:latest", source=SourceLocation(src, 1, 1),
                     cache_key="sha256:" + "1" * 64, snapshot="snap-base", ts=T0 + 0.1,
                     key_parts={"op": base, "text": "FROM localhost:5055/busybox:latest", "inputs": []}),
        VertexStarted(prep, "[base 2/3] RUN echo preparing && sleep 1", inputs=(base,),
                      source=SourceLocation(src, 2, 2), miss_reason="instruction changed: 'RUN echo prep' → "
                      "'RUN echo preparing && sleep 1'", ts=T0 + 0.11,
                      key_parts={"op": prep, "text": "RUN echo preparing && sleep 1",
                                 "inputs": [{"name": "[base 1/3] FROM", "key": "sha256:" + "1" * 64}]}),
        VertexLog(prep, "[base 2/3] RUN echo preparing && sleep 1", data=b"preparing\n", ts=T0 + 0.2),
        VertexCompleted(prep, "[base 2/3] RUN echo preparing && sleep 1", duration=1.02, cache_key="sha256:" + "2" * 64,
                        snapshot="snap-prep", ts=T0 + 1.13),
        VertexStarted(copy, "[base 3/3] COPY app.txt /app.txt", inputs=(prep,), source=SourceLocation(src, 3, 3),
                      miss_reason="parent step missed: [base 2/3] RUN echo preparing && sleep 1", ts=T0 + 1.14,
                      key_parts={"op": copy, "text": "COPY app.txt /app.txt",
                                 "files": {"app.txt": "sha256:" + "e" * 64}}),
        VertexCompleted(copy, "[base 3/3] COPY app.txt /app.txt", duration=0.03, snapshot="snap-copy",
                        ts=T0 + 1.17),
        VertexStarted(run, "[stage-1 2/2] RUN echo building; exit 3", inputs=(copy,),
                      source=SourceLocation(src, 6, 6), miss_reason="parent step missed: [base 3/3] COPY",
                      ts=T0 + 1.18),
        VertexLog(run, "[stage-1 2/2] RUN echo building; exit 3", data=b"building\n", ts=T0 + 1.2),
        VertexLog(run, "[stage-1 2/2] RUN echo building; exit 3", stream=2, data=b"\x1b[31mbroken\x1b[0m\n",
                  ts=T0 + 1.21),
        VertexFailed(run, "[stage-1 2/2] RUN echo building; exit 3",
                     error='process "/bin/sh -c echo building; exit 3" did not complete successfully: exit code: 3',
                     duration=0.05, ts=T0 + 1.23),
        BuildFinished(error='process "/bin/sh -c echo building; exit 3" did not complete successfully: exit code: 3',
                      duration=1.23, ts=T0 + 1.24),
    ]
