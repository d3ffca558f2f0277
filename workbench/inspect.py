"""`workbench inspect`: the parsed Dockerfile (BuildKit's AST dump) and the LLB it becomes, for learning."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from workbench.llb.ops import Vertex


class InspectError(Exception):
    """A Dockerfile that cannot be shown; the message is formatted like a build error."""


def _read(path: Path) -> str:
    from workbench.frontend.dockerfile.source import DockerfileReadError, read_dockerfile

    try:
        return read_dockerfile(path)
    except DockerfileReadError as e:
        raise InspectError(f"ERROR: {e}") from None


def print_ast(path: Path) -> str:
    """The corpus `result` format: one `(keyword ["flags"] "args"…)` line per instruction."""
    from workbench.errors import format_failure
    from workbench.frontend.dockerfile.parser import DockerfileParseError, parse
    from workbench.progress.events import SourceLocation

    text = _read(path)
    try:
        return parse(text).dump()
    except DockerfileParseError as e:
        loc = SourceLocation(path.name, e.line, e.line) if e.line else None
        message = e.message if e.line else f"{path.name}: {e.message}"  # about the whole file: name it
        raise InspectError(format_failure(message, loc, "", text)) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def vertex_json(v: Vertex, lines: list[str]) -> str:
    """One op as a JSON line: digest, kind, fields, input digests, name and the Dockerfile lines."""
    record: dict[str, Any] = {
        "digest": v.digest,
        "op": type(v.op).__name__,
        "fields": _jsonable(asdict(v.op)),
        "inputs": [i.digest for i in v.inputs],
        "name": v.name,
    }
    if v.source is not None:
        record["source"] = {"file": v.source.filename, "start": v.source.start_line, "end": v.source.end_line,
                            "lines": lines[v.source.start_line - 1:v.source.end_line]}
    return json.dumps(record, ensure_ascii=False)


def _resolver(root: Path) -> Callable[[str, str], tuple[str, str, dict[str, Any]]]:
    """FROM images resolved as a build resolves them (ROOT's image store, else the registry), unreported."""
    from workbench.image.content import ContentStore
    from workbench.image.resolve import resolve_image
    from workbench.progress.events import EventBus

    root.mkdir(parents=True, exist_ok=True)
    content = ContentStore(root / "content")
    return lambda ref, platform: resolve_image(ref, content, EventBus(), platform)


def check_text(context: Path, dockerfile: Path, build_args: dict[str, str], target: str | None,
               root: Path, fmt: str = "text") -> tuple[str, str, bool]:
    """`workbench check`: (stdout, stderr, whether it fails): the warnings, and the error BuildKit's
    conversion stops at (with the warnings found before it), as `docker build --call=check[,format=json]`."""
    from workbench.frontend.dockerfile.convert import DockerfileError
    from workbench.frontend.dockerfile.dockerignore import load_dockerignore
    from workbench.frontend.dockerfile.linter import CheckConfig, CheckConfigError, CheckError, CheckReport
    from workbench.frontend.dockerfile.parser import DockerfileParseError
    from workbench.fsutil.patterns import IgnoreMatcher
    from workbench.lint import format_check_json, format_check_text, lint

    text = _read(dockerfile)
    resolved: dict[tuple[str, str], tuple[str, str, dict[str, Any]]] = {}
    resolve_image = _resolver(root)

    def resolve(ref: str, platform: str) -> tuple[str, str, dict[str, Any]]:
        if (ref, platform) not in resolved:
            resolved[(ref, platform)] = resolve_image(ref, platform)
        return resolved[(ref, platform)]

    patterns = load_dockerignore(context, dockerfile) if context.is_dir() else []
    matcher = IgnoreMatcher(patterns)
    error = None
    try:  # the conversion first: the checks stop where it fails, as BuildKit's ride on it
        _convert(text, dockerfile, build_args, target, patterns, resolve, raw=True)
    except DockerfileError as e:
        error = CheckError(e.message, e.start_line or 0, e.end_line or e.start_line or 0)
    try:
        report = lint(text, build_args=build_args, target=target, ignore=matcher.excluded if matcher else None,
                      resolve=resolve, all_stages=target is None, error=error)
    except CheckConfigError as e:  # the `# check=` directive (or BUILDKIT_DOCKERFILE_CHECK): name the file
        raise InspectError(f"ERROR: {dockerfile.name}: {e}") from None
    except DockerfileParseError as e:  # the parser failed: no check ran
        report = CheckReport([], CheckConfig(), error or CheckError(e.message, e.line or 0, e.line or 0))
    out, err = format_check_text(report, dockerfile.name, text)
    if fmt == "json":
        out = format_check_json(report, dockerfile.name, text)
    return out, err, bool(report.warnings or err)


def _convert(text: str, dockerfile: Path, build_args: dict[str, str], target: str | None, patterns: list[str],
             resolve: Any, raw: bool = False) -> Any:
    """The conversion's result; InspectError, formatted as a build shows it, when it fails (DockerfileError
    itself when `raw`)."""
    from workbench.errors import format_failure
    from workbench.frontend.dockerfile.convert import ConvertOptions, DockerfileError, convert
    from workbench.progress.events import SourceLocation

    try:
        return convert(text, ConvertOptions(build_args=build_args, target=target, filename=dockerfile.name,
                                            excludes=tuple(patterns)), resolve)
    except DockerfileError as e:
        if raw:
            raise
        loc = SourceLocation(dockerfile.name, e.start_line, e.end_line or e.start_line) if e.start_line else None
        raise InspectError(format_failure(e.message, loc, "", text)) from None


def llb_lines(context: Path, dockerfile: Path, build_args: dict[str, str], target: str | None,
              root: Path) -> list[str]:
    """Convert the Dockerfile (resolving base images through the registry) and list its ops, inputs first."""
    from workbench.frontend.dockerfile.dockerignore import load_dockerignore

    text = _read(dockerfile)
    resolve = _resolver(root)
    patterns = load_dockerignore(context, dockerfile) if context.is_dir() else []
    result = _convert(text, dockerfile, build_args, target, patterns, resolve)
    lines = text.splitlines()
    return [vertex_json(v, lines) for v in result.vertex.walk()]
