"""The build args BuildKit defines itself: the automatic platform ARGs, and those it keeps out of a step's env."""

from __future__ import annotations

from workbench.frontend.dockerfile.platforms import Platform

# Build args BuildKit consumes itself and never puts into a step's environment (dockerfile2llb's nonEnvArgs)
NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})


def platform_args(platform: str, build_platform: str = "linux/amd64") -> dict[str, str]:
    """BuildKit's automatic platform ARGs (TARGETPLATFORM, BUILDOS, …), available in FROM and after `ARG NAME`."""
    out: dict[str, str] = {}
    for prefix, value in (("BUILD", build_platform), ("TARGET", platform)):
        os_, _, rest = value.partition("/")
        arch, _, variant = rest.partition("/")
        out |= {f"{prefix}PLATFORM": value, f"{prefix}OS": os_, f"{prefix}ARCH": arch, f"{prefix}VARIANT": variant}
    return out


def automatic_args(build: Platform, target: Platform, target_stage: str,
                   build_args: dict[str, str]) -> dict[str, str]:
    """The global scope the linter expands FROM lines in (``defaultArgs`` with ``TARGETSTAGE``), a build arg
    replacing each."""
    pairs = [("BUILDPLATFORM", build.format()), ("BUILDOS", build.os), ("BUILDOSVERSION", ""),
             ("BUILDARCH", build.arch), ("BUILDVARIANT", build.variant), ("TARGETPLATFORM", target.format()),
             ("TARGETOS", target.os), ("TARGETOSVERSION", ""), ("TARGETARCH", target.arch),
             ("TARGETVARIANT", target.variant), ("TARGETSTAGE", target_stage)]
    return {k: build_args.get(k, v) for k, v in pairs}
