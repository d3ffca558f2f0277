"""Where the TUI's events come from: a live build, or a fixed list of events replayed (tests, later sessions)."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.progress.events import BuildFinished, Event, EventBus

if TYPE_CHECKING:
    from workbench.debug.controller import Debugger
    from workbench.engine import Engine

Sink = Callable[[Event], None]


class EventSource(ABC):
    """Feeds one build's events to a sink; `run` blocks, the app calls it from a worker thread."""

    rerunnable: bool = False
    """Whether `run` can be called again for a new build (a live build can, a recording cannot)."""
    dockerfile: Path | None = None
    """The Dockerfile shown in the editor (None: no editor)."""
    context: Path | None = None
    """The directory a watcher watches (None: nothing to watch)."""
    root: Path | None = None
    """The build root, where snapshots can be measured (None: unknown)."""

    debuggable: bool = False
    """Whether builds can stop at breakpoints (`run_debugged` takes a workbench.debug Debugger)."""
    remote: str = ""
    """The BuildKit daemon the builds run on, as the UI names it ("": this machine's engine, whose results
    can be opened, predicted and debugged)."""

    @abstractmethod
    def run(self, sink: Sink, cancel: threading.Event, no_cache: bool = False) -> None:
        """Emit every event of one build to `sink`, ending with BuildFinished; stop early when `cancel` is set."""

    def run_debugged(self, sink: Sink, cancel: threading.Event, no_cache: bool, debugger: Debugger | None) -> None:
        """`run` with a debugger that may pause the build's steps (sources that cannot debug just run)."""
        self.run(sink, cancel, no_cache)

    def result_engine(self) -> Engine:
        """The engine that opens views of this source's results (a recording's root is on this machine)."""
        from workbench.engine import LocalEngine

        return LocalEngine()


@dataclass
class LiveBuildSource(EventSource):
    """Runs real builds with an engine (workbench.engine; default: the local one, builds recorded)."""

    context: Path
    dockerfile: Path
    root: Path
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    session: object | None = None
    cdi_spec_dirs: list[str] = field(default_factory=list)
    config: Path | None = None
    rerunnable: bool = True
    debuggable: bool = True
    engine: Engine | None = None
    remote: str = ""

    def result_engine(self) -> Engine:
        return self.engine if self.engine is not None else super().result_engine()

    def run(self, sink: Sink, cancel: threading.Event, no_cache: bool = False) -> None:
        self.run_debugged(sink, cancel, no_cache, None)

    def run_debugged(self, sink: Sink, cancel: threading.Event, no_cache: bool, debugger: Debugger | None) -> None:
        from workbench.history.recorder import recording_engine
        from workbench.request import BuildFailure, BuildRequest
        from workbench.solver.session import Session

        bus = EventBus()
        bus.subscribe(sink)
        session = self.session if isinstance(self.session, Session) else Session()
        request = BuildRequest(context=self.context, dockerfile=self.dockerfile, build_args=dict(self.build_args),
                               target=self.target, no_cache=no_cache, root=self.root, session=session,
                               cancel=cancel, cdi_spec_dirs=list(self.cdi_spec_dirs), config=self.config,
                               debugger=debugger)
        if debugger is not None:
            debugger.bus = bus  # its pauses and shells go on the stream with the build's events
            debugger.dockerfile = self.dockerfile  # where a breakpoint on a FROM without a step stops
        ended: list[Event] = []
        bus.subscribe(lambda ev: ended.append(ev) if isinstance(ev, BuildFinished) else None)
        try:
            (self.engine or recording_engine()).build(request, bus)
        except BuildFailure as e:
            if not ended:  # refused before the build began (an unusable root): say it, or it never ends
                sink(BuildFinished(error=e.message, source=e.location, step=e.step))
        except Exception as e:  # a crash in the engine ends this build, not the app
            sink(BuildFinished(error=f"{type(e).__name__}: {e}"))


@dataclass
class ReplaySource(EventSource):
    """Replays recorded events; `speed` 0 emits them all at once, 1.0 at their recorded pace."""

    events: Sequence[Event]
    speed: float = 0.0
    dockerfile: Path | None = None
    rerunnable: bool = True

    def run(self, sink: Sink, cancel: threading.Event, no_cache: bool = False) -> None:
        previous: float | None = None
        for ev in self.events:
            if cancel.is_set():
                sink(BuildFinished(error="canceled"))
                return
            if self.speed and previous is not None and ev.ts > previous:
                time.sleep((ev.ts - previous) / self.speed)
            previous = ev.ts
            sink(ev)


def remote_note(daemon: str) -> str:
    """What the UI says once when the builds run on a remote BuildKit: what stays on this machine's engine."""
    return (f"building on {daemon}: the graph, logs and CACHED come from the daemon; breakpoints, shells, the "
            "file browser, layers and predictions need the local engine's snapshots and are not available on a "
            "remote BuildKit (`workbench debug --addr` opens shells through the daemon)")


def retimed(events: Sequence[Event], start: float) -> list[Event]:
    """The same events with timestamps shifted so the first is at `start` (fixed times for snapshots)."""
    if not events:
        return []
    offset = start - events[0].ts
    return [replace(ev, ts=ev.ts + offset) for ev in events]
