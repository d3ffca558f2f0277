"""Build checks around a build: run them with what the build knows (images, .dockerignore) and report them.

`workbench build` emits each check as a BuildWarning (and fails when the `check` directive says
`error=true`); `workbench check` runs only the checks and prints them as `docker build --call=check` does
(text, or the JSON of BuildKit's `frontend.lint` subrequest with `--format json`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from workbench.frontend.dockerfile.checks import run_checks
from workbench.frontend.dockerfile.linter import CheckError, CheckReport, CheckWarning
from workbench.frontend.dockerfile.parser import ParseResult
from workbench.progress.events import BuildWarning, SourceLocation
from workbench.progress.text import printable

# (ref, platform) -> (canonical ref, manifest digest, config), as the converter's resolver
Resolver = Callable[[str, str], tuple[str, str, dict[str, Any]]]


def lint(text: str, *, build_args: dict[str, str], target: str | None, ignore: Callable[[str], bool] | None,
         resolve: Resolver | None, platform: str = "linux/amd64", all_stages: bool = False,
         error: CheckError | None = None, parsed: ParseResult | None = None) -> CheckReport:
    """Run the build checks; base images are looked up through `resolve` (errors there just skip the check).

    `error` is the conversion's error when it failed: the checks stop where BuildKit's stop (see run_checks);
    `parsed` is `text` already parsed, shared with the conversion.
    """

    def config(ref: str) -> dict[str, Any] | None:
        if resolve is None or ref.lower() == "scratch":
            return None
        try:
            return resolve(ref, platform)[2]
        except Exception:  # an unreachable image fails the build later, with its own clear error
            return None

    def base_platform(ref: str) -> str | None:
        cfg = config(ref)
        if not cfg or not cfg.get("os"):
            return None
        variant = f"/{cfg['variant']}" if cfg.get("variant") else ""
        return f"{cfg['os']}/{cfg.get('architecture', '')}{variant}"

    def base_env(ref: str) -> Mapping[str, str] | None:
        cfg = config(ref)
        if cfg is None:
            return None
        env = (cfg.get("config") or {}).get("Env") or []
        return dict(e.partition("=")[::2] for e in env)

    def base_shell(ref: str) -> bool:
        cfg = config(ref)
        return bool(cfg and (cfg.get("config") or {}).get("Shell"))

    return run_checks(text, build_args=build_args, target=target, ignore=ignore, base_platform=base_platform,
                      base_env=base_env, target_platform=platform, all_stages=all_stages, base_shell=base_shell,
                      error=error, parsed=parsed)


def as_event(w: CheckWarning, filename: str) -> BuildWarning:
    return BuildWarning(f"{w.rule}: {w.message}", SourceLocation(filename, w.start_line, w.end_line), rule=w.rule,
                        url=w.url)


def source_excerpt(filename: str, text: str, start: int, end: int) -> str:
    """BuildKit's source excerpt (``errdefs.Source.Print``): `FILE:START`, then the lines around START-END.

    One line before and after a range, two around a single line; the text after a final newline is a last,
    empty line (as BuildKit splits the file). Lines are shown as written, control characters escaped.
    """
    lines = text.split("\n")
    if start < 1 or start > len(lines):
        return ""
    first, last = start, min(max(end, start), len(lines))
    pad, p = (4 if last == first else 2), 0
    while p < pad:
        if first > 1:
            first -= 1
            p += 1
        if last != len(lines):
            last += 1
            p += 1
        p += 1
    out = [f"{filename}:{start}", "-" * 20]
    for i in range(first, last + 1):
        mark = ">>>" if start <= i <= max(end, start) else "   "
        line = lines[i - 1]
        cr = "\r" if line.endswith("\r") else ""  # a CRLF file's lines end as BuildKit prints them
        out.append(f" {i:3d} | {mark} {printable(line[:len(line) - len(cr)], keep=chr(9))}{cr}")
    out.append("-" * 20)
    return "\n".join(out) + "\n"


def _error(report: CheckReport) -> CheckError | None:
    """The error `check` fails with: the conversion's, else `error=true` with warnings (BuildKit's lint.Error)."""
    if report.error is None and report.failed:
        return CheckError(report.error_message())
    return report.error


def format_check_text(report: CheckReport, filename: str, text: str) -> tuple[str, str]:
    """(stdout, stderr) of `docker build --call=check`: a summary line, each warning with its rule URL and the
    lines (in line order), then the error that stopped the checks, if any, with its lines."""
    out: list[str] = []
    n = len(report.warnings)
    error = _error(report)
    if n:
        out.append(f"Check complete, {n} warning{'s have' if n != 1 else ' has'} been found!\n")
    elif error is None:
        out.append("Check complete, no warnings found.\n")
    for w in sorted(report.warnings, key=lambda w: w.start_line):
        out.append(f"\nWARNING: {w.rule}" + (f" - {w.url}" if w.url else "") + f"\n{printable(w.message)}\n")
        out.append(source_excerpt(filename, text, w.start_line, w.end_line))
    if error is None:
        return "".join(out), ""
    if n:
        out.append("\n")
    excerpt = source_excerpt(filename, text, error.start_line, error.end_line) if error.start_line else ""
    # the excerpt first and the ERROR line last, as a failed build prints them
    return "".join(out), f"{excerpt}ERROR: {printable(error.message, keep=chr(9) + chr(10))}\n"


def _go_json(value: Any) -> str:
    """`json.MarshalIndent(value, "", "  ")` as Go writes it (HTML characters and U+2028/9 escaped)."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _location(start: int, end: int) -> dict[str, Any]:
    if not start:
        return {}
    return {"ranges": [{"start": {"line": start}, "end": {"line": end or start}}]}


def format_check_json(report: CheckReport, filename: str, text: str) -> str:
    """BuildKit's `frontend.lint` result (`docker build --call=check,format=json`): warnings in the order found,
    the Dockerfile as the one source, and the error that stopped the checks as `buildError`.

    Zero values are left out as Go's `omitempty` does; the source's LLB `definition` is not given.
    """
    warnings = [{k: v for k, v in (("ruleName", w.rule), ("description", w.description), ("url", w.url),
                                   ("detail", w.message), ("location", _location(w.start_line, w.end_line))) if v}
                for w in report.warnings]
    data = base64.b64encode(text.encode("utf-8", "surrogateescape")).decode()
    result: dict[str, Any] = {"warnings": warnings or None,
                              "sources": [{"filename": filename, "data": data, "language": "Dockerfile"}]}
    error = _error(report)
    if error is not None:
        result["buildError"] = {"message": error.message, "location": _location(error.start_line, error.end_line)}
    return _go_json(result) + "\n"
