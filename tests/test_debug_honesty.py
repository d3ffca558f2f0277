"""What the debugger's builds report is true (issue 18): a pause is not run time, a step run again for a
breakpoint says so, and quitting at a pause cancels the step that did not run (it did not fail)."""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import WORKBENCH, wb
from workbench.debug.controller import Breakpoint, Debugger
from workbench.history.steps import fold
from workbench.history.store import list_sessions, load_session
from workbench.progress.events import (
    BuildFinished,
    DebugHeld,
    DebugPaused,
    DebugResumed,
    Event,
    EventBus,
    SourceLocation,
    VertexCompleted,
    VertexFailed,
    VertexLog,
    VertexStarted,
)
from workbench.progress.plain import PlainPrinter
from workbench.progress.trace import CANCELED, DONE, PAUSED, RUNNING, Step, Trace

BASE = "localhost:5055/busybox"
BREAKPOINT_RERUN = "ran again to stop at a breakpoint"


def _paused_step_events(t0: float) -> list[Event]:
    """A step paused at a breakpoint for 40 s, then run for 1 s printing one line."""
    src = SourceLocation("Dockerfile", 2, 2)
    return [VertexStarted("v1", "[2/2] RUN pip install", source=src, ts=t0),
            DebugPaused("v1", "[2/2] RUN pip install", "breakpoint", source=src, ts=t0 + 0.1),
            DebugResumed("v1", "continue", ts=t0 + 40.1),
            VertexLog("v1", "[2/2] RUN pip install", data=b"installed\n", ts=t0 + 40.5),
            VertexCompleted("v1", "[2/2] RUN pip install", duration=1.0, paused=40.0, ts=t0 + 41.1),
            BuildFinished(duration=1.2, ts=t0 + 41.2)]


def test_a_pause_is_shown_apart_from_run_time_in_the_fold_and_plain_output() -> None:
    events = _paused_step_events(1000.0)
    trace: Trace[Step] = Trace(Step)
    trace.apply(events[0])
    assert trace.steps[0].state == RUNNING
    trace.apply(events[1])
    step = trace.steps[0]
    assert step.state == PAUSED  # not `running` while the debugger holds it
    assert step.paused_for(1030.1) == pytest.approx(30.0)
    assert step.run_time(1030.1) == pytest.approx(0.1)  # the live timer stands still during the pause
    for ev in events[2:]:
        trace.apply(ev)
    assert step.state == DONE and step.paused == pytest.approx(40.0)
    assert step.elapsed == pytest.approx(1.0)  # history's "Slowest steps" ranks by this
    assert trace.paused == pytest.approx(40.0)  # the build's own pause time

    out = io.StringIO()
    printer = PlainPrinter(out)
    for ev in events:
        printer(ev)
    text = out.getvalue()
    assert "#1 0.500 installed\n" in text, text  # the log stamp leaves the pause out (not 40.500)
    assert "#1 DONE 1.0s (paused 40s)\n" in text, text

    steps = fold(events)
    assert steps.paused == pytest.approx(40.0)
    assert steps.steps[0].elapsed == pytest.approx(1.0)


def test_without_a_debugger_the_plain_output_is_unchanged() -> None:
    t0 = 1000.0
    events: list[Event] = [VertexStarted("v1", "[1/1] RUN x", ts=t0),
                           VertexLog("v1", "[1/1] RUN x", data=b"hi\n", ts=t0 + 0.25),
                           VertexCompleted("v1", "[1/1] RUN x", duration=0.5, ts=t0 + 0.5),
                           BuildFinished(duration=0.6, ts=t0 + 0.6)]
    out = io.StringIO()
    printer = PlainPrinter(out)
    for ev in events:
        printer(ev)
    assert out.getvalue() == "#1 [1/1] RUN x\n#1 0.250 hi\n#1 DONE 0.5s\n"


def _fake_step(digest: str, line: int) -> SimpleNamespace:
    vertex = SimpleNamespace(digest=digest, name=f"[{line}/3] RUN step {line}",
                             source=SourceLocation("Dockerfile", line, line))
    return SimpleNamespace(vertex=vertex, cancel=threading.Event(), error="", release=lambda: None)


