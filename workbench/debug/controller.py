"""Stopping a build at its steps: breakpoints, `next` / `continue` / `abort`, and pauses after a failure.

The solver calls `Debugger.before_step` before it runs a step and `Debugger.after_failure` while a failed
RUN's filesystem is still mounted; either may block that solver thread in a `Pause` until a front end (the
`workbench debug` REPL, the TUI) resumes it from another thread. One step is paused at a time; other steps
that run in parallel go on. A step with a breakpoint on it is run again rather than taken from the cache,
so that the pause can show it before it runs (the steps before it still come from the cache).
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.llb.ops import ExecOp, Vertex
from workbench.progress.events import DebugPaused, DebugResumed, DebugShell, EventBus

if TYPE_CHECKING:
    from workbench.executor.spec import ExecSpec
    from workbench.solver.solver import Result, Solver


class Aborted(Exception):
    """The user aborted the build at a pause."""


@dataclass(frozen=True)
class Breakpoint:
    """Stop before the step at a Dockerfile line, or before the first step of a stage."""

    line: int | None = None
    stage: str | None = None

    def matches(self, v: Vertex) -> bool:
        if self.line is not None:
            src = v.source
            return src is not None and src.start_line <= self.line <= src.end_line
        return self.stage is not None and stage_of(v) == self.stage and step_index(v) == 1

    def __str__(self) -> str:
        return f"line {self.line}" if self.line is not None else f"stage {self.stage}"


def stage_of(v: Vertex) -> str:
    """The stage a step belongs to, from its name (`[build 2/4] RUN …` → `build`; `[2/4] …` → the only one)."""
    name = v.name
    if not name.startswith("["):
        return ""
    inside = name[1:name.find("]")] if "]" in name else ""
    parts = inside.split()
    return parts[0] if len(parts) == 2 else ""


def step_index(v: Vertex) -> int:
    """The N of `[… N/M]` in a step's name (0 when it has none)."""
    name = v.name
    if "]" not in name:
        return 0
    counter = name[1:name.find("]")].split()[-1]
    head = counter.split("/")[0]
    return int(head) if head.isdigit() else 0


@dataclass
class Pause:
    """A step the build is stopped at, and what is needed to look inside it."""

    solver: Solver
    vertex: Vertex
    inputs: list[Result]
    reason: str  # "breakpoint", "step" or "error"
    error: str = ""
    rootfs: Path | None = None  # for an error pause: the failed step's filesystem, still mounted
    spec: ExecSpec | None = None  # for an error pause: what the failed step ran
    _resumed: threading.Event = field(default_factory=threading.Event)
    _how: str = ""
    _stack: ExitStack = field(default_factory=ExitStack)
    _workspace: Path | None = None

    def workspace(self) -> Path:
        """The filesystem shells and `ls` see at this pause: after a failure the failed step's own, else a
        throw-away writable layer over the step's input, kept for the whole pause (one shell's changes are
        seen by the next) and dropped when the build goes on."""
        if self.rootfs is not None:
            return self.rootfs
        if self._workspace is None:
            prepared = self._stack.enter_context(self.solver.snapshots.prepare())
            self._workspace = self._stack.enter_context(self.solver.snapshots.mount_writable(self.chain, prepared))
        return self._workspace

    def close(self) -> None:
        try:
            self._stack.close()
        except OSError:
            pass
        self._workspace = None

    @property
    def chain(self) -> list[str]:
        """The snapshots the step starts from (its first input)."""
        return self.inputs[0].chain if self.inputs else []

    def info(self) -> dict[str, Any]:
        """Where the build stopped and what the step sees: env, workdir, user, mounts."""
        op = self.vertex.op
        out: dict[str, Any] = {"step": self.vertex.name, "reason": self.reason}
        if self.vertex.source is not None:
            out["line"] = self.vertex.source.start_line
        if self.error:
            out["error"] = self.error
        if isinstance(op, ExecOp):
            out.update(command=list(op.args), env=list(op.env), workdir=op.cwd or "/", user=op.user or "root",
                       mounts=[f"type={m.type},target={m.target}" + (",readonly" if m.readonly else "")
                               for m in op.mounts])
        return out


