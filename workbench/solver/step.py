"""One step as its hooks see it (the solver's `StepContext`), and the container spec of an exec step.

`exec_spec` is the one place that turns an ExecOp into what runc runs: the step itself (runners) and a
debugger's shell in it (`Step.container_spec`) both get it from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.executor.spec import DEFAULT_PATH, ExecSpec
from workbench.llb.ops import ExecOp, ImageSource, Vertex
from workbench.solver import mounts

if TYPE_CHECKING:
    from workbench.solver.job import SolveJob
    from workbench.solver.types import Result
    from workbench.worker import Worker

NO_LONGER_PAUSED = "the build went on: this step is no longer paused"
"""Why nothing runs in a paused step once the build went on (the debugger and the DAP server say it too)."""


class NoFilesystem(RuntimeError):
    """A container cannot be started at this step: it has no filesystem yet (a FROM before it ran)."""


def merge_env(env: list[str], extra: list[str]) -> list[str]:
    """`env` with `extra` entries (secret env vars, SSH_AUTH_SOCK) added, replacing same-named ones."""
    names = {e.split("=", 1)[0] for e in extra}
    return [e for e in env if e.split("=", 1)[0] not in names] + extra


def exec_spec(worker: Worker, job: SolveJob, v: Vertex, inputs: list[Result], stack: ExitStack,
              argv: list[str] | None = None) -> ExecSpec:
    """What `v` (an ExecOp) runs, or `argv` run the same way: env, workdir, user, network, security, its
    devices, and its mounts, set up on `stack` (undone when it closes)."""
    op = v.op
    assert isinstance(op, ExecOp)
    extra = mounts.prepare(worker, job, v, inputs, stack)
    spec = ExecSpec(args=list(op.args if argv is None else argv), env=merge_env(list(op.env), extra.env),
                    cwd=op.cwd or "/", user=op.user, network=op.network, mounts=extra.mounts, security=op.security)
    if op.devices and job.devices is not None and (inject := job.devices.spec_edit(v)) is not None:
        spec.spec_edits.append(inject)  # the step's CDI devices (workbench.cdi)
    return spec


class Step:
    """A step of a solve, handed to its hooks (workbench.solver.hooks.StepContext)."""

    def __init__(self, worker: Worker, job: SolveJob, vertex: Vertex, inputs: list[Result], error: str = "",
                 rootfs: Path | None = None, spec: ExecSpec | None = None) -> None:
        self.worker = worker
        self.vertex = vertex
        self.inputs = inputs
        self.error = error
        self.cancel = job.cancel
        self.results: Mapping[str, Result] = job.results
        self._job = job
        self._rootfs = rootfs  # after a failure: the failed step's filesystem, still mounted
        self._spec = spec  # after a failure: what the failed step ran
        self._stack = ExitStack()
        self._workspace: Path | None = None
        self._released = False

    @property
    def chain(self) -> list[str]:
        return self.inputs[0].chain if self.inputs else []

    def workspace(self) -> Path:
        if self._rootfs is not None:
            return self._rootfs
        if self._workspace is None:
            if self._released:  # the pause is over: never a fresh mount nobody would release
                raise NoFilesystem(NO_LONGER_PAUSED)
            snapshots = self.worker.snapshots
            prepared = self._stack.enter_context(snapshots.prepare())
            self._workspace = self._stack.enter_context(snapshots.mount_writable(self.chain, prepared))
        return self._workspace

    @contextmanager
    def container_spec(self, argv: list[str]) -> Iterator[ExecSpec]:
        """Raises NoFilesystem before a FROM has run: there is nothing yet to start a process in."""
        if self._spec is not None:  # the failed step's mounts are still set up
            yield replace(self._spec, args=list(argv))
        elif isinstance(self.vertex.op, ExecOp):
            with ExitStack() as stack:
                yield exec_spec(self.worker, self._job, self.vertex, self.inputs, stack, argv)
        elif isinstance(self.vertex.op, ImageSource):
            program = argv[0] if argv else "a command"
            raise NoFilesystem(f"this FROM has not run yet, so there is no filesystem to run {program} in: "
                               "step over it (next) to pull the image and stop at the step after it")
        elif (config := self.vertex.config) is not None:  # the stage's env, workdir and user at this step
            yield ExecSpec(args=list(argv), env=list(config.env) or [DEFAULT_PATH], cwd=config.workdir or "/",
                           user=config.user)
        else:
            yield ExecSpec(args=list(argv), env=[DEFAULT_PATH])

    def release(self) -> None:
        try:
            self._stack.close()
        except OSError:
            pass
        self._workspace = None
        self._released = True
