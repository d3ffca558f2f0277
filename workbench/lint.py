"""Build checks around a build: run them with what the build knows (images, .dockerignore) and report them.

`workbench build` emits each check as a BuildWarning (and fails when the `check` directive says
`error=true`); `workbench check` runs only the checks and prints them as `docker build --check` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from workbench.frontend.dockerfile.checks import CheckReport, CheckWarning, run_checks
from workbench.progress.errors import format_failure
from workbench.progress.events import BuildWarning, SourceLocation

# (ref, platform) -> (canonical ref, manifest digest, config), as the converter's resolver
Resolver = Callable[[str, str], tuple[str, str, dict[str, Any]]]


def lint(text: str, *, build_args: dict[str, str], target: str | None, ignore: Callable[[str], bool] | None,
         resolve: Resolver | None, platform: str = "linux/amd64", all_stages: bool = False) -> CheckReport:
    """Run the build checks; base images are looked up through `resolve` (errors there just skip the check)."""

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

    return run_checks(text, build_args=build_args, target=target, ignore=ignore, base_platform=base_platform,
                      base_env=base_env, target_platform=platform, all_stages=all_stages)


def as_event(w: CheckWarning, filename: str) -> BuildWarning:
    return BuildWarning(f"{w.rule}: {w.message}", SourceLocation(filename, w.start_line, w.end_line), rule=w.rule,
                        url=w.url)


def format_check_report(report: CheckReport, filename: str, text: str) -> str:
    """`docker build --check` output: a summary line, then each warning with its rule URL and the lines."""
    n = len(report.warnings)
    out = [f"Check complete, {n} warning{'s' if n != 1 else ''} {'have' if n != 1 else 'has'} been found!"
           if n else "Check complete, no warnings found."]
    for w in report.warnings:
        out.append("")
        out.append(f"WARNING: {w.rule}" + (f" - {w.url}" if w.url else ""))
        out.append(w.message)
        excerpt = format_failure("", SourceLocation(filename, w.start_line, w.end_line), "", text)
        out.append(excerpt.rsplit("\n", 1)[0])  # the excerpt without the trailing ERROR line
    if report.failed:
        out.append(f"ERROR: {report.error_message()}")
    return "\n".join(out) + "\n"
