"""TUI benchmarks: responsiveness under a 500-vertex build and a 200,000-line step, and edit-to-rerun latency.

    .venv/bin/python bench/tui_bench.py              # synthetic stream (no registry needed)
    .venv/bin/python bench/tui_bench.py --real       # also a real 200,000-line RUN and edit-to-rerun latency
                                                     # (needs the local registry: sh tests/conformance/registry.sh)

Key-to-repaint: a key is posted (as the terminal driver posts it) while events stream in; measured is the time
from posting it to the first screen update rendered after it took effect. Memory: peak RSS of the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.progress.events import (  # noqa: E402
    BuildFinished,
    Event,
    VertexCompleted,
    VertexLog,
    VertexStarted,
)
from workbench.tui.app import WorkbenchApp  # noqa: E402
from workbench.tui.source import LiveBuildSource, ReplaySource  # noqa: E402
from workbench.tui.widgets.dag_view import DagView  # noqa: E402

LINES = 200_000
STAGES, PER_STAGE = 20, 25


def synthetic_events(chunk: int = 4096) -> list[Event]:
    """500 vertices in 20 stages (each stage a chain, every stage also reading the previous one), and one
    step that prints 200,000 numbered lines in `chunk`-byte pieces."""
    events: list[Event] = []
    ts = 1_800_000_000.0
    previous_stage_last = ""
    for s in range(STAGES):
        prev = ""
        for k in range(PER_STAGE):
            vid = f"sha256:{s:04d}{k:04d}" + "0" * 56
            name = f"[stage{s} {k + 1}/{PER_STAGE}] RUN step {s}.{k}"
            inputs = tuple(i for i in (prev, previous_stage_last if k == 0 else "") if i)
            events.append(VertexStarted(vid, name, inputs=inputs, miss_reason="no earlier build", ts=ts))
            if (s, k) == (STAGES // 2, PER_STAGE // 2):
                data = b"".join(b"line %06d of the big step\n" % n for n in range(LINES))
                for off in range(0, len(data), chunk):
                    events.append(VertexLog(vid, name, data=data[off:off + chunk], ts=ts))
            else:
                events.append(VertexLog(vid, name, data=f"output of {name}\n".encode(), ts=ts))
            events.append(VertexCompleted(vid, name, duration=0.01, ts=ts + 0.01))
            prev = vid
            ts += 0.01
        previous_stage_last = prev
    events.append(BuildFinished(duration=ts - 1_800_000_000.0, ts=ts))
    return events


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RepaintClock:
    """Timestamps every screen update the app renders (headless too: the compositor still renders)."""

    def __init__(self, app: WorkbenchApp) -> None:
        self.times: list[float] = []
        original = app._display

        def display(screen: object, renderable: object) -> None:
            if renderable is not None:
                self.times.append(time.perf_counter())
            original(screen, renderable)  # type: ignore[arg-type]

        app._display = display  # type: ignore[method-assign]


async def key_to_repaint(app: WorkbenchApp, clock: RepaintClock, key: str) -> float:
    """Post a key as the terminal driver would; time until the first repaint after the key took effect."""
    dag = app.query_one(DagView)
    log = app.query_one("#log-view")
    before = (dag.cursor, log.scroll_offset.y, frozenset(dag.folded))
    t0 = time.perf_counter()
    app.simulate_key(key)
    deadline = t0 + 5
    while (dag.cursor, log.scroll_offset.y, frozenset(dag.folded)) == before:
        if time.perf_counter() > deadline:
            raise AssertionError(f"key {key!r} had no effect")
        await asyncio.sleep(0)
    handled = time.perf_counter()
    while not clock.times or clock.times[-1] < handled:
        await asyncio.sleep(0)
    return clock.times[-1] - t0


async def responsiveness(source: object, big_step: str, expected_lines: int, label: str) -> dict[str, object]:
    rss0 = peak_rss_mb()
    app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False)  # type: ignore[arg-type]
    latencies: list[float] = []
    t_start = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        clock = RepaintClock(app)
        dag = app.query_one(DagView)
        await pilot.pause(0.05)

        def pick(n: int) -> str:  # a graph key that surely moves something now
            last = len(dag.rows) - 1
            kind = n % 4
            if kind == 3:
                return "z"  # fold / unfold every stage
            if kind == 2:
                return "home" if dag.cursor else "end"
            return "down" if dag.cursor < last else "up"

        n = 0
        while app.model.finished is None:
            if len(dag.rows) > 3:
                latencies.append(await key_to_repaint(app, clock, pick(n)))
                n += 1
            await asyncio.sleep(0.02)
        during = n
        for k in range(12):  # and once the stream has ended
            latencies.append(await key_to_repaint(app, clock, pick(k)))
        wall = time.perf_counter() - t_start
        big = next(v for v in app.model.vertices.values() if big_step in v.name)
        lines = big.log.all_lines()
        lost = expected_lines - len(lines)
        ok = not lost and all(int(line.split()[1]) == n for n, line in enumerate(lines))
        dag.select(big.id)
        await pilot.press("2")
        await pilot.pause(0.2)
        latencies_log = [await key_to_repaint(app, clock, k) for k in ("home", "pagedown", "end", "up")]
        vertices = len(app.model.vertices)
        await pilot.press("q")
    lat = sorted(latencies + latencies_log)
    return {
        "case": label, "vertices": vertices, "log_lines": len(lines), "lines_lost": lost, "lines_in_order": ok,
        "key_to_repaint_ms": {"samples": len(lat), "during_stream": during,
                              "median": round(statistics.median(lat) * 1000, 1),
                              "p95": round(lat[int(len(lat) * 0.95) - 1] * 1000, 1), "max": round(lat[-1] * 1000, 1)},
        "stream_wall_s": round(wall, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_growth_mb": round(peak_rss_mb() - rss0, 1),
    }


REAL_DOCKERFILE = """\
FROM localhost:5055/busybox
RUN echo version-0 > /version
RUN seq 0 199999 | sed 's/.*/line & of the big step/'
"""


async def real_build(tmp: Path) -> dict[str, object]:
    ctx = tmp / "real"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(REAL_DOCKERFILE)
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=tmp / "root")
    return await responsiveness(source, "RUN seq", LINES, "real build, RUN printing 200,000 lines")


async def edit_to_rerun(tmp: Path, runs: int = 8) -> dict[str, object]:
    ctx = tmp / "edit"
    ctx.mkdir()
    dockerfile = ctx / "Dockerfile"
    dockerfile.write_text("FROM localhost:5055/busybox\nRUN echo version-0 > /version\n")
    source = LiveBuildSource(context=ctx, dockerfile=dockerfile, root=tmp / "root")
    app = WorkbenchApp(source, watch=True, devices=[], remember_theme=False)
    first_step: list[float] = []
    first_op: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        async def finished(gen: int) -> None:
            deadline = time.monotonic() + 60
            while not (app.generation == gen and app.model.finished is not None):
                assert time.monotonic() < deadline, "build did not finish"
                await pilot.pause(0.005)

        await finished(1)
        await pilot.pause(0.5)  # the watcher is up
        for n in range(1, runs + 1):
            gen = app.generation + 1
            with open(dockerfile, "w") as f:
                f.write(f"FROM localhost:5055/busybox\nRUN echo version-{n} > /version\n")
            saved = time.monotonic()
            deadline = saved + 10
            while gen not in app.first_op_seen:
                assert time.monotonic() < deadline, "no rerun after the edit"
                await pilot.pause(0.001)
            first_step.append(app.first_step_seen[gen] - saved)
            first_op.append(app.first_op_seen[gen] - saved)
            await finished(gen)
            await pilot.pause(0.3)
        await pilot.press("q")
    ms = lambda xs: {"median": round(statistics.median(xs) * 1000, 1), "max": round(max(xs) * 1000, 1)}  # noqa: E731
    return {"case": "edit-to-rerun, one-line Dockerfile change", "runs": runs,
            "save_to_first_step_started_ms": ms(first_step),
            "save_to_changed_run_step_started_ms": ms(first_op)}


async def replay_seek(keys: int = 10) -> dict[str, object]:
    """`workbench replay` of the synthetic session, paused in the middle: `keys` quick `.` presses, then as many
    `,` (all in the app's queue at once, as a terminal delivers a burst); the time until the view shows the
    position, per key."""
    from workbench.history.store import RecordedSession
    from workbench.progress.replay import EventSource
    from workbench.tui.replay_app import ReplayApp

    events = synthetic_events()
    middle = len(events) // 2
    replay = EventSource(events, speed=1.0)
    replay.seek(middle)
    replay.pause()
    with tempfile.TemporaryDirectory() as tmp:
        session = RecordedSession(Path(tmp), {"id": "bench"}, None, events=events)
        app = ReplayApp(session, replay, watch=False, devices=[], remember_theme=False)
        figures: dict[str, float] = {}
        async with app.run_test(size=(120, 40)) as pilot:
            while not app.player.synced:
                await pilot.pause(0.01)
            for key, target in (("full_stop", middle + keys), ("comma", middle)):
                t0 = time.perf_counter()
                for _ in range(keys):
                    app.simulate_key(key)
                while not (replay.position == target and app.player.synced):
                    await asyncio.sleep(0.001)
                await pilot.pause()  # and drawn
                figures[key] = time.perf_counter() - t0
            await pilot.press("q")
    return {"case": f"replay seek: {keys} quick keys on {len(events)} events",
            **{f"{k}_ms_per_key": round(v * 1000 / keys, 1) for k, v in figures.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="also real builds (needs the local registry)")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    os.environ.setdefault("WORKBENCH_TUI_STATE", os.path.join(tempfile.gettempdir(), "wb-bench-tui.json"))
    results = [asyncio.run(responsiveness(ReplaySource(synthetic_events(), speed=1.0), "step 10.12", LINES,
                                          "synthetic: 500 vertices, one step printing 200,000 lines"))]
    results.append(asyncio.run(replay_seek()))
    if args.real:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(asyncio.run(real_build(Path(tmp))))
            results.append(asyncio.run(edit_to_rerun(Path(tmp))))
    for r in results:
        print(json.dumps(r))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
