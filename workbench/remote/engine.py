"""`RemoteEngine`: a BuildKit daemon (buildkitd, or the one inside Docker) behind `workbench.engine.Engine`.

Builds run on the daemon with its own Dockerfile frontend (`--frontend dockerfile.v0`); its SolveStatus becomes
our events. The checks and the LLB are static and come from the local frontend. What needs our own store (the
prediction, step views and shells) is not available on a remote daemon yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.progress.events import BuildFinished, EventBus, VertexFailed
from workbench.remote.address import Address
from workbench.request import BuildFailure, BuildRequest, BuildResult, OutputSpec, RecorderFactory

if TYPE_CHECKING:
    from workbench.prediction import Prediction
    from workbench.remote.solve import SolvePlan
    from workbench.results import ShellConfig

DOCKERFILE_FRONTEND = "dockerfile.v0"
NOT_REMOTE = "not on a remote BuildKit (yet)"


class RemoteEngine:
    """Builds on the daemon at `address`; `frontend` is the daemon-side frontend to use (only dockerfile.v0)."""

    def __init__(self, address: Address, frontend: str = DOCKERFILE_FRONTEND,
                 recorder: RecorderFactory | None = None, docker_session: bool = False) -> None:
        self.address = address
        self.frontend = frontend
        self.recorder = recorder
        self.docker_session = docker_session
        """docker:// only: serve the session on `POST /session` (as the docker CLI) rather than Control.Session."""

    @property
    def daemon(self) -> str:
        return "Docker 20.10's BuildKit" if self.address.scheme == "docker" else f"the BuildKit at {self.address}"

    # -- build ---------------------------------------------------------------------------------------------

    def build(self, request: BuildRequest, bus: EventBus) -> BuildResult:
        from workbench.progress.redact import RedactingBus, Redactor
        from workbench.solver.session import secret_values

        redactor = Redactor(secret_values(request.session))
        bus = RedactingBus(bus, redactor)
        recording = self.recorder(request, bus, redactor) if self.recorder is not None else None
        t0 = time.monotonic()
        try:
            result = self._build(request, bus)
        except BuildFailure as e:
            bus.emit(BuildFinished(error=e.message, duration=time.monotonic() - t0, step=e.step))
            if recording is not None:
                recording.finish("error", time.monotonic() - t0, error=e.message, step=e.step)
            raise
        except BaseException as e:
            if recording is not None:
                recording.finish("canceled" if isinstance(e, KeyboardInterrupt) else "error", time.monotonic() - t0,
                                 error=str(e) or type(e).__name__, exception=type(e).__name__)
            raise
        result.duration = time.monotonic() - t0
        bus.emit(BuildFinished(duration=result.duration))
        if recording is not None:
            recording.finish("completed", result.duration, result=result)
        return result

    def _build(self, request: BuildRequest, bus: EventBus) -> BuildResult:
        from workbench.remote.control import Control, ControlError
        from workbench.remote.solve import SolveCanceled, SolveFailed, run_solve, shared_key
        from workbench.remote.status import StatusFold

        plan = self.plan(request)
        fold = StatusFold(bus.emit)
        try:
            with Control(self.address) as control:
                response = run_solve(control, plan, fold.apply, request.cancel, shared_key(request.context),
                                     self.docker_session)
        except ControlError as e:
            raise BuildFailure(str(e)) from None
        except SolveCanceled:
            for v in fold.running():
                bus.emit(VertexFailed(v.id, v.name, error="canceled"))
            raise BuildFailure("canceled") from None
        except SolveFailed as e:
            failed = fold.failed()
            step = failed[0].name if failed else ""
            raise BuildFailure(_error_text(str(e)), step=step) from None
        steps_run = sum(1 for v in fold.vertices.values() if v.state == "completed")
        return BuildResult(response.get("containerimage.digest"), {}, 0.0, steps_run, dict(response))

    def plan(self, request: BuildRequest) -> SolvePlan:
        """The Solve for `request`; BuildFailure (one line) for what this daemon cannot do."""
        from workbench.remote.solve import SolvePlan

        if self.frontend != DOCKERFILE_FRONTEND:
            raise BuildFailure(f"sending workbench's own build graph to a remote BuildKit lands later; pass "
                               f"--frontend {DOCKERFILE_FRONTEND} to build with the daemon's Dockerfile frontend")
        if request.session.ssh:
            raise BuildFailure(f"--ssh is not forwarded to {self.daemon} yet")
        if request.cache_to or request.cache_from:
            raise BuildFailure(f"--cache-to/--cache-from are not passed to {self.daemon} yet")
        dockerfile = request.dockerfile
        if not dockerfile.is_file():
            raise BuildFailure(f"the Dockerfile {dockerfile} does not exist")
        if not request.context.is_dir():
            raise BuildFailure(f"build context {request.context} is not a directory")
        attrs = {"filename": dockerfile.name}
        if request.target:
            attrs["target"] = request.target
        for k, v in request.build_args.items():
            attrs[f"build-arg:{k}"] = v
        if request.no_cache:
            attrs["no-cache"] = ""
        docker = self.address.scheme == "docker"
        entitlements = sorted(request.session.entitlements)
        if docker:  # the test daemon has no bridge: steps run on the host's network, granted by default
            attrs["force-network-mode"] = "host"
            entitlements = sorted({*entitlements, "network.host"})
        exporters, file_output = self._exporters(request.outputs)
        return SolvePlan(frontend=DOCKERFILE_FRONTEND, frontend_attrs=attrs, exporters=exporters,
                         legacy_exporter=docker, entitlements=entitlements,
                         dirs={"context": request.context, "dockerfile": dockerfile.parent},
                         secrets=request.session.secrets, name=request.context.name, output=file_output)

    def _exporters(self, outputs: list[OutputSpec]) -> tuple[list[Any], Any]:
        """The daemon's exporters for `outputs`, the one written through the session (FileSend) first, since
        the session serves one; and that output (None if none)."""
        from workbench.remote.session.filesend import LocalOutput, TarOutput
        from workbench.remote.solve import Exporter

        docker = self.address.scheme == "docker"
        supported = ("image", "local", "tar") if docker else ("image", "oci", "docker", "tar", "local")
        files = [o for o in outputs if o.type != "image"]
        for out in outputs:
            if out.type not in supported:
                raise BuildFailure(f"--output type={out.type} is not supported by {self.daemon} "
                                   f"(it supports type={', type='.join(supported)})")
        if len(files) > 1 or (docker and len(outputs) > 1):
            raise BuildFailure(f"{self.daemon} takes one --output " + ("at a time" if docker else "written here "
                               "(local, tar, oci or docker) at a time"))
        exporters, file_output = [], None
        for out in files:
            dest = out.dest
            file_output = (LocalOutput(Path(dest)) if out.type == "local"
                           else TarOutput(dest if dest == "-" else Path(dest), f"--output type={out.type}"))
            exporters.append(Exporter(out.type, {k: v for k, v in out.attrs.items() if k != "dest"}))
        for out in outputs:
            if out.type != "image":
                continue
            if not docker:
                exporters.append(Exporter("image", {k: v for k, v in out.attrs.items() if k in ("name", "push")}))
            elif out.attrs.get("push") == "true":
                raise BuildFailure("--output type=image,push=true: Docker 20.10's BuildKit does not push; "
                                   "build with -t, then push with `docker push`")
            else:
                exporters.append(Exporter("moby", {"name": out.attrs["name"]}))
        return exporters, file_output

    # -- static: the local frontend -----------------------------------------------------------------------

    def check(self, context: Path, dockerfile: Path, build_args: dict[str, str], target: str | None, root: Path,
              fmt: str = "text") -> tuple[str, str, bool]:
        from workbench.inspect import check_text

        return check_text(context, dockerfile, build_args, target, root, fmt)

    def llb(self, context: Path, dockerfile: Path, build_args: dict[str, str], target: str | None,
            root: Path) -> list[str]:
        from workbench.inspect import llb_lines

        return llb_lines(context, dockerfile, build_args, target, root)

    # -- what needs our own store -------------------------------------------------------------------------

    def predict(self, request: BuildRequest) -> Prediction:
        from workbench.prediction import PredictionError

        raise PredictionError(f"predicting cache misses is {NOT_REMOTE}: the daemon at {self.address} keeps the cache")

    def step_view(self, root: Path, cache_key: str) -> AbstractContextManager[Path]:
        from workbench.results import ViewError

        raise ViewError(f"viewing a step's files is {NOT_REMOTE} ({self.address})")

    def chain_view(self, root: Path, chain: list[str]) -> AbstractContextManager[Path]:
        from workbench.results import ViewError

        raise ViewError(f"viewing a step's input is {NOT_REMOTE} ({self.address})")

    def step_chain(self, root: Path, cache_key: str) -> list[str] | None:
        return None  # no result of ours is kept for a remote step

    def step_shell(self, root: Path, cache_key: str, argv: list[str], config: ShellConfig,
                   on_start: Callable[[Callable[[], None]], None]) -> int:
        from workbench.results import ViewError

        raise ViewError(f"a shell in a step's result is {NOT_REMOTE} ({self.address})")


def _error_text(details: str) -> str:
    """The daemon's error, less the gRPC wrapping v0.8 adds ("rpc error: code = Unknown desc = ...")."""
    marker = "desc = "
    while details.startswith("rpc error:") and marker in details:
        details = details.split(marker, 1)[1]
    return details