class Debugger:
    """Breakpoints and pauses for one build at a time (a `reload` makes a new build with the same debugger)."""

    def __init__(self, bus: EventBus | None = None, break_on_error: bool = True, stop_at_start: bool = False) -> None:
        self.bus = bus
        self.break_on_error = break_on_error
        self.breakpoints: list[Breakpoint] = []
        self.one_shot: Breakpoint | None = None  # `reload`: stop once where the user was
        self._stepping = stop_at_start
        self._gate = threading.Lock()  # one pause at a time
        self._cond = threading.Condition()
        self._pause: Pause | None = None
        self._ended = False
        self._kills: list[Any] = []
        self._shell_lock = threading.Lock()

    # -- the solver's side --------------------------------------------------------------------------

    def wants_fresh_run(self, v: Vertex) -> bool:
        """A step with a breakpoint is run again (not taken from the cache), so it can be paused before."""
        return any(b.matches(v) for b in self.breakpoints) or (self.one_shot is not None and self.one_shot.matches(v))

    def before_step(self, solver: Solver, v: Vertex, inputs: list[Result]) -> None:
        """Called before `v` runs; blocks while the user looks around. Raises Aborted on `abort`."""
        if v.source is None:
            return
        if not (self._stepping or self.wants_fresh_run(v)):
            return
        with self._gate:
            if not (self._stepping or self.wants_fresh_run(v)):
                return
            reason = "step" if self._stepping and not self.wants_fresh_run(v) else "breakpoint"
            if self.one_shot is not None and self.one_shot.matches(v):
                self.one_shot = None
            self._wait(Pause(solver, v, inputs, reason))

    def after_failure(self, solver: Solver, v: Vertex, inputs: list[Result], error: str,
                      rootfs: Path | None = None, spec: ExecSpec | None = None) -> None:
        """Called when `v` failed, with its filesystem still mounted (for a RUN); blocks while paused."""
        if not self.break_on_error or solver.cancel.is_set():
            return
        with self._gate:
            try:
                self._wait(Pause(solver, v, inputs, "error", error=error, rootfs=rootfs, spec=spec))
            except Aborted:
                pass  # the step failed anyway: the build ends with its error

    def _wait(self, pause: Pause) -> None:
        v = pause.vertex
        if self.bus is not None:
            self.bus.emit(DebugPaused(v.digest, v.name, pause.reason, source=v.source, error=pause.error))
        with self._cond:
            self._pause = pause
            self._cond.notify_all()
        pause._resumed.wait()
        with self._shell_lock:
            pause.close()
        if self.bus is not None:
            self.bus.emit(DebugResumed(v.digest, pause._how))
        if pause._how == "abort":
            pause.solver.cancel.set()
            raise Aborted()

    # -- the front end's side -------------------------------------------------------------------------

    @property
    def current(self) -> Pause | None:
        return self._pause

    def wait_for_pause(self, timeout: float | None = None) -> Pause | None:
        """Block until the build pauses (returns the pause) or ends (returns None)."""
        with self._cond:
            self._cond.wait_for(lambda: self._pause is not None or self._ended, timeout)
            return self._pause

    def build_ended(self) -> None:
        """The front end says the build thread is done (so waiting for a pause ends)."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def restart(self) -> None:
        """Ready for a new build (`reload`)."""
        with self._cond:
            self._ended = False
            self._pause = None

    def resume_stepping(self) -> None:
        """Stop before the next step that runs (`next` before the build has started)."""
        self._stepping = True

    def resume(self, how: str) -> None:
        """`next` (run this step, stop before the next one), `continue` or `abort`."""
        if how not in ("next", "continue", "abort"):
            raise ValueError(f"unknown way to resume: {how}")
        pause = self._pause
        if pause is None:
            return
        self._stepping = how == "next"
        pause._how = how
        with self._cond:
            self._pause = None
        pause._resumed.set()

    def kill_shells(self) -> None:
        """End every shell started with `exec` that is still running (abort, quit); callable from any thread."""
        for kill in list(self._kills):
            kill()

    def exec(self, pause: Pause, argv: list[str]) -> int:
        """Run `argv` interactively in a container that sees what the paused step sees; return its exit code.

        The container gets a throw-away writable layer over the step's input (or, after a failure, the
        failed step's own filesystem, which is discarded with the failed step): nothing done here reaches the
        cache or the image. Mounts are those of the step; cache mounts are read-only here for the same reason.
        """
        from workbench.executor.runc import ExecError, run_interactive
        from workbench.executor.spec import DEFAULT_PATH, ExecSpec

        solver, v = pause.solver, pause.vertex
        op = v.op
        with self._shell_lock, ExitStack() as stack:
            rootfs = pause.workspace()
            if pause.rootfs is not None and pause.spec is not None:
                base = pause.spec
                spec = ExecSpec(args=argv, env=base.env, cwd=base.cwd, user=base.user, network=base.network,
                                mounts=base.mounts, security=base.security)
            else:
                if isinstance(op, ExecOp):
                    from workbench.solver import mounts
                    from workbench.solver.runners import merge_env

                    extra = mounts.prepare(solver, v, pause.inputs, stack)
                    cache_dir = solver.root / "cachemounts"
                    spec = ExecSpec(args=argv, env=merge_env(list(op.env), extra.env), cwd=op.cwd or "/",
                                    user=op.user, network=op.network, security=op.security,
                                    mounts=[_read_only_cache(m, cache_dir) for m in extra.mounts])
                else:
                    spec = ExecSpec(args=argv, env=[DEFAULT_PATH])
            if self.bus is not None:
                self.bus.emit(DebugShell(v.digest, tuple(argv)))

            try:
                code = run_interactive(rootfs, spec, solver.snapshots.tmp, on_start=self._kills.append)
            except ExecError as e:
                raise RuntimeError(str(e)) from None
            finally:
                self._kills.clear()
            if self.bus is not None:
                self.bus.emit(DebugShell(v.digest, tuple(argv), exit_code=code))
            return code


def _read_only_cache(m: Any, cache_dir: Path) -> Any:
    """A cache mount as the debug shell sees it: read-only, so a shell cannot change later builds."""
    from dataclasses import replace

    if m.type == "bind" and "ro" not in m.options and Path(m.source).is_relative_to(cache_dir):
        return replace(m, options=[*m.options, "ro"])
    return m
