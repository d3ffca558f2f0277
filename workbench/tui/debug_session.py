"""The TUI's side of the debugger (workbench.debug): breakpoints kept across builds, one Debugger per build,
and a thread that waits for that build's pauses and hands them to the app. No Textual here."""

from __future__ import annotations

import threading
from collections.abc import Callable

from workbench.debug.controller import Breakpoint, Debugger, Pause


class DebugSession:
    """Breakpoints (Dockerfile lines) and break-on-error for every build the app starts."""

    def __init__(self, break_on_error: bool = True) -> None:
        self.break_on_error = break_on_error
        self.breakpoints: list[Breakpoint] = []
        self.debugger: Debugger | None = None
        """The newest build's debugger."""

    def new_debugger(self) -> Debugger:
        """A debugger for the next build; it shares the breakpoint list, so toggles reach a running build."""
        dbg = Debugger(break_on_error=self.break_on_error)
        dbg.breakpoints = self.breakpoints
        self.debugger = dbg
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

    @staticmethod
    def watch(dbg: Debugger, cancel: threading.Event, done: threading.Event,
              on_pause: Callable[[Pause], object]) -> threading.Thread:
        """Start a thread that calls `on_pause` once per pause of `dbg`'s build (from that thread) and aborts
        any pause once `cancel` is set (a rerun, quit); it ends when `done` is set (the build thread ended)."""

        def run() -> None:
            shown: Pause | None = None
            while True:
                pause = dbg.wait_for_pause(0.2)
                if pause is None:
                    if done.is_set():
                        return
                    continue
                if cancel.is_set():
                    DebugSession.abort(dbg)
                    continue
                if pause is not shown:
                    shown = pause
                    on_pause(pause)
                cancel.wait(0.05)  # paused: wait_for_pause returns at once, so do not spin

        thread = threading.Thread(target=run, name="debug-watch", daemon=True)
        thread.start()
        return thread
