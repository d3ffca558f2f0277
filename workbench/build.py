"""One build, from a Dockerfile and a context to the requested outputs; the engine's entry point (no UI)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.progress.events import (
    BuildFinished,
    BuildWarning,
    EventBus,
    SourceLocation,
    VertexCompleted,
    VertexFailed,
    VertexStarted,
)
from workbench.solver.explain import save_last_build
from workbench.solver.session import Session


def default_root() -> Path:
    """`/var/lib/workbench` for root, else `$XDG_DATA_HOME/workbench` (or ~/.local/share/workbench)."""
    if env := os.environ.get("WORKBENCH_ROOT"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/workbench")
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "workbench"


class OutputSpecError(ValueError):
    pass


@dataclass(frozen=True)
class OutputSpec:
    """One `--output`: type (oci, local) and its attributes (dest, name, ...)."""

    type: str
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.attrs.get("dest", "")


def parse_output(text: str) -> OutputSpec:
    """Parse `type=oci,dest=out.tar`; a bare path means `type=local,dest=PATH` as in buildx."""
    if "=" not in text.split(",")[0]:
        return OutputSpec("local", {"dest": text})
    attrs: dict[str, str] = {}
    for part in text.split(","):
        k, eq, v = part.partition("=")
        if not eq:
            raise OutputSpecError(f"--output {text!r}: {part!r} is not key=value")
        attrs[k.strip()] = v.strip()
    kind = attrs.pop("type", "")
    if kind not in ("oci", "local"):
        raise OutputSpecError(f"--output {text!r}: unsupported type {kind!r} (supported: oci, local)")
    if not attrs.get("dest"):
        raise OutputSpecError(f"--output {text!r}: dest= is required for type={kind}")
    return OutputSpec(kind, attrs)


@dataclass
class BuildRequest:
    context: Path
    dockerfile: Path
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    outputs: list[OutputSpec] = field(default_factory=list)
    no_cache: bool = False
    root: Path = field(default_factory=default_root)
    session: Session = field(default_factory=Session)


@dataclass
class BuildResult:
    manifest_digest: str | None
    image: dict[str, Any]
    duration: float
    steps_run: int = 0


class BuildFailure(Exception):
    """A failed build: what failed, and where in the Dockerfile when that is known."""

    def __init__(self, message: str, location: SourceLocation | None = None, step: str = "",
                 dockerfile_text: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.step = step
        self.dockerfile_text = dockerfile_text


def _internal(bus: EventBus, name: str) -> tuple[str, float]:
    vid = "internal:" + name
    start = time.time()
    bus.emit(VertexStarted(vid, name, ts=start))
    return vid, start


def run_build(req: BuildRequest, bus: EventBus) -> BuildResult:
    """Build `req`, reporting on `bus`; raises BuildFailure."""
    started = time.time()
    try:
        result = _build(req, bus)
    except BuildFailure as e:
        bus.emit(BuildFinished(error=e.message, duration=time.time() - started))
        raise
    bus.emit(BuildFinished(duration=time.time() - started))
    if result.steps_run:  # a fully cached build added nothing: no need to measure the store
        _collect_garbage(req.root, bus)
    return result


def _collect_garbage(root: Path, bus: EventBus) -> None:
    """The automatic GC policy: keep the store under its cap ($WORKBENCH_GC_CAP); skipped while builds run."""
    from workbench.cache.gc import maybe_gc

    try:
        maybe_gc(root)
    except OSError as e:  # the build itself succeeded; a failed clean-up only delays the next one
        bus.emit(BuildWarning(f"cache garbage collection failed: {e}"))


def _build(req: BuildRequest, bus: EventBus) -> BuildResult:
    from workbench.frontend.dockerfile.convert import ConvertOptions, DockerfileError, convert
    from workbench.frontend.dockerfile.dockerignore import IgnoreMatcher, load_dockerignore
    from workbench.solver.solver import LocalContext, SolveError, Solver

    filename = req.dockerfile.name
    vid, t0 = _internal(bus, f"[internal] load build definition from {filename}")
    try:
        text = req.dockerfile.read_text()
    except OSError as e:
        bus.emit(VertexFailed(vid, vid[9:], error=str(e)))
        raise BuildFailure(f"failed to read dockerfile: {req.dockerfile}: {e.strerror}") from None
    bus.emit(VertexCompleted(vid, vid[9:], duration=time.time() - t0))
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

    req.root.mkdir(parents=True, exist_ok=True)
    solver = Solver(req.root, bus, {"context": LocalContext(context, matcher.excluded if matcher else None)},
                    no_cache=req.no_cache, session=req.session)
    solver.lineage_scope = str(req.dockerfile.resolve())
    try:
        resolved: dict[tuple[str, str], tuple[str, str, dict[str, Any]]] = {}

        def resolve(ref: str, platform: str) -> tuple[str, str, dict[str, Any]]:
            if (ref, platform) not in resolved:
                resolved[(ref, platform)] = _resolve_image(ref, solver, bus, platform)
            return resolved[(ref, platform)]

        _run_checks(text, filename, req, matcher.excluded if matcher else None, resolve, bus)

        try:
            conv = convert(text, ConvertOptions(build_args=req.build_args, target=req.target, filename=filename,
                                                excludes=tuple(patterns)), resolve)
        except DockerfileError as e:
            loc = SourceLocation(filename, e.start_line, e.end_line or e.start_line) if e.start_line else None
            raise BuildFailure(e.message, loc, dockerfile_text=text) from None
        _check_entitlements(conv.vertex, req.session, text)
        try:
            result = solver.solve(conv.vertex)
        except SolveError as e:
            v = e.vertex
            raise BuildFailure(e.message, v.source if v else None, v.name if v else "", text) from None
        finally:
            save_last_build(req.root, req.dockerfile, solver.steps)
        manifest = None
        for out in req.outputs:
            manifest = _export(out, result.chain, conv.image, solver, bus, manifest)
        return BuildResult(manifest, conv.image, 0.0, sum(1 for st in solver.steps if not st.get("cached")))
    finally:
        solver.close()


def _run_checks(text: str, filename: str, req: BuildRequest, ignore: Any, resolve: Any, bus: EventBus) -> None:
    """The build checks as warnings on the stream; with `# check=error=true` a violation fails the build."""
    from workbench.frontend.dockerfile.checks import CheckConfigError
    from workbench.frontend.dockerfile.parser import DockerfileParseError
    from workbench.frontend.dockerfile.shell import ShellExpansionError
    from workbench.lint import as_event, lint

    try:
        report = lint(text, build_args=req.build_args, target=req.target, ignore=ignore, resolve=resolve)
    except CheckConfigError as e:
        raise BuildFailure(str(e), dockerfile_text=text) from None
    except (DockerfileParseError, ShellExpansionError):
        return  # the conversion reports these, located
    for w in report.warnings:
        bus.emit(as_event(w, filename))
    if report.failed:
        first = report.warnings[0]
        raise BuildFailure(report.error_message(), SourceLocation(filename, first.start_line, first.end_line),
                           dockerfile_text=text)


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
                raise BuildFailure(f"{entitlement} is not allowed (grant it with --allow {entitlement})",
                                   v.source, v.name, text)


def _resolve_image(ref: str, solver: Any, bus: EventBus,
                   platform: str = "linux/amd64") -> tuple[str, str, dict[str, Any]]:
    from workbench.image.reference import InvalidReference, parse_reference
    from workbench.image.registry import RegistryError, pull

    try:
        parsed = parse_reference(ref)
    except InvalidReference as e:
        raise RuntimeError(str(e)) from None
    vid, t0 = _internal(bus, f"[internal] load metadata for {parsed}")
    try:
        image = pull(parsed, solver.content, platform)
    except RegistryError as e:
        bus.emit(VertexFailed(vid, vid[9:], error=str(e)))
        raise RuntimeError(str(e)) from None
    bus.emit(VertexCompleted(vid, vid[9:], duration=time.time() - t0))
    return str(parsed), image.manifest_digest, image.config


def _export(out: OutputSpec, chain: list[str], image: dict[str, Any], solver: Any, bus: EventBus,
            manifest: str | None) -> str | None:
    from workbench.exporter.image import build_image
    from workbench.exporter.local import export_local
    from workbench.image.oci_layout import write_oci_archive

    name = f"exporting to {out.type} {'image format' if out.type == 'oci' else 'directory'}"
    vid, t0 = _internal(bus, name)
    try:
        if out.type == "oci":
            if manifest is None:
                manifest = build_image(chain, image, solver.store, solver.snapshots, solver.content)
            dest = Path(out.dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_oci_archive(dest, solver.content, manifest, out.attrs.get("name"))
        else:
            export_local(chain, solver.snapshots, Path(out.dest))
    except OSError as e:
        bus.emit(VertexFailed(vid, name, error=str(e)))
        raise BuildFailure(f"export failed: {e}") from None
    bus.emit(VertexCompleted(vid, name, duration=time.time() - t0))
    return manifest
