"""The backend seam: what the front ends (cli, tui, debug, server) ask of an engine, and the local engine.

A build streams its events on the caller's bus. Debugging rides on the request: `BuildRequest.debugger` is any
`workbench.solver.hooks.StepHooks` (workbench.debug's Debugger), and the engine hands it, at each step, a
`StepContext` whose `container_spec(argv)` / `workspace()` open the debug container inside the step. A finished
step's files are opened read-only through the engine. Another backend (a remote BuildKit) is a second class
that meets `Engine`; the front ends do not change.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from workbench.prediction import Prediction
    from workbench.progress.events import EventBus
    from workbench.request import BuildRequest, BuildResult, RecorderFactory
    from workbench.results import ShellConfig


class Engine(Protocol):
    def build(self, request: BuildRequest, bus: EventBus) -> BuildResult:
        """Solve `request`, streaming its events on `bus` (ending with BuildFinished); BuildFailure if it fails."""

    def predict(self, request: BuildRequest) -> Prediction:
        """Which steps building `request` now would run and why, before any runs (`misses()`: vertex digest ->
        reason); workbench.prediction.PredictionError when it cannot be told."""

    def check(self, context: Path, dockerfile: Path, build_args: dict[str, str], target: str | None, root: Path,
              fmt: str = "text") -> tuple[str, str, bool]:
        """The build checks only: (stdout, stderr, whether they fail), as `docker build --check`."""

    def llb(self, context: Path, dockerfile: Path, build_args: dict[str, str], target: str | None,
            root: Path) -> list[str]:
        """The build graph the Dockerfile becomes: one JSON line per op, inputs first."""

    def step_view(self, root: Path, cache_key: str) -> AbstractContextManager[Path]:
        """A read-only view of a finished step's files (by its cache key) while the context is open;
        workbench.results.ViewError when the result is no longer kept."""

    def chain_view(self, root: Path, chain: list[str]) -> AbstractContextManager[Path]:
        """A read-only view of the result a running build handed a step (a paused step's input)."""

    def step_chain(self, root: Path, cache_key: str) -> list[str] | None:
        """The snapshot chain kept for a finished or cached step's cache key (None: no longer kept)."""

    def step_shell(self, root: Path, cache_key: str, argv: list[str], config: ShellConfig,
                   on_start: Callable[[Callable[[], None]], None]) -> int:
        """Run `argv` on this terminal in a finished step's filesystem, on a throw-away layer; its exit code."""


class LocalEngine:
    """The engine in this process: the solver on this machine's root (workbench.build, workbench.inspect)."""

    def __init__(self, recorder: RecorderFactory | None = None) -> None:
        self.recorder = recorder
        """Watches each build (workbench.history.recorder keeps it as a session); None: nobody does."""

    def build(self, request: BuildRequest, bus: EventBus) -> BuildResult:
        from workbench.build import run_build
        from workbench.malloc_arenas import limit_malloc_arenas

        limit_malloc_arenas()  # before the build's threads: an export's peak memory is a fifth lower
        return run_build(request, bus, self.recorder)

    def predict(self, request: BuildRequest) -> Prediction:
        from workbench.prediction import predict_build

        return predict_build(request)

    def check(self, context: Path, dockerfile: Path, build_args: dict[str, str], target: str | None, root: Path,
              fmt: str = "text") -> tuple[str, str, bool]:
        from workbench.inspect import check_text

        return check_text(context, dockerfile, build_args, target, root, fmt)

    def llb(self, context: Path, dockerfile: Path, build_args: dict[str, str], target: str | None,
            root: Path) -> list[str]:
        from workbench.inspect import llb_lines

        return llb_lines(context, dockerfile, build_args, target, root)

    def step_view(self, root: Path, cache_key: str) -> AbstractContextManager[Path]:
        from workbench.results import step_view

        return step_view(root, cache_key)

    def chain_view(self, root: Path, chain: list[str]) -> AbstractContextManager[Path]:
        from workbench.results import chain_view

        return chain_view(root, chain)

    def step_chain(self, root: Path, cache_key: str) -> list[str] | None:
        from workbench.results import step_chain

        return step_chain(root, cache_key)

    def step_shell(self, root: Path, cache_key: str, argv: list[str], config: ShellConfig,
                   on_start: Callable[[Callable[[], None]], None]) -> int:
        from workbench.results import step_shell

        return step_shell(root, cache_key, argv, config, on_start)
