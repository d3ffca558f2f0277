"""A DAP `launch` request's arguments (Docker DX's `dockerfile` type) as a build request's parts."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.frontend.dockerfile.source import DockerfileReadError, read_dockerfile
from workbench.frontend.dockerfile.stepnames import NUMBERED

if TYPE_CHECKING:
    from workbench.debug.controller import Debugger
    from workbench.remote.address import Address
    from workbench.request import BuildRequest, OutputSpec
    from workbench.solver.session import Session


class LaunchError(Exception):
    """The launch request cannot start a build (one line saying why)."""


@dataclass
class Launch:
    dockerfile: Path
    context: Path
    target: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    session: Session | None = None
    outputs: list[OutputSpec] = field(default_factory=list)
    no_cache: bool = False
    root: Path | None = None
    stop_on_entry: bool = False
    no_debug: bool = False
    address: Address | None = None
    """`--addr`: the BuildKit daemon the build runs on (through its gateway); None: the local engine."""
    no_cache_filter: tuple[str, ...] = ()

    def request(self, debugger: Debugger | None) -> BuildRequest:
        import threading

        from workbench.request import BuildRequest, default_root
        from workbench.solver.session import Session

        return BuildRequest(context=self.context, dockerfile=self.dockerfile, build_args=self.build_args,
                            target=self.target, outputs=self.outputs, no_cache=self.no_cache,
                            no_cache_filter=self.no_cache_filter,
                            root=self.root or default_root(), session=self.session or Session(),
                            cancel=threading.Event(), debugger=debugger)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # type: ignore[override]
        raise LaunchError(f"launch `args`: {message}")


def parse_launch(arguments: dict[str, Any], cwd: Path) -> Launch:
    """The launch's build, or LaunchError naming the bad attribute or flag."""
    from workbench.build_options import add_build_arguments, no_cache_filter
    from workbench.request import OutputSpecError, parse_output
    from workbench.solver.session import Session, SessionError, parse_allow, parse_secret, parse_ssh

    extra = arguments.get("args", [])
    if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
        raise LaunchError("launch `args`: expected a list of strings (build flags)")
    p = _Parser(prog="workbench dap", add_help=False)
    add_build_arguments(p, session=True, outputs=True, no_cache=True)
    p.add_argument("--platform")
    p.add_argument("--addr")
    p.add_argument("--frontend")
    ns = p.parse_args(extra)
    if ns.context != ".":
        raise LaunchError(f"launch `args`: unexpected argument {ns.context!r} (the context is `contextPath`)")
    address = _address(ns.addr, ns.frontend)
    if ns.platform:
        raise LaunchError(f"launch `args`: --platform {ns.platform}: the local engine builds for its own platform")
    for key in ("dockerfile", "contextPath", "target"):
        if arguments.get(key) is not None and not isinstance(arguments[key], str):
            raise LaunchError(f"launch `{key}`: expected a string")
    dockerfile = arguments.get("dockerfile") or ns.dockerfile
    context = arguments.get("contextPath")
    if dockerfile:
        df = (cwd / dockerfile).resolve()
        ctx = (cwd / context).resolve() if context else df.parent
    else:
        ctx = (cwd / (context or ".")).resolve()
        df = ctx / "Dockerfile"
    if not df.exists():
        raise LaunchError(f"launch `dockerfile`: {df}: no such file")
    try:
        read_dockerfile(df)  # a FIFO, device or huge file is refused here, not read later
    except DockerfileReadError as e:
        raise LaunchError(f"launch `dockerfile`: {e}") from None
    if not ctx.is_dir():
        raise LaunchError(f"launch `contextPath`: {ctx}: not a directory")
    try:
        build_args = {}
        for item in ns.build_arg:
            key, eq, value = item.partition("=")
            if not key or not eq:
                raise ValueError(f"--build-arg {item!r}: expected KEY=VALUE")
            build_args[key] = value
        secrets = [parse_secret(v) for v in ns.secret]
        session = Session(secrets={s.id: s for s in secrets}, ssh=dict(parse_ssh(v) for v in ns.ssh),
                          entitlements=frozenset(parse_allow(v) for v in ns.allow))
        outputs = [parse_output(o) for o in ns.output]
    except (ValueError, SessionError, OutputSpecError) as e:
        raise LaunchError(f"launch `args`: {e}") from None
    return Launch(df, ctx, arguments.get("target") or ns.target, build_args, session, outputs, ns.no_cache,
                  Path(ns.root).resolve() if ns.root else None, bool(arguments.get("stopOnEntry")),
                  bool(arguments.get("noDebug")), address, no_cache_filter(ns))


def _address(addr: str | None, frontend: str | None) -> Address | None:
    from workbench.remote.address import AddressError, parse_address

    if frontend:
        raise LaunchError(f"launch `args`: --frontend {frontend}: breakpoints need workbench's own build graph "
                          "(the daemon's frontend tells no steps to stop before): leave it out")
    if not addr:
        return None
    try:
        return parse_address(addr)
    except AddressError as e:
        raise LaunchError(f"launch `args`: {e}") from None


def breakpoint_lines(dockerfile: Path) -> dict[int, int | str]:
    """Each line a breakpoint can be set on → the line it stops at (an instruction's first line), or the
    message for a line where it cannot stop (a FROM scratch stage without steps)."""
    from workbench.debug.stepless import stepless_froms
    from workbench.frontend.dockerfile.parser import DockerfileParseError, parse

    try:
        text = read_dockerfile(dockerfile)  # only a regular file, capped: never a FIFO or /dev/zero
        nodes = parse(text).children
    except (DockerfileReadError, DockerfileParseError, ValueError):
        return {}
    out: dict[int, int | str] = {}
    for node in nodes:
        if node.keyword in NUMBERED or node.keyword == "from":
            for line in range(node.start_line, node.end_line + 1):
                out[line] = node.start_line
    for line, target in stepless_froms(text).items():
        out[line] = target.first_step if target.first_step is not None else target.note(line)
    return out
