"""The seam between a DAP session and where its build runs: a `Target` builds a launch, holds it at stops and
looks inside the stopped step (lists its files, runs a command in it). `LocalTarget` is the local engine under
`workbench.debug.controller.Debugger`; `workbench.dap.remote_target.RemoteTarget` a BuildKit daemon's gateway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Protocol

from workbench.debug.controller import Breakpoint, Debugger
from workbench.solver.step import NO_LONGER_PAUSED

if TYPE_CHECKING:
    from workbench.dap.launch import Launch
    from workbench.debug.fsview import Entry, StepFiles
    from workbench.engine import Engine
    from workbench.llb.ops import Vertex
    from workbench.progress.events import EventBus

STALE = NO_LONGER_PAUSED

Output = Callable[[int, bytes], None]
"""(stream 1|2, chunk) of a captured command."""


class TargetError(Exception):
    """What a target cannot do here (one line; the request's error response)."""


class Stop(Protocol):
    """Where the build is held: before `vertex` (reason `breakpoint`/`step`) or after it failed (`error`)."""

    @property
    def vertex(self) -> Vertex: ...

    @property
    def reason(self) -> str: ...

    @property
    def error(self) -> str: ...


class Target(Protocol):
    breakpoints: list[Breakpoint]
    break_on_error: bool

    @property
    def current(self) -> Stop | None: ...

    def wait_for_pause(self, timeout: float | None = None) -> Stop | None: ...

    def build(self, launch: Launch, bus: EventBus) -> None:
        """Run the build to its end (BuildFailure when it fails), holding it at stops; in the build thread."""

    def build_ended(self) -> None: ...

    def resume(self, how: str) -> None:
        """`next`, `continue` or `abort` the current stop."""

    def step(self) -> None:
        """Stop before the next step that runs (stopOnEntry, pause); TargetError where it cannot."""

    def cancel(self) -> None:
        """Cancel the build (it ends with an error; stops are aborted by the session)."""

    def list_dir(self, stop: Stop, path: str) -> list[Entry]: ...

    def run_captured(self, stop: Stop, argv: list[str], on_output: Output, cancel: threading.Event) -> int: ...

    def exec(self, stop: Stop, argv: list[str], terminal: int) -> int:
        """`argv` on the terminal fd `terminal` in the stopped step; its exit code."""

    def kill_shells(self) -> None: ...


class LocalTarget:
    """The local engine: `Debugger` is the build's step hooks."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.debugger = Debugger(break_on_error=True)
        self.request: Any = None
        self._view: tuple[Stop, ExitStack, StepFiles] | None = None
        """The stopped step's files with its mounts set up, kept for the stop (listing is paged)."""
        self._view_lock = threading.Lock()

    @property
    def breakpoints(self) -> list[Breakpoint]:
        return self.debugger.breakpoints

    @breakpoints.setter
    def breakpoints(self, bps: list[Breakpoint]) -> None:
        self.debugger.breakpoints = bps

    @property
    def break_on_error(self) -> bool:
        return self.debugger.break_on_error

    @break_on_error.setter
    def break_on_error(self, on: bool) -> None:
        self.debugger.break_on_error = on

    @property
    def current(self) -> Stop | None:
        return self.debugger.current

    def wait_for_pause(self, timeout: float | None = None) -> Stop | None:
        return self.debugger.wait_for_pause(timeout)

    def build(self, launch: Launch, bus: EventBus) -> None:
        self.debugger.dockerfile = launch.dockerfile
        self.debugger.bus = bus
        self.request = launch.request(self.debugger)
        self.engine.build(self.request, bus)

    def build_ended(self) -> None:
        self.debugger.build_ended()

    def resume(self, how: str) -> None:
        self._drop_view()  # before the step runs with its own mounts
        self.debugger.resume(how)

    def step(self) -> None:
        self.debugger.resume_stepping()

    def cancel(self) -> None:
        cancel = getattr(self.request, "cancel", None)
        if cancel is not None:
            cancel.set()

    def _check(self, stop: Stop) -> None:
        if self.debugger.current is not stop:
            raise TargetError(STALE)

    def _drop_view(self) -> None:
        with self._view_lock:
            view, self._view = self._view, None
        if view is not None:
            view[1].close()

    def list_dir(self, stop: Stop, path: str) -> list[Entry]:
        from workbench.debug.fsview import entries, step_files

        with self._view_lock:
            self._check(stop)
            if self._view is None or self._view[0] is not stop:
                stack = ExitStack()
                try:
                    files = stack.enter_context(step_files(stop.step))  # type: ignore[attr-defined]
                except BaseException:
                    stack.close()
                    raise
                self._view = (stop, stack, files)
            return entries(self._view[2], path)

    def run_captured(self, stop: Stop, argv: list[str], on_output: Output, cancel: threading.Event) -> int:
        self._check(stop)
        self._drop_view()  # a locked cache mount it holds would keep the command waiting
        return self.debugger.run_captured(stop, argv, on_output, cancel)  # type: ignore[arg-type]

    def exec(self, stop: Stop, argv: list[str], terminal: int) -> int:
        self._check(stop)
        self._drop_view()
        return self.debugger.exec(stop, argv, terminal=terminal)  # type: ignore[arg-type]

    def kill_shells(self) -> None:
        self.debugger.kill_shells()
