"""Stopping a build at its steps: breakpoints, `next` / `continue` / `abort`, and pauses after a failure.

`Debugger` is the solver's `StepHooks` (workbench.solver.hooks): `before_step` is called before a step runs
and `on_failure` while a failed RUN's filesystem is still mounted; either may block that solver thread in
a `Pause` until a front end (the `workbench debug` REPL, the TUI) resumes it from another thread. One step
is paused at a time; other steps that run in parallel go on. A step with a breakpoint on it is run again
rather than taken from the cache, so that the pause can show it before it runs (the steps before it still
come from the cache).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.llb.ops import ExecOp, Vertex, config_at
from workbench.progress.events import DebugHeld, DebugPaused, DebugResumed, DebugShell, EventBus
from workbench.solver.hooks import Aborted, StepContext, StepHooks
from workbench.solver.step import NO_LONGER_PAUSED

if TYPE_CHECKING:
    from workbench.executor.spec import ExecSpec, Mount
    from workbench.solver.types import Result

__all__ = ["Aborted", "Breakpoint", "Debugger", "Pause"]



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
    """A step the build is stopped at; its `step` is what is needed to look inside it."""

    step: StepContext
    reason: str  # "breakpoint", "step" or "error"
    _resumed: threading.Event = field(default_factory=threading.Event)
    _how: str = ""
    closed: bool = False

    @property
    def vertex(self) -> Vertex:
        return self.step.vertex

    @property
    def inputs(self) -> list[Result]:
        return self.step.inputs

    @property
    def error(self) -> str:
        return self.step.error

    @property
    def chain(self) -> list[str]:
        """The snapshots the step starts from (its first input)."""
        return self.step.chain

    def workspace(self) -> Path:
        """The filesystem shells and `ls` see at this pause: after a failure the failed step's own, else a
        throw-away writable layer over the step's input, kept for the whole pause (one shell's changes are
        seen by the next) and dropped when the build goes on."""
        return self.step.workspace()

    def close(self) -> None:
        self.closed = True
        self.step.release()

    def info(self) -> dict[str, Any]:
        """Where the build stopped and what the step sees: env, workdir, user, mounts."""
        op = self.vertex.op
        out: dict[str, Any] = {"step": self.vertex.name, "reason": self.reason}
        if self.vertex.source is not None:
            out["line"] = self.vertex.source.start_line
        if self.error:
            out["error"] = self.error
        if isinstance(op, ExecOp):
            out["command"] = list(op.args)
        config = config_at(self.vertex)  # a COPY, a WORKDIR…: the stage's config as it stands at this step
        if config is not None:
            out.update(env=list(config.env), workdir=config.workdir or "/", user=config.user or "root",
                       mounts=[f"type={m.type},target={m.target}" + (",readonly" if m.readonly else "")
                               for m in op.mounts] if isinstance(op, ExecOp) else [])
        return out


class Debugger(StepHooks):
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
        self._held: dict[str, float] = {}  # seconds each step was held, by vertex digest
        self._paused = 0.0  # seconds the build stood at a pause
        self._held_lock = threading.Lock()
        self.dockerfile: Path | None = None
        """The Dockerfile built: a breakpoint on a FROM with no step of its own stops at its stage's first."""
        self._moved: dict[int, int] | None = None  # FROM line -> its stage's first step line, read once a build

    # -- the solver's side --------------------------------------------------------------------------

    def wants_fresh_run(self, v: Vertex) -> bool:
        """A step with a breakpoint is run again (not taken from the cache), so it can be paused before."""
        one_shot = self.one_shot
        return any(self._hits(b, v) for b in self.breakpoints) or (one_shot is not None and one_shot.matches(v))

    def _hits(self, bp: Breakpoint, v: Vertex) -> bool:
        """`bp` stops at `v`: its line is `v`'s, or a FROM without a step whose stage `v` starts."""
        if bp.matches(v):
            return True
        if bp.line is None or self.dockerfile is None:
            return False
        if self._moved is None:
            from workbench.debug.stepless import read_targets

            self._moved = {line: t.first_step for line, t in read_targets(self.dockerfile).items()
                           if t.first_step is not None}
        moved = self._moved.get(bp.line)
        return moved is not None and Breakpoint(line=moved).matches(v)

    def held(self, vertex: Vertex | None = None) -> float:
        """Seconds `vertex`'s step was held (paused, or waiting behind another pause); with none, the seconds
        the build stood at a pause."""
        with self._held_lock:
            return self._paused if vertex is None else self._held.get(vertex.digest, 0.0)

    def _count(self, v: Vertex, seconds: float, paused: bool) -> None:
        with self._held_lock:
            self._held[v.digest] = self._held.get(v.digest, 0.0) + seconds
            if paused:
                self._paused += seconds

    def _take_gate(self, v: Vertex) -> bool:
        """Take the one-pause gate; while another step holds it, this step is held (announced, and counted as
        held time). Returns whether it was held."""
        if self._gate.acquire(blocking=False):
            return False
        if self.bus is not None:
            self.bus.emit(DebugHeld(v.digest, v.name))
        t0 = time.monotonic()
        self._gate.acquire()
        self._count(v, time.monotonic() - t0, paused=False)
        return True

    def before_step(self, step: StepContext) -> None:
        """Called before the step runs; blocks while the user looks around. Raises Aborted on `abort`."""
        v = step.vertex
        if v.source is None:
            return
        if not (self._stepping or self.wants_fresh_run(v)):
            return
        held = self._take_gate(v)
        try:
            if not (self._stepping or self.wants_fresh_run(v)):
                if held and self.bus is not None:
                    self.bus.emit(DebugResumed(v.digest, ""))  # let go without a pause of its own
                return
            reason = "step" if self._stepping and not self.wants_fresh_run(v) else "breakpoint"
            if self.one_shot is not None and self.one_shot.matches(v):
                self.one_shot = None
            self._wait(Pause(step, reason))
        finally:
            self._gate.release()

    def on_failure(self, step: StepContext) -> None:
        """Called when a RUN failed, with its filesystem still mounted; blocks while paused."""
        if not self.break_on_error or step.cancel.is_set():
            return
        self._take_gate(step.vertex)
        try:
            self._wait(Pause(step, "error"))
        except Aborted:
            pass  # the step failed anyway: the build ends with its error
        finally:
            self._gate.release()

    def _wait(self, pause: Pause) -> None:
        v = pause.vertex
        t0 = time.monotonic()
        if self.bus is not None:
            self.bus.emit(DebugPaused(v.digest, v.name, pause.reason, source=v.source, error=pause.error))
        with self._cond:
            self._pause = pause
            self._cond.notify_all()
        pause._resumed.wait()
        with self._shell_lock:
            pause.close()
        self._count(v, time.monotonic() - t0, paused=True)
        if self.bus is not None:
            self.bus.emit(DebugResumed(v.digest, pause._how))
        if pause._how == "abort":
            pause.step.cancel.set()
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

    @property
    def ended(self) -> bool:
        """Whether the front end said the build thread is done."""
        return self._ended

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
            self._moved = None  # the Dockerfile may have changed

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

    @contextmanager
    def _in_pause(self, pause: Pause) -> Iterator[None]:
        """Hold the shell lock while `pause` is still where the build stands (else a RuntimeError): a command
        asked for before `continue` never runs in the step the build has let go."""
        with self._shell_lock:
            if pause is not self._pause or pause.closed:
                raise RuntimeError(NO_LONGER_PAUSED)
            yield

    def kill_shells(self) -> None:
        """End every shell started with `exec` that is still running (abort, quit); callable from any thread."""
        for kill in list(self._kills):
            kill()

    def exec(self, pause: Pause, argv: list[str], terminal: int | None = None) -> int:
        """Run `argv` interactively in a container that sees what the paused step sees; return its exit code.
        `terminal`: a terminal fd to run it on instead of this process's own (the DAP server's pty).

        The container gets a throw-away writable layer over the step's input (or, after a failure, the
        failed step's own filesystem, which is discarded with the failed step): nothing done here reaches the
        cache or the image. Mounts are those of the step; cache mounts are read-only here for the same reason.
        """
        from workbench.executor.runc import ExecError

        with self._container(pause, argv) as (rootfs, spec):
            try:
                code = pause.step.worker.run_interactive(rootfs, spec, on_start=self._kills.append,
                                                         terminal=terminal)
            except ExecError as e:
                raise RuntimeError(str(e)) from None
            finally:
                self._kills.clear()
            self._shell_ended(pause, argv, code)
            return code

    def run_captured(self, pause: Pause, argv: list[str], on_output: Any, cancel: threading.Event) -> int:
        """Run `argv` without a terminal in the container `exec` would start, its output to
        `on_output(stream, chunk)`; its exit code (137 once `cancel` is set). For a front end whose own
        stdin/stdout are not a terminal (the DAP server's `evaluate`)."""
        from workbench.executor.runc import ExecError

        with self._container(pause, argv) as (rootfs, spec):
            try:
                code = pause.step.worker.run(rootfs, spec, on_output=on_output, cancel=cancel).exit_code
            except ExecError as e:
                raise RuntimeError(str(e)) from None
            self._shell_ended(pause, argv, code)
            return code

    @contextmanager
    def _container(self, pause: Pause, argv: list[str]) -> Iterator[tuple[Path, ExecSpec]]:
        """While `pause` holds: the root and spec of a container at the paused step (cache mounts read-only
        unless the step failed: its own mounts are what it had), its start announced."""
        from workbench.executor.runc import missing_program

        with self._in_pause(pause), pause.step.container_spec(argv) as spec:
            rootfs = pause.workspace()
            if pause.reason != "error":
                cache_dir = pause.step.worker.root / "cachemounts"
                spec.mounts = [_read_only_cache(m, cache_dir) for m in spec.mounts]
            if (missing := missing_program(rootfs, spec)) is not None:
                raise RuntimeError(missing)
            if self.bus is not None:
                self.bus.emit(DebugShell(pause.vertex.digest, tuple(argv)))
            yield rootfs, spec

    def _shell_ended(self, pause: Pause, argv: list[str], code: int) -> None:
        if self.bus is not None:
            self.bus.emit(DebugShell(pause.vertex.digest, tuple(argv), exit_code=code))


def _read_only_cache(m: Mount, cache_dir: Path) -> Mount:
    """A cache mount as the debug shell sees it: read-only, so a shell cannot change later builds."""
    from dataclasses import replace

    if m.type == "bind" and "ro" not in m.options and Path(m.source).is_relative_to(cache_dir):
        return replace(m, options=[*m.options, "ro"])
    return m
