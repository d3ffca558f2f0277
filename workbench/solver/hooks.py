"""Where observers plug into a solve: before a step runs, after it, and when it fails.

Like resolvelib's `BaseReporter`, `StepHooks` is a base class whose methods do nothing: a debugger (or a
tracer, a profiler) overrides the ones it needs and is handed to the solver. Each call gets the step's
`StepContext`, from which the hook can look inside the step (its workspace) or start a container that
sees what the step sees, without knowing the solver. A hook runs on the thread that runs the step and may
block it (a debugger's pause); other steps go on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from workbench.executor.spec import ExecSpec
    from workbench.llb.ops import Vertex
    from workbench.solver.types import Result
    from workbench.worker import Worker


class Aborted(Exception):
    """Raised by a hook to stop the build at a step (the user aborted it at a pause)."""


class StepContext(Protocol):
    """One step as a hook sees it."""

    vertex: Vertex
    inputs: list[Result]  # the results of the step's inputs, in order
    results: Mapping[str, Result]  # every result of the solve so far, by vertex digest
    worker: Worker
    cancel: threading.Event  # set to cancel the whole build
    error: str  # why the step failed ("" before it ran)

    @property
    def chain(self) -> list[str]:
        """The snapshots the step starts from (its first input)."""
        ...

    def workspace(self) -> Path:
        """The step's filesystem: after a failure the failed step's own (still mounted), else a throw-away
        writable layer over its input, kept until `release` (one look's changes are seen by the next)."""
        ...

    def container_spec(self, argv: list[str]) -> AbstractContextManager[ExecSpec]:
        """The spec of a container running `argv` as the step runs its process: its env, user, workdir,
        network and mounts (set up for the `with` block), its devices."""
        ...

    def release(self) -> None:
        """Drop the workspace (if one was made)."""
        ...


class StepHooks:
    """The solver's observer; every method here does nothing."""

    def wants_fresh_run(self, vertex: Vertex) -> bool:
        """Whether `vertex` must run even though its result is cached (so that `before_step` sees it)."""
        return False

    def held(self, vertex: Vertex | None = None) -> float:
        """Seconds the hooks have held `vertex`'s step so far (a debugger's pause, or a wait behind one); with
        no vertex, the seconds the build stood at a pause. Held time is not run time: durations leave it out."""
        return 0.0

    def before_step(self, step: StepContext) -> None:
        """Called before the step runs (after its inputs are done); may block; raise Aborted to stop the build."""

    def after_step(self, step: StepContext, result: Result) -> None:
        """Called once the step ran and its result is recorded."""

    def on_failure(self, step: StepContext) -> None:
        """Called when a RUN failed, while its filesystem is still mounted; may block."""


class RunClock:
    """A build's or step's run time: the wall-clock seconds since it was made, less the time `hooks` held it."""

    def __init__(self, hooks: StepHooks | None, vertex: Vertex | None = None) -> None:
        self._hooks, self._vertex = hooks, vertex
        self.start = time.time()
        self._held0 = hooks.held(vertex) if hooks is not None else 0.0

    def held(self) -> float:
        """Seconds held since the clock started."""
        return self._hooks.held(self._vertex) - self._held0 if self._hooks is not None else 0.0

    def seconds(self) -> float:
        """Seconds run since the clock started, held time left out."""
        return time.time() - self.start - self.held()
