"""Predicting misses before building (issue 18 item 11): over a series of edits, what the engine predicts
before each build is what the build then does — the same steps run, for the same reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.debug.controller import Breakpoint, Debugger
from workbench.engine import LocalEngine
from workbench.prediction import PredictionError, predict_build
from workbench.progress.events import EventBus, VertexCached, VertexStarted
from workbench.request import BuildRequest
from workbench.solver.predict import Prediction

DOCKERFILE = """FROM localhost:5055/busybox
ARG GREETING=hello
COPY src/ /src/
RUN echo $GREETING > /greeting && ls /src > /listing
COPY README /README
"""


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    c = tmp_path / "ctx"
    (c / "src").mkdir(parents=True)
    (c / "src" / "app.py").write_text("print(1)\n")
    (c / "src" / "notes.tmp").write_text("scratch\n")
    (c / ".dockerignore").write_text("src/*.tmp\n")
    (c / "README").write_text("readme\n")
    (c / "Dockerfile").write_text(DOCKERFILE)
    return c


def outcome(req: BuildRequest) -> dict[str, str | None]:
    """Build `req`: vertex digest -> its miss reason for each step that ran, None for each cached one."""
    got: dict[str, str | None] = {}

    def sink(ev: object) -> None:
        if isinstance(ev, VertexStarted) and not ev.vertex.startswith("internal:"):
            got[ev.vertex] = ev.miss_reason
        elif isinstance(ev, VertexCached):
            got[ev.vertex] = None

    bus = EventBus()
    bus.subscribe(sink)
    LocalEngine().build(req, bus)
    return got


def predicted_then_built(ctx: Path, root: Path, **kw: object) -> dict[str, str | None]:
    """Predict, build, and assert they agree; the prediction by step name (reason, or None: cached)."""
    req = BuildRequest(context=ctx, dockerfile=ctx / "Dockerfile", root=root, **kw)  # type: ignore[arg-type]
    prediction = LocalEngine().predict(req)
    built = outcome(req)
    said = {s.digest: s.reason for s in prediction.steps if s.digest in built}
    assert said == built
    assert set(prediction.misses()) == {d for d, reason in built.items() if reason is not None}
    assert prediction.check({d: reason is not None for d, reason in built.items()}) == []
    return named(prediction)


def named(prediction: Prediction) -> dict[str, str | None]:
    """Step name (a FROM's pinned digest left out) -> predicted reason, None: cached."""
    return {s.name.split("@", 1)[0]: s.reason for s in prediction.steps}


def test_prediction_matches_the_build_over_a_series_of_edits(registry: str, ctx: Path, root: Path) -> None:
    first = predicted_then_built(ctx, root)
    assert set(first.values()) == {"never built before"}

    assert set(predicted_then_built(ctx, root).values()) == {None}  # nothing changed

    (ctx / "src" / "app.py").touch()
    assert set(predicted_then_built(ctx, root).values()) == {None}  # a touch is not a change

    (ctx / "src" / "app.py").write_text("print(2)\n")
    got = predicted_then_built(ctx, root)
    assert got["[1/4] FROM localhost:5055/busybox:latest"] is None
    assert str(got["[2/4] COPY src/ /src/"]).startswith("src/app.py changed (")
    assert got["[3/4] RUN echo hello > /greeting && ls /src > /listing"] == "parent step missed: [2/4] COPY src/ /src/"
    assert got["[4/4] COPY README /README"] == \
        "parent step missed: [3/4] RUN echo hello > /greeting && ls /src > /listing"

    (ctx / "src" / "notes.tmp").write_text("ignored by .dockerignore\n")
    assert set(predicted_then_built(ctx, root).values()) == {None}

    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("ls /src > /listing", "ls -a /src > /listing"))
    got = predicted_then_built(ctx, root)
    assert got["[2/4] COPY src/ /src/"] is None
    assert got["[3/4] RUN echo hello > /greeting && ls -a /src > /listing"] == \
        "instruction changed: RUN echo $GREETING > /greeting && ls /src > /listing → " \
        "RUN echo $GREETING > /greeting && ls -a /src > /listing"
    assert str(got["[4/4] COPY README /README"]).startswith("parent step missed: ")

    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("GREETING=hello", "GREETING=howdy"))
    got = predicted_then_built(ctx, root)
    assert got["[2/4] COPY src/ /src/"] is None
    assert got["[3/4] RUN echo howdy > /greeting && ls /src > /listing"] == \
        "build arg GREETING changed: 'hello' → 'howdy'"

    uncached = predicted_then_built(ctx, root, no_cache=True)
    assert uncached.pop(next(k for k in uncached if "FROM" in k)) is None  # as BuildKit: --no-cache leaves FROM cached
    assert set(uncached.values()) == {"cache disabled (--no-cache)"}


def test_a_breakpoint_is_predicted_to_rerun_up_to_it(registry: str, ctx: Path, root: Path) -> None:
    predicted_then_built(ctx, root)
    dbg = Debugger()
    dbg.breakpoints = [Breakpoint(line=3)]  # COPY src/: it and what comes after run again to stop there
    req = BuildRequest(context=ctx, dockerfile=ctx / "Dockerfile", root=root)
    got = named(predict_build(req, dbg))
    assert got == {"[1/4] FROM localhost:5055/busybox:latest": None,
                   "[2/4] COPY src/ /src/": "ran again to stop at a breakpoint",
                   "[3/4] RUN echo hello > /greeting && ls /src > /listing": "ran again to stop at a breakpoint",
                   "[4/4] COPY README /README": "ran again to stop at a breakpoint"}


def test_what_cannot_be_predicted_says_why(registry: str, ctx: Path, root: Path) -> None:
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nCOPY missing.txt /\n")
    with pytest.raises(PredictionError, match="missing.txt"):
        LocalEngine().predict(BuildRequest(context=ctx, dockerfile=ctx / "Dockerfile", root=root))
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nRUNN echo hi\n")
    with pytest.raises(PredictionError, match="RUNN"):
        LocalEngine().predict(BuildRequest(context=ctx, dockerfile=ctx / "Dockerfile", root=root))


def test_a_prediction_changes_nothing_in_the_cache_index(registry: str, ctx: Path, root: Path) -> None:
    """Looking ahead is not a use: no record's last use moves (GC would otherwise keep what only a prediction saw)."""
    import sqlite3
    import time

    req = BuildRequest(context=ctx, dockerfile=ctx / "Dockerfile", root=root)
    outcome(req)

    def rows() -> list[tuple[str, float]]:
        with sqlite3.connect(root / "cache.db") as db:
            return sorted(db.execute("SELECT key, last_used FROM results").fetchall())

    before = rows()
    time.sleep(0.05)
    prediction = LocalEngine().predict(req)
    assert prediction.steps and not prediction.misses()  # all cached: every record was looked at
    assert rows() == before
