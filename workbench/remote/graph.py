"""The local Dockerfile frontend for a remote build that sends our own graph: the same parse, checks (warnings on
the bus) and conversion as a local build, base images resolved through ROOT's image store or the registry.
The daemon then runs the marshalled graph (workbench.remote.marshal); nothing of the Dockerfile goes to it.
Base images are resolved to a digest (the tag checked on the registry each build, as BuildKit does) with their
manifest and config only: the daemon pulls the layers, so they are never downloaded here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.progress.events import EventBus, SourceLocation
from workbench.request import BuildFailure, BuildRequest


@dataclass
class LocalGraph:
    """What the local frontend made of the request: the Dockerfile's text, the target vertex, the image config."""

    text: str
    vertex: Any
    image: dict[str, Any]


def convert_request(req: BuildRequest, bus: EventBus) -> LocalGraph:
    """Parse, check and convert `req`'s Dockerfile; BuildFailure (located) as a local build fails."""
    from workbench.frontend.dockerfile.convert import ConvertOptions, DockerfileError, convert
    from workbench.frontend.dockerfile.dockerignore import load_dockerignore
    from workbench.frontend.dockerfile.linter import CheckConfigError
    from workbench.frontend.dockerfile.parser import DockerfileParseError, parse
    from workbench.frontend.dockerfile.shell import ShellExpansionError
    from workbench.frontend.dockerfile.source import DockerfileReadError, read_dockerfile
    from workbench.fsutil.patterns import IgnoreMatcher
    from workbench.image.content import ContentStore
    from workbench.image.resolve import resolve_image
    from workbench.lint import as_event, lint
    from workbench.state_root import RootError, prepare_root

    filename = req.dockerfile.name
    try:
        text = read_dockerfile(req.dockerfile)
    except DockerfileReadError as e:
        raise BuildFailure(str(e)) from None
    if not req.context.is_dir():
        raise BuildFailure(f"build context {req.context} is not a directory")
    try:
        prepare_root(req.root)
    except RootError as e:
        raise BuildFailure(str(e)) from None
    content = ContentStore(req.root / "content")
    resolved: dict[tuple[str, str], tuple[str, str, dict[str, Any]]] = {}

    def resolve(ref: str, platform: str) -> tuple[str, str, dict[str, Any]]:
        if (ref, platform) not in resolved:
            resolved[(ref, platform)] = resolve_image(ref, content, bus, platform)
        return resolved[(ref, platform)]

    patterns = load_dockerignore(req.context, req.dockerfile)
    matcher = IgnoreMatcher(patterns)
    parsed = None
    try:
        parsed = parse(text)
        report = lint(text, build_args=req.build_args, target=req.target,
                      ignore=matcher.excluded if matcher else None, resolve=resolve, parsed=parsed)
    except (DockerfileParseError, ShellExpansionError):
        report = None  # the conversion reports it, located
    except CheckConfigError as e:
        raise BuildFailure(str(e), dockerfile_text=text) from None
    if report is not None:
        for w in report.warnings:
            bus.emit(as_event(w, filename))
        if report.error is not None and report.error.parse_phase:
            err = report.error
            loc = SourceLocation(filename, err.start_line, err.end_line or err.start_line) if err.start_line else None
            raise BuildFailure(err.message, loc, dockerfile_text=text)
        if report.failed:
            first = report.warnings[0]
            raise BuildFailure(report.error_message(), SourceLocation(filename, first.start_line, first.end_line),
                               dockerfile_text=text)
    try:
        conv = convert(text, ConvertOptions(build_args=req.build_args, target=req.target, filename=filename,
                                            no_cache_stages=req.no_cache_filter, excludes=tuple(patterns)),
                       resolve, parsed)
    except DockerfileError as e:
        loc = SourceLocation(filename, e.start_line, e.end_line or e.start_line) if e.start_line else None
        raise BuildFailure(e.message, loc, dockerfile_text=text) from None
    return LocalGraph(text, conv.vertex, conv.image)

