"""One build, from a Dockerfile and a context to the requested outputs; the engine's entry point (no UI)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.image.resolve import resolve_image
from workbench.progress.events import (
    BuildFinished,
    BuildWarning,
    EventBus,
    SourceLocation,
    VertexCompleted,
    VertexFailed,
    VertexStarted,
    VertexStatus,
)
from workbench.request import BuildFailure, BuildRecorder, BuildRequest, BuildResult, OutputSpec, RecorderFactory
from workbench.solver.explain import save_last_build
from workbench.solver.hooks import RunClock
from workbench.solver.session import Session

if TYPE_CHECKING:
    from workbench.exporter.prefetch import LayerPrefetch
    from workbench.worker import Worker


def _internal(bus: EventBus, name: str) -> tuple[str, float]:
    vid = "internal:" + name
    start = time.time()
    bus.emit(VertexStarted(vid, name, ts=start))
    return vid, start


def _internal_done(bus: EventBus, vid: str, t0: float, transferring: str = "", size: int = 0) -> None:
    """End an internal vertex; `transferring`: what it sent (`context`, `dockerfile`) and how many bytes."""
    if transferring:
        bus.emit(VertexStatus(vid, vid[9:], status_id=f"transferring {transferring}:", current=size, done=True))
    bus.emit(VertexCompleted(vid, vid[9:], duration=time.time() - t0))


def _load_context(bus: EventBus, target: Any, context: Path, excluded: Any) -> None:
    """`[internal] load build context`, when the graph reads the context: the bytes its copies and bind
    mounts take (as BuildKit's transfer, .dockerignore applied)."""
    from workbench.solver.transfer import context_bytes, context_reads

    reads = context_reads(target)
    if not reads:
        return
    vid, t0 = _internal(bus, "[internal] load build context")
    _internal_done(bus, vid, t0, "context", context_bytes(context, reads, excluded))


class _Unrecorded:
    """The BuildRecorder of a build nobody records."""

    def record_llb(self, target: Any, dockerfile_text: str) -> None:
        pass

    def finish(self, status: str, duration: float, **kw: Any) -> None:
        pass


def run_build(req: BuildRequest, bus: EventBus, recorder: RecorderFactory | None = None) -> BuildResult:
    """Build `req`, reporting on `bus`; raises BuildFailure. The events reach `bus` with the session's secret
    values masked. `recorder` watches the build from start to end (the front ends pass
    workbench.history.recorder's); without one nothing is recorded."""
    from workbench.progress.redact import RedactingBus, Redactor
    from workbench.solver.session import secret_values
    from workbench.state_root import RootError, prepare_root

    try:
        prepare_root(req.root)
    except RootError as e:
        raise BuildFailure(str(e)) from None
    redactor = Redactor(secret_values(req.session))
    bus = RedactingBus(bus, redactor)
    recording = recorder(req, bus, redactor) if recorder is not None else _Unrecorded()
    clock = RunClock(req.debugger)  # a debugger's pauses are not build time
    try:
        result = _build(req, bus, recording)
    except BuildFailure as e:
        # where it points, for the views that mark it (the TUI's failed node and editor line); the printers
        # say only the error, as BuildKit's
        bus.emit(BuildFinished(error=e.message, duration=clock.seconds(), source=e.location, step=e.step))
        recording.finish("error", clock.seconds(), error=e.message, location=e.location, step=e.step)
        raise
    except BaseException as e:
        recording.finish("canceled" if isinstance(e, KeyboardInterrupt) else "error", clock.seconds(),
                         error=str(e) or type(e).__name__, exception=type(e).__name__)
        raise
    bus.emit(BuildFinished(duration=clock.seconds()))
    if result.steps_run:  # a fully cached build added nothing: no need to measure the store
        _collect_garbage(req.root, bus)
    recording.finish("completed", clock.seconds(), result=result)
    return result


def _collect_garbage(root: Path, bus: EventBus) -> None:
    """The automatic GC policy: keep the store under its cap ($WORKBENCH_GC_CAP); skipped while builds run."""
    from workbench.gc import maybe_gc

    try:
        maybe_gc(root)
    except OSError as e:  # the build itself succeeded; a failed clean-up only delays the next one
        bus.emit(BuildWarning(f"cache garbage collection failed: {e}"))


def _build(req: BuildRequest, bus: EventBus, recording: BuildRecorder | None = None) -> BuildResult:
    from workbench.frontend.dockerfile.convert import ConvertOptions, DockerfileError, convert
    from workbench.frontend.dockerfile.dockerignore import load_dockerignore
    from workbench.frontend.dockerfile.source import DockerfileReadError, read_dockerfile
    from workbench.fsutil.patterns import IgnoreMatcher
    from workbench.solver.solver import LocalContext, SolveError, Solver
    from workbench.worker import Worker

    filename = req.dockerfile.name
    vid, t0 = _internal(bus, f"[internal] load build definition from {filename}")
    try:
        text = read_dockerfile(req.dockerfile)
    except DockerfileReadError as e:
        bus.emit(VertexFailed(vid, vid[9:], error=str(e)))
        raise BuildFailure(str(e)) from None
    _internal_done(bus, vid, t0, "dockerfile", len(text.encode("utf-8", "surrogateescape")))
    context = req.context
    if not context.exists():
        # An empty context is legitimate (nothing is copied from it); say so, a typo is more likely.
        bus.emit(BuildWarning(f"build context {context} does not exist: building with an empty context"))
        context = req.root / "empty-context"
        context.mkdir(parents=True, exist_ok=True)
    elif not context.is_dir():
        raise BuildFailure(f"build context {context} is not a directory")
    patterns = load_dockerignore(context, req.dockerfile)
    matcher = IgnoreMatcher(patterns)

    worker = Worker(req.root)
    prefetch: LayerPrefetch | None = None
    try:
        resolved: dict[tuple[str, str], tuple[str, str, dict[str, Any]]] = {}
        unresolved: set[tuple[str, str]] = set()

        def resolve(ref: str, platform: str) -> tuple[str, str, dict[str, Any]]:
            if (ref, platform) not in resolved:
                try:
                    resolved[(ref, platform)] = resolve_image(ref, worker.content, bus, platform)
                except Exception:
                    unresolved.add((ref, platform))
                    raise
                unresolved.discard((ref, platform))
            return resolved[(ref, platform)]

        parsed = _run_checks(text, filename, req, matcher.excluded if matcher else None, resolve, bus)

        ignore_loaded = False

        def load_dockerignore_vertex() -> None:
            # BuildKit loads .dockerignore once every base image resolved, before it converts any stage: a
            # conversion error shows it, a failed resolve (the checks resolved the bases already) does not
            nonlocal ignore_loaded
            if ignore_loaded or unresolved:
                return
            ignore_loaded = True
            vid, t0 = _internal(bus, "[internal] load .dockerignore")
            _internal_done(bus, vid, t0, "context",
                           sum(len(p.encode("utf-8", "surrogateescape")) + 1 for p in patterns))

        try:
            conv = convert(text, ConvertOptions(build_args=req.build_args, target=req.target, filename=filename,
                                                no_cache_stages=req.no_cache_filter,
                                                excludes=tuple(patterns), on_dispatch=load_dockerignore_vertex),
                           resolve, parsed)
        except DockerfileError as e:
            loc = SourceLocation(filename, e.start_line, e.end_line or e.start_line) if e.start_line else None
            raise BuildFailure(e.message, loc, dockerfile_text=text) from None
        unresolved.clear()  # the conversion got every image it needed
        load_dockerignore_vertex()
        if recording is not None:
            recording.record_llb(conv.vertex, text)
        _check_entitlements(conv.vertex, req.session, text)
        devices = _check_devices(conv.vertex, req, bus, text)
        if req.cancel is not None and req.cancel.is_set():
            raise BuildFailure("canceled", dockerfile_text=text)
        imported = []
        if req.cache_from:  # under --no-cache too: the steps it does not apply to (FROM, WORKDIR) may hit
            from workbench.cache.remote.importer import ImportedCache

            imported.append(ImportedCache.load(req.cache_from, bus, worker))
        _load_context(bus, conv.vertex, context, matcher.excluded if matcher else None)
        from workbench.exporter.outputs import release_replaced
        from workbench.exporter.prefetch import prefetch_layers

        release_replaced(req.outputs)
        prefetch = prefetch_layers(req.outputs, worker, conv.vertex, bus)
        solver = Solver(worker, bus, {"context": LocalContext(context, matcher.excluded if matcher else None)},
                        no_cache=req.no_cache, session=req.session, cancel=req.cancel, hooks=req.debugger,
                        devices=devices, cache_sources=imported, lineage_scope=str(req.dockerfile.resolve()))
        try:
            result = solver.solve(conv.vertex)
        except SolveError as e:
            v = e.vertex
            raise BuildFailure(e.message, v.source if v else None, v.name if v else "", text) from None
        finally:
            solver.close()
            save_last_build(req.root, req.dockerfile, solver.steps)
        manifest = None
        metadata: dict[str, Any] = {}
        image = conv.image
        inline = [c for c in req.cache_to if c.type == "inline"]
        if inline:  # the cache of the image's own steps travels in its config (`--cache-to type=inline`)
            if prefetch is not None:
                prefetch.settle()  # its layers' blobs are the ones the inline cache must name
            from workbench.cache.remote.exporter import inline_cache

            image = inline_cache(inline[0], worker, solver.key_of, conv.vertex, result.chain, image)
        for out in req.outputs:
            manifest = _export(out, result.chain, image, worker, bus, manifest, metadata, prefetch)
        if req.cache_to and len(inline) < len(req.cache_to):
            from workbench.cache.remote.exporter import CacheExportError, export_caches

            try:
                export_caches([c for c in req.cache_to if c.type != "inline"], worker, solver.key_of, conv.vertex,
                              result.chain, bus)
            except CacheExportError as e:
                raise BuildFailure(str(e)) from None
        return BuildResult(manifest, conv.image, 0.0, sum(1 for st in solver.steps if not st.get("cached")),
                           metadata)
    finally:
        try:
            if prefetch is not None:
                prefetch.close()
        finally:
            worker.close()


def _run_checks(text: str, filename: str, req: BuildRequest, ignore: Any, resolve: Any, bus: EventBus) -> Any:
    """The build checks as warnings on the stream; with `# check=error=true` a violation fails the build.
    Returns the Dockerfile's parse for the conversion to share (None when it does not parse)."""
    from workbench.frontend.dockerfile.linter import CheckConfigError
    from workbench.frontend.dockerfile.parser import DockerfileParseError, parse
    from workbench.frontend.dockerfile.shell import ShellExpansionError
    from workbench.lint import as_event, lint

    try:
        parsed = parse(text)
    except DockerfileParseError:
        return None  # the conversion reports it, located
    try:
        report = lint(text, build_args=req.build_args, target=req.target, ignore=ignore, resolve=resolve,
                      parsed=parsed)
    except CheckConfigError as e:
        raise BuildFailure(str(e), dockerfile_text=text) from None
    except ShellExpansionError:
        return parsed  # the conversion reports it, located
    for w in report.warnings:
        bus.emit(as_event(w, filename))
    error = report.error
    if error is not None and error.parse_phase:
        # BuildKit parses every instruction (of every stage) before it resolves a base image
        loc = SourceLocation(filename, error.start_line, error.end_line or error.start_line) if error.start_line \
            else None
        raise BuildFailure(error.message, loc, dockerfile_text=text)
    if report.failed:
        first = report.warnings[0]
        raise BuildFailure(report.error_message(), SourceLocation(filename, first.start_line, first.end_line),
                           dockerfile_text=text)


def _check_devices(target: Any, req: BuildRequest, bus: EventBus, text: str) -> Any:
    """Decide the `RUN --device` requests before anything runs (workbench.cdi); None when there are none."""
    from workbench.llb.ops import ExecOp

    if not any(isinstance(v.op, ExecOp) and v.op.devices for v in target.walk()):
        return None
    from workbench.cdi import (
        BuildDevices,
        ConfigError,
        DeviceError,
        EntitlementError,
        config_path,
        load_cdi_config,
        merge_device_entitlements,
    )

    try:
        config = load_cdi_config(req.config or config_path(), req.cdi_spec_dirs)
        grants = merge_device_entitlements(req.session.entitlements)
    except (ConfigError, EntitlementError) as e:
        raise BuildFailure(str(e), dockerfile_text=text) from None
    if grants is not None and config.disabled:
        raise BuildFailure("granting entitlement device is not allowed by build daemon configuration",
                           dockerfile_text=text)
    devices = BuildDevices(config, grants, bus)
    try:
        devices.check(target)
    except DeviceError as e:
        failed = e.vertex  # BuildKit refuses while loading the LLB, before anything runs
        raise BuildFailure(f"failed to load LLB: {e}", failed.source if failed else None,
                           failed.name if failed else "", text) from None
    return devices


def _check_entitlements(target: Any, session: Session, text: str) -> None:
    """Refuse, before anything runs, steps that need an entitlement the client did not grant (as BuildKit)."""
    from workbench.llb.ops import ExecOp

    for v in target.walk():
        if not isinstance(v.op, ExecOp):
            continue
        needed = [e for e, used in (("network.host", v.op.network == "host"),
                                    ("security.insecure", v.op.security == "insecure")) if used]
        for entitlement in needed:
            if not session.allows(entitlement):
                # BuildKit's words on the ERROR line; the way out on the next
                raise BuildFailure(f"failed to load LLB: {entitlement} is not allowed\n"
                                   f"hint: grant it with --allow {entitlement}",
                                   v.source, v.name, text)


def _export(out: OutputSpec, chain: list[str], image: dict[str, Any], worker: Worker, bus: EventBus,
            manifest: str | None, metadata: dict[str, Any] | None = None,
            prefetch: LayerPrefetch | None = None) -> str | None:
    """Write one `--output`; returns the image's manifest digest (made once, shared by later outputs)."""
    from workbench.exporter.outputs import ExportError, export_output

    try:
        return export_output(out, chain, image, worker, bus, manifest, metadata, prefetch)
    except ExportError as e:
        raise BuildFailure(str(e)) from None