def test_a_step_held_behind_another_pause_shows_as_paused_and_its_wait_is_not_run_time() -> None:
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    dbg = Debugger(bus)
    dbg.breakpoints += [Breakpoint(line=2), Breakpoint(line=3)]
    a, b = _fake_step("a", 2), _fake_step("b", 3)
    trace: Trace[Step] = Trace(Step)
    for s in (a, b):
        trace.apply(VertexStarted(s.vertex.digest, s.vertex.name, ts=time.time()))
    first = threading.Thread(target=dbg.before_step, args=(a,))
    first.start()
    assert dbg.wait_for_pause(5) is not None and dbg.current is not None and dbg.current.vertex.digest == "a"
    second = threading.Thread(target=dbg.before_step, args=(b,))
    second.start()
    deadline = time.time() + 5
    while not any(isinstance(e, DebugHeld) for e in events) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    for ev in list(events):
        trace.apply(ev)
    assert [s.state for s in trace.steps] == [PAUSED, PAUSED]  # the held one too, not `running`
    dbg.resume("continue")
    deadline = time.time() + 5
    while (dbg.current is None or dbg.current.vertex.digest != "b") and time.time() < deadline:
        time.sleep(0.01)
    assert dbg.current is not None and dbg.current.vertex.digest == "b"
    dbg.resume("continue")
    first.join(5)
    second.join(5)
    assert dbg.held(b.vertex) >= 0.3  # held behind a's pause, then its own: none of it is run time
    assert dbg.held() >= dbg.held(a.vertex) > 0.3  # the build stood paused at a, then at b


# -- real builds through `workbench debug` (pexpect) -------------------------------------------------------


def _spawn(*args: str, cwd: Path):  # type: ignore[no-untyped-def]
    pexpect = pytest.importorskip("pexpect")
    return pexpect.spawn(WORKBENCH[0], ["debug", *args], cwd=str(cwd), encoding="utf-8", timeout=60,
                         dimensions=(40, 160), env=dict(os.environ, WORKBENCH_SERVER="0", PROMPT_TOOLKIT_NO_CPR="1"))


