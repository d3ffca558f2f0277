"""The TUI's side of the debugger (workbench.debug): breakpoints kept across builds, one Debugger per build,
and a thread that waits for that build's pauses and hands them to the app. No Textual here."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.debug.controller import Breakpoint, Debugger, Pause
from workbench.debug.fsview import ViewError


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


def run_shell(dbg: Debugger, pause: Pause, argv: list[str]) -> int:
    """`dbg.exec(pause, argv)` on this process's terminal, from the main thread, returning the exit code.

    If the terminal goes away meanwhile (SIGHUP), the shell's container is killed and then this process ends as
    the hang-up would have ended it: runc would otherwise keep the container running after the app died.
    `exec` runs in a thread of its own while the main thread wakes every 0.1 s, so the handler runs whichever
    thread the kernel hands the signal to (a main thread blocked in waitpid would never see it).
    """
    outcome: list[int | BaseException] = []
    hung_up = threading.Event()

    def run() -> None:
        try:
            outcome.append(dbg.exec(pause, argv))
        except BaseException as e:  # handed to the caller below
            outcome.append(e)

    def hang_up(signum: int, frame: object) -> None:
        hung_up.set()
        dbg.kill_shells()

    previous = signal.signal(signal.SIGHUP, hang_up)
    try:
        shell = threading.Thread(target=run, name="debug-shell", daemon=True)
        shell.start()
        while shell.is_alive():
            shell.join(0.1)
            if hung_up.is_set():
                shell.join(5)  # the killed shell's container is deleted; nobody is left to wait longer for
                break
    finally:
        signal.signal(signal.SIGHUP, previous)
    if hung_up.is_set():
        DebugSession.abort(dbg)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGHUP)
    result = outcome[0] if outcome else RuntimeError("the shell did not end")
    if isinstance(result, BaseException):
        raise result
    return result


@contextmanager
def chain_view(root: Path, chain: list[str]) -> Iterator[Path]:
    """A read-only view of snapshot chain `chain` of build root `root`, through a snapshot manager of its own:
    it holds the root's build lock (a prune waits) and does not depend on any build's solver staying alive."""
    from workbench.debug.fsview import mounted_snapshots
    from workbench.snapshot.manager import SnapshotManager

    snapshots = SnapshotManager(root)
    try:
        missing = [s for s in chain if not snapshots.exists(s)]
        if missing:
            raise ViewError(f"snapshot {missing[0]} is gone from {root} (pruned?)")
        with mounted_snapshots(snapshots, chain) as view:
            yield view
    finally:
        snapshots.cleanup()


@contextmanager
def stored_view(root: Path, cache_key: str) -> Iterator[Path]:
    """A read-only view of a finished step's filesystem after its build: the chain the cache store keeps for
    the step's cache key."""
    from workbench.cache.store import CacheStore

    store = CacheStore(root / "cache.db")
    try:
        chain = store.lookup(cache_key)
    finally:
        store.close()
    if chain is None:
        raise ViewError(f"the step's result ({cache_key[:19]}) is no longer in the cache of {root}")
    with chain_view(root, chain) as view:
        yield view
