"""The engine's prediction of a build: the Dockerfile converted as a build converts it, then the solver's
keys looked up in the cache (workbench.solver.predict) — which steps will run, and why, before any does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.solver.predict import Prediction

if TYPE_CHECKING:
    from workbench.request import BuildRequest
    from workbench.solver.hooks import StepHooks

__all__ = ["Prediction", "PredictionError", "predict_build"]


class PredictionError(Exception):
    """The build cannot be predicted (the Dockerfile does not convert, a COPY source is missing, …): the
    message says why, as the build would."""


def predict_build(req: BuildRequest, hooks: StepHooks | None = None) -> Prediction:
    """Which steps building `req` now would run and why. Base images are resolved as a build resolves them
    (the root's image store, else the registry's metadata); nothing runs and nothing is recorded. `hooks`:
    those the build will have (a debugger runs the steps up to a breakpoint afresh); default `req.debugger`."""
    from workbench.frontend.dockerfile.convert import ConvertOptions, DockerfileError, convert
    from workbench.frontend.dockerfile.dockerignore import load_dockerignore
    from workbench.frontend.dockerfile.source import DockerfileReadError, read_dockerfile
    from workbench.fsutil.patterns import IgnoreMatcher
    from workbench.image.resolve import resolve_image
    from workbench.progress.events import EventBus
    from workbench.solver.predict import predict
    from workbench.solver.types import LocalContext, SolveError
    from workbench.state_root import RootError
    from workbench.worker import Worker

    try:
        text = read_dockerfile(req.dockerfile)
    except DockerfileReadError as e:
        raise PredictionError(str(e)) from None
    try:
        worker = Worker(req.root)
    except RootError as e:
        raise PredictionError(str(e)) from None
    try:
        context = req.context
        if not context.is_dir():  # as a build: an empty context
            context = req.root / "empty-context"
            context.mkdir(parents=True, exist_ok=True)
        patterns = load_dockerignore(context, req.dockerfile)
        matcher = IgnoreMatcher(patterns)
        excluded = matcher.excluded if matcher else None
        resolved: dict[tuple[str, str], tuple[str, str, dict[str, Any]]] = {}

        def resolve(ref: str, platform: str) -> tuple[str, str, dict[str, Any]]:
            if (ref, platform) not in resolved:
                resolved[(ref, platform)] = resolve_image(ref, worker.content, EventBus(), platform)
            return resolved[(ref, platform)]

        try:
            conv = convert(text, ConvertOptions(build_args=req.build_args, target=req.target,
                                                filename=req.dockerfile.name, excludes=tuple(patterns)), resolve)
        except DockerfileError as e:
            raise PredictionError(e.message) from None
        try:
            return predict(worker, conv.vertex, {"context": LocalContext(context, excluded)},
                           no_cache=req.no_cache, session=req.session,
                           hooks=hooks if hooks is not None else req.debugger,
                           lineage_scope=str(req.dockerfile.resolve()))
        except SolveError as e:
            raise PredictionError(e.message) from None
    finally:
        worker.close()