def _cli(*args: str, root: Path) -> str:
    proc = subprocess.run([*WORKBENCH, *args, "--root", str(root)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.real
def test_debugging_reports_pauses_apart_and_breakpoint_reruns_as_such(tmp_path: Path, registry: str) -> None:
    pexpect = pytest.importorskip("pexpect")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nRUN echo one > /one\nRUN echo two > /two\nRUN echo three\n")
    root = tmp_path / "root"
    wb(str(ctx), root=root)  # everything is in the cache now

    child = _spawn("--root", str(root), str(ctx), cwd=tmp_path)
    child.logfile_read = repl = io.StringIO()
    child.expect(r"\(debug\)")
    child.sendline("break 3")
    child.expect(r"\(debug\)")
    child.sendline("continue")
    child.expect(r"Breakpoint before: \[3/4\] RUN echo two")
    child.expect(r"\(debug\)")
    time.sleep(2.5)
    child.sendline("continue")
    child.expect("build finished")
    if child.expect([r"\(debug\)", pexpect.EOF]) == 0:  # the REPL stays to look at the ended build
        child.sendline("quit")
        child.expect(pexpect.EOF)
    child.close()
    printed = repl.getvalue()
    assert printed.count(f"CACHE MISS: {BREAKPOINT_RERUN}") == 2, printed  # the REPL's progress
    assert "its cache record is gone" not in printed and "(paused 2." in printed, printed

    show = _cli("history", "show", "^0", root=root)
    assert f"[3/4] RUN echo two > /two\n      {BREAKPOINT_RERUN}" in show, show
    assert f"[4/4] RUN echo three\n      {BREAKPOINT_RERUN}" in show, show
    assert "its cache record is gone" not in show, show
    slowest = show.split("Slowest steps:")[1].split("\n\n")[0]
    line = next(ln for ln in slowest.splitlines() if "RUN echo two" in ln)
    assert "(paused 2." in line and float(line.split()[0].rstrip("s")) < 2.0, slowest  # run time apart
    duration = next(ln for ln in show.splitlines() if ln.startswith("Duration:"))
    assert "(paused 2." in duration and float(duration.split()[1].rstrip("s")) < 2.5, duration
    logs = _cli("history", "logs", "^0", root=root)
    assert f"CACHE MISS: {BREAKPOINT_RERUN}" in logs and "(paused 2." in logs, logs

    why = _cli("inspect", "why", str(ctx), root=root)
    assert why.count(f"CACHE MISS: {BREAKPOINT_RERUN}") == 2, why
    assert "its cache record is gone" not in why, why


@pytest.mark.real
def test_quitting_at_a_pause_records_the_unrun_step_as_canceled(tmp_path: Path, registry: str) -> None:
    pexpect = pytest.importorskip("pexpect")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nRUN echo one > /one\nRUN echo two > /two\nRUN echo three\n")
    root = tmp_path / "root"
    child = _spawn("--root", str(root), str(ctx), cwd=tmp_path)
    child.expect(r"\(debug\)")
    child.sendline("break 4")
    child.expect(r"\(debug\)")
    child.sendline("continue")
    child.expect(r"Breakpoint before: \[4/4\] RUN echo three")
    child.expect(r"\(debug\)")
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    newest = load_session(list_sessions(root / "history")[0].path)
    steps = fold(newest.events)
    unrun = next(s for s in steps.steps if "RUN echo three" in s.name)
    assert unrun.state == CANCELED, (unrun.state, unrun.error)
    assert steps.counts["failed"] == 0
    assert "0 failed" in _cli("history", "show", "^0", root=root)


# -- the TUI (Pilot) ------------------------------------------------------------------------------------------


def _dag_line(app: Any, vid: str) -> str:
    from workbench.tui.widgets.dag_view import DagView

    dag = app.query_one(DagView)
    index = next(n for n, row in enumerate(dag.rows) if row.vertex == vid)
    return str(dag.render_line(index - dag.scroll_offset.y).text)


@pytest.mark.real
def test_the_tui_shows_a_pause_as_paused_and_apart_from_run_time(registry: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from tests.tui_pilot import until
    from workbench.tui.app import WorkbenchApp
    from workbench.tui.source import LiveBuildSource
    from workbench.tui.widgets.cache_panel import describe

    monkeypatch.setenv("WORKBENCH_TUI_STATE", str(tmp_path / "tui-state.json"))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nRUN echo one > /one\nRUN echo two > /two\nRUN echo three\n")
    source = LiveBuildSource(context=ctx, dockerfile=ctx / "Dockerfile", root=tmp_path / "root")

    async def run() -> None:
        app = WorkbenchApp(source, watch=False, devices=[], remember_theme=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.model.finished is not None)
            await pilot.press("5", "down", "down", "f9", "escape", "r")  # a breakpoint on line 3, rerun
            await until(pilot, lambda: app.pause is not None and app.model.paused is not None)
            assert app.pause is not None
            vid = app.pause.vertex.digest
            await pilot.pause(1.3)
            step = app.model.vertices[vid]
            assert step.state == PAUSED
            line = _dag_line(app, vid)
            assert "‖" in line and "▶" not in line and "paused 1." in line, line
            panel = describe(step)  # the cache panel's text
            assert "CACHE MISS[/] (paused)" in panel and f"why: {BREAKPOINT_RERUN}" in panel, panel

            await pilot.press("c")
            await until(pilot, lambda: app.model.finished is not None and app.generation == 2)
            await pilot.pause(0.1)
            assert step.state == DONE and step.duration is not None and step.duration < 1.0, step.duration
            line = _dag_line(app, vid)
            assert "paused 1." in line and "✔" in line, line
            after = next(v for v in app.model.vertices.values() if "RUN echo three" in v.name)
            assert after.miss_reason == BREAKPOINT_RERUN
            status = str(app.query_one("#status").render())
            assert "finished in" in status and "(paused 1." in status, status
            await pilot.press("q")

    asyncio.run(run())


def test_the_tui_model_keeps_a_step_aborted_at_its_pause_canceled() -> None:
    from workbench.tui.model import BuildModel

    name = "[2/2] RUN echo three"
    model = BuildModel()
    for ev in [VertexStarted("v1", name, ts=1.0), DebugPaused("v1", name, "breakpoint", ts=1.1),
               DebugResumed("v1", "abort", ts=5.0), VertexFailed("v1", name, error="canceled", ts=5.0),
               BuildFinished(error="build aborted in the debugger", step=name, ts=5.1)]:
        model.apply(ev)
    assert [v.state for v in model.vertices.values()] == [CANCELED]
