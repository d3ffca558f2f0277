"""The TUI's side of the debugger (workbench.debug): breakpoints kept across builds, one Debugger per build,
a watch that hands each pause the build announces (DebugPaused) to the app, and shells on the terminal (in a
paused step, or in a finished step's filesystem after the build) that a hang-up cannot leave behind. No
Textual here."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.debug.controller import Breakpoint, Debugger, Pause
from workbench.progress.events import DebugPaused, Event
from workbench.results import ViewError

if TYPE_CHECKING:
    from workbench.engine import Engine
    from workbench.results import ShellConfig


class DebugSession:
    """Breakpoints (Dockerfile lines) and break-on-error for every build the app starts."""

    def __init__(self, break_on_error: bool = True) -> None:
        self.break_on_error = break_on_error
        self.breakpoints: list[Breakpoint] = []

    def new_debugger(self) -> Debugger:
        """A debugger for the next build; it shares the breakpoint list, so toggles reach a running build."""
        dbg = Debugger(break_on_error=self.break_on_error)
        dbg.breakpoints = self.breakpoints
        return dbg

    def toggle(self, line: int) -> bool:
        """Set or clear the breakpoint at a (1-based) Dockerfile line; True when it is now set."""
        bp = Breakpoint(line=line)
        if bp in self.breakpoints:
            self.breakpoints.remove(bp)
            return False
        self.breakpoints.append(bp)
        return True

    def lines(self) -> set[int]:
        return {bp.line for bp in self.breakpoints if bp.line is not None}

    @staticmethod
    def abort(dbg: Debugger | None) -> None:
        """End a build's shells and let its paused step go with `abort` (callable from any thread)."""
        if dbg is None:
            return
        dbg.kill_shells()
        if dbg.current is not None:
            dbg.resume("abort")


class PauseWatch:
    """Hands each pause of one build to `on_pause`, once, from a thread of its own, as the build announces them.

    `note` sees the build's events (any thread): a DebugPaused wakes the thread, which takes the pause from
    the debugger once it holds it (the event goes out just before) — or lets it go with `abort` when the
    build is already canceled (a rerun, quit). `build_ended` ends the thread.
    """

    def __init__(self, dbg: Debugger, cancel: threading.Event, on_pause: Callable[[Pause], object]) -> None:
        self._dbg = dbg
        self._cancel = cancel
        self._on_pause = on_pause
        self._announced: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="debug-watch", daemon=True)
        self.thread.start()

    def note(self, event: Event) -> None:
        if isinstance(event, DebugPaused):
            self._announced.put(True)

    def build_ended(self) -> None:
        """The build thread is done: its debugger is told, and the watch ends."""
        self._dbg.build_ended()
        self._announced.put(False)

    def _run(self) -> None:
        shown: Pause | None = None
        while self._announced.get():
            pause = self._dbg.wait_for_pause()  # at once, or as soon as the debugger holds the announced pause
            if pause is None:
                return  # the build ended
            if self._cancel.is_set():
                DebugSession.abort(self._dbg)
            elif pause is not shown:
                shown = pause
                self._on_pause(pause)


def run_shell(dbg: Debugger, pause: Pause, argv: list[str]) -> int:
    """`dbg.exec(pause, argv)` on this process's terminal, from the main thread, returning the exit code.

    If the terminal goes away meanwhile (SIGHUP), the shell's container is killed, the build is canceled and
    let go of its pause, and once it has wound down (its mounts undone: the pause's workspace, the shell's)
    this process ends as the hang-up would have ended it. Neither runc nor the kernel undoes any of that for
    a process that just dies; the reaper (workbench.reaper) would, but only after the fact.
    """
    return _hang_up_safe(lambda: dbg.exec(pause, argv), dbg.kill_shells,
                         lambda: end_build(dbg, pause, _HANG_UP_WAIT_S))


def run_step_shell(engine: Engine, root: Path, cache_key: str, argv: list[str], config: ShellConfig) -> int:
    """`argv` on this process's terminal in a finished step's filesystem (its result by cache key, under a
    throw-away writable layer), from the main thread, returning the exit code; a hang-up kills the container
    and, once its layer is unmounted, ends this process as it would have. RuntimeError when it cannot start."""
    kills: list[Callable[[], None]] = []

    def run() -> int:
        try:
            return engine.step_shell(root, cache_key, argv, config, on_start=kills.append)
        except ViewError as e:
            raise RuntimeError(str(e)) from None

    def kill_all() -> None:
        for kill in list(kills):
            kill()

    return _hang_up_safe(run, kill_all)


def _hang_up_safe(run: Callable[[], int], kill: Callable[[], None],
                  after_hang_up: Callable[[], object] | None = None) -> int:
    """`run()` (a process on this terminal) in a thread of its own while the main thread wakes every 0.1 s,
    so a SIGHUP handler runs whichever thread the kernel hands the signal to (a main thread blocked in
    waitpid would never see it): on a hang-up `kill()` ends the process, `run` is given time to undo its
    mounts, `after_hang_up()` winds down the rest, and this process ends as the hang-up would have ended it."""
    outcome: list[int | BaseException] = []
    hung_up = threading.Event()

    def target() -> None:
        try:
            outcome.append(run())
        except BaseException as e:  # handed to the caller below
            outcome.append(e)

    def hang_up(signum: int, frame: object) -> None:
        hung_up.set()
        kill()

    previous = signal.signal(signal.SIGHUP, hang_up)
    try:
        shell = threading.Thread(target=target, name="debug-shell", daemon=True)
        shell.start()
        while shell.is_alive():
            shell.join(0.1)
            if hung_up.is_set():
                shell.join(_HANG_UP_WAIT_S)  # the killed shell's container is deleted, its mounts undone
                break
        if hung_up.is_set() and after_hang_up is not None:
            after_hang_up()
    finally:
        signal.signal(signal.SIGHUP, previous)
    if hung_up.is_set():
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGHUP)
    result = outcome[0] if outcome else RuntimeError("the shell did not end")
    if isinstance(result, BaseException):
        raise result
    return result


_HANG_UP_WAIT_S = 10.0


def end_build(dbg: Debugger, pause: Pause, timeout: float) -> bool:
    """Cancel the build `pause` belongs to, let it go of every pause with `abort` (a step running beside it
    may still stop at a breakpoint) and wait up to `timeout` seconds for its thread to end; whether it did."""
    pause.step.cancel.set()
    deadline = time.monotonic() + timeout
    while not dbg.ended:
        DebugSession.abort(dbg)
        if time.monotonic() > deadline:
            return False
        dbg.wait_for_pause(0.1)
    return True
