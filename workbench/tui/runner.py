"""The app's builds, without Textual: one build thread at a time, its events queued for the UI, generations.

Each build the app asks for gets the next generation number. A new build cancels the running one (and lets a
paused step of it go) and starts once that one has wound down; events are queued with their generation, so a
canceled build's last words never reach the view. The runner tells the app through two callbacks, called from
any thread, which the app turns into messages: `events_ready` (once per batch, however many events arrived)
and `paused` (a build stopped at a step: its generation and the debugger's pause).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from workbench.debug.controller import Debugger, Pause
from workbench.progress.events import Event, VertexStarted
from workbench.tui.debug_session import DebugSession, PauseWatch
from workbench.tui.source import EventSource


class BuildRunner:
    """Runs `source`'s builds in threads, one at a time, each with a debugger of `debugging` when it can."""

    def __init__(self, source: EventSource, debugging: DebugSession, events_ready: Callable[[], object],
                 paused: Callable[[int, Pause], object]) -> None:
        self.source = source
        self.debugging = debugging
        self._events_ready = events_ready
        self._paused = paused
        self.generation = 0
        """The newest build's number (0: none yet)."""
        self.debugger: Debugger | None = None
        """The newest build's debugger (None: the source cannot debug)."""
        self.thread: threading.Thread | None = None
        """The newest build's thread."""
        self._cancel: threading.Event | None = None
        self._queue: list[tuple[int, Event]] = []
        self._queue_lock = threading.Lock()
        self._posted = False
        self.build_requested: dict[int, float] = {}
        """Build generation -> monotonic time it was asked for."""
        self.first_step_seen: dict[int, float] = {}
        """Build generation -> monotonic time its first VertexStarted was drained (for latency benches)."""
        self.first_op_seen: dict[int, float] = {}
        """The same for the first step that is not internal (the solver's first op that runs)."""

    def start(self, no_cache: bool = False) -> int:
        """Start the next build (canceling the running one first; nothing of it is cached half-done); its
        generation."""
        previous, previous_cancel = self.thread, self._cancel
        if previous_cancel is not None:
            previous_cancel.set()
            self.debugging.abort(self.debugger)  # a paused build lets go, so it can wind down
        self.generation += 1
        gen = self.generation
        self.build_requested[gen] = time.monotonic()
        cancel = threading.Event()
        dbg = self.debugging.new_debugger() if self.source.debuggable else None
        watch = PauseWatch(dbg, cancel, lambda pause: self._paused(gen, pause)) if dbg is not None else None

        def sink(ev: Event) -> None:
            with self._queue_lock:
                self._queue.append((gen, ev))
                notify = not self._posted
                self._posted = True
            if watch is not None:
                watch.note(ev)
            if notify:
                self._events_ready()

        def run() -> None:
            try:
                if previous is not None:
                    previous.join()
                if cancel.is_set():
                    return
                if dbg is not None:
                    self.source.run_debugged(sink, cancel, no_cache, dbg)
                else:
                    self.source.run(sink, cancel, no_cache)
            finally:
                if watch is not None:
                    watch.build_ended()

        self.thread = threading.Thread(target=run, name=f"build-{gen}", daemon=True)
        self._cancel = cancel
        self.debugger = dbg
        self.thread.start()
        return gen

    def cancel(self, wait: float | None = None) -> None:
        """Cancel the newest build, end its shells and let a paused step go; wait up to `wait` seconds for it
        to wind down (None: do not wait). Callable from any thread."""
        if self._cancel is not None:
            self._cancel.set()
        self.debugging.abort(self.debugger)
        if wait is not None and self.thread is not None:
            self.thread.join(wait)

    def is_current(self, generation: int, pause: Pause) -> bool:
        """Whether `pause` (of build `generation`) is the one the newest build is held at now."""
        return generation == self.generation and self.debugger is not None and self.debugger.current is pause

    def drain(self, apply: Callable[[Event], object], budget_s: float) -> None:
        """Apply the queued events of the newest build, in order, for about `budget_s` at most: past that, the
        rest stays queued and `events_ready` is called again (a flood: keys and repaints go first)."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
            self._posted = False
        gen = self.generation
        budget = time.perf_counter() + budget_s
        for n, (g, ev) in enumerate(batch):
            if n % 64 == 63 and time.perf_counter() > budget:
                with self._queue_lock:
                    self._queue[:0] = batch[n:]
                    self._posted = True
                self._events_ready()
                return
            if g != gen:
                continue  # a canceled build's last words
            if isinstance(ev, VertexStarted):
                if gen not in self.first_step_seen:
                    self.first_step_seen[gen] = time.monotonic()
                if gen not in self.first_op_seen and not ev.vertex.startswith("internal:"):
                    self.first_op_seen[gen] = time.monotonic()
            apply(ev)
