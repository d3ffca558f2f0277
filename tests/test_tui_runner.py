"""The TUI's build runner without Textual: batches, generations, the drain budget, and pauses handed over as the
build announces them (DebugPaused), including a pause that comes after its build was canceled."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.tui_events import sample_events
from workbench.debug.controller import Breakpoint, Debugger, Pause
from workbench.llb.ops import ExecOp, Vertex
from workbench.progress.events import BuildFinished, DebugPaused, DebugResumed, Event, EventBus, SourceLocation
from workbench.tui.debug_session import DebugSession
from workbench.tui.runner import BuildRunner
from workbench.tui.source import EventSource, ReplaySource, Sink

WAIT_S = 10


class Recorder:
    """The app's side: counts `events_ready` calls and collects pauses."""

    def __init__(self) -> None:
        self.ready = threading.Semaphore(0)
        self.notices = 0
        self.pauses: list[tuple[int, Pause]] = []
        self.paused = threading.Event()

    def events_ready(self) -> None:
        self.notices += 1
        self.ready.release()

    def on_pause(self, gen: int, pause: Pause) -> None:
        self.pauses.append((gen, pause))
        self.paused.set()


def _runner(source: EventSource, rec: Recorder, debugging: DebugSession | None = None) -> BuildRunner:
    return BuildRunner(source, debugging or DebugSession(), events_ready=rec.events_ready, paused=rec.on_pause)


def test_a_build_is_queued_in_batches_and_drained_in_order() -> None:
    events = sample_events()
    rec = Recorder()
    runner = _runner(ReplaySource(events), rec)
    assert runner.start() == 1
    assert runner.thread is not None
    runner.thread.join(WAIT_S)
    assert rec.ready.acquire(timeout=WAIT_S)
    assert rec.notices == 1  # one notice for the whole batch, however many events
    seen: list[Event] = []
    runner.drain(seen.append, budget_s=1.0)
    assert seen == list(events)
    assert 1 in runner.first_step_seen and 1 in runner.first_op_seen and 1 in runner.build_requested


def test_a_canceled_builds_last_words_are_dropped() -> None:
    class Slow(EventSource):
        rerunnable = True
        runs = 0

        def run(self, sink: Sink, cancel: threading.Event, no_cache: bool = False) -> None:
            self.runs += 1
            sink(BuildFinished(error=f"build {self.runs} started"))
            if self.runs == 1:
                cancel.wait(WAIT_S)
                sink(BuildFinished(error="build 1 last words"))

    rec = Recorder()
    runner = _runner(Slow(), rec)
    runner.start()
    first = runner.thread
    seen: list[str] = []

    def note(e: Event) -> None:
        assert isinstance(e, BuildFinished)
        seen.append(e.error)

    assert rec.ready.acquire(timeout=WAIT_S)
    runner.drain(note, budget_s=1.0)
    assert runner.start() == 2  # cancels build 1; build 2 runs once build 1 has wound down
    assert first is not None and runner.thread is not first
    first.join(WAIT_S)
    assert not first.is_alive()
    while "build 2 started" not in seen:
        assert rec.ready.acquire(timeout=WAIT_S)
        runner.drain(note, budget_s=1.0)
    assert seen == ["build 1 started", "build 2 started"]
    runner.cancel(wait=WAIT_S)
    assert runner.thread is not None and not runner.thread.is_alive()


def test_a_flood_is_drained_within_the_budget_and_the_rest_comes_next() -> None:
    events = sample_events() * 40
    rec = Recorder()
    runner = _runner(ReplaySource(events), rec)
    runner.start()
    assert runner.thread is not None
    runner.thread.join(WAIT_S)
    assert rec.ready.acquire(timeout=WAIT_S)
    seen: list[Event] = []
    runner.drain(seen.append, budget_s=0.0)  # over budget at once: 63 events, then the rest is announced again
    assert len(seen) == 63 and rec.notices == 2
    assert rec.ready.acquire(timeout=WAIT_S)
    while len(seen) < len(events):
        runner.drain(seen.append, budget_s=1.0)
    assert seen == list(events)


@dataclass
class FakeStep:
    """A step as the debugger's hooks see it (workbench.solver.hooks.StepContext), without a solver."""

    vertex: Vertex
    cancel: threading.Event
    inputs: list[object] = field(default_factory=list)
    results: dict[str, object] = field(default_factory=dict)
    error: str = ""

    @property
    def chain(self) -> list[str]:
        return []

    def workspace(self) -> Path:
        raise NotImplementedError

    def release(self) -> None:
        pass


class PausingSource(EventSource):
    """A debuggable source whose one step is at Dockerfile line 2."""

    debuggable = True
    rerunnable = True

    def __init__(self) -> None:
        self.vertex = Vertex(ExecOp(args=("true",), env=()), name="[2/2] RUN true",
                             source=SourceLocation("Dockerfile", 2, 2))
        self.aborted = threading.Event()

    def run(self, sink: Sink, cancel: threading.Event, no_cache: bool = False) -> None:
        sink(BuildFinished())

    def run_debugged(self, sink: Sink, cancel: threading.Event, no_cache: bool, debugger: Debugger | None) -> None:
        assert debugger is not None
        bus = EventBus()
        bus.subscribe(sink)
        debugger.bus = bus
        try:
            debugger.before_step(FakeStep(self.vertex, cancel))  # type: ignore[arg-type]
        except Exception:
            self.aborted.set()
            bus.emit(BuildFinished(error="canceled"))
            return
        bus.emit(BuildFinished())


def test_a_pause_is_handed_over_when_the_build_announces_it() -> None:
    debugging = DebugSession()
    debugging.toggle(2)
    rec = Recorder()
    source = PausingSource()
    runner = _runner(source, rec, debugging)
    gen = runner.start()
    assert rec.paused.wait(WAIT_S)
    [(paused_gen, pause)] = rec.pauses
    assert paused_gen == gen and runner.is_current(gen, pause) and pause.reason == "breakpoint"
    assert runner.debugger is not None
    runner.debugger.resume("continue")
    assert runner.thread is not None
    runner.thread.join(WAIT_S)
    assert not source.aborted.is_set()
    seen: list[Event] = []
    runner.drain(seen.append, budget_s=1.0)
    assert [type(e) for e in seen] == [DebugPaused, DebugResumed, BuildFinished]
    assert not runner.is_current(gen, pause) and len(rec.pauses) == 1


def test_a_pause_after_its_build_was_canceled_is_let_go() -> None:
    debugging = DebugSession()
    debugging.breakpoints.append(Breakpoint(line=2))
    rec = Recorder()
    source = PausingSource()
    runner = _runner(source, rec, debugging)
    entered, gate = threading.Event(), threading.Event()
    run_debugged = source.run_debugged

    def late(sink: Sink, cancel: threading.Event, no_cache: bool, debugger: Debugger | None) -> None:
        entered.set()
        gate.wait(WAIT_S)  # the build is canceled before its step reaches the breakpoint
        run_debugged(sink, cancel, no_cache, debugger)

    source.run_debugged = late  # type: ignore[method-assign]
    runner.start()
    assert entered.wait(WAIT_S)
    runner.cancel()
    gate.set()
    assert runner.thread is not None
    runner.thread.join(WAIT_S)
    assert not runner.thread.is_alive() and source.aborted.is_set() and rec.pauses == []
