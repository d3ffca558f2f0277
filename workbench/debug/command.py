"""`workbench debug [CONTEXT] -f …`: the build request from the command line, then the REPL."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.engine import Engine


def add_parser(sub: Any) -> None:
    from workbench.build_options import add_build_arguments

    d = sub.add_parser("debug", help="build with breakpoints and shells inside steps (a line REPL)")
    add_build_arguments(d, session=True, outputs=True, no_cache=True)
    d.add_argument("--break", dest="breaks", action="append", default=[], metavar="LINE|STAGE",
                   help="a breakpoint (repeatable); with any, the build starts at once; with --addr, --invoke "
                        "CMD runs before that step")
    d.add_argument("--no-break-on-error", action="store_true", help="do not stop after a failed step")
    from workbench.remote.address import add_address_arguments

    add_address_arguments(d)  # --addr / $BUILDKIT_HOST: build on that daemon, then --invoke CMD in the result
    d.add_argument("--frontend", metavar="NAME",
                   help="with --addr: the daemon's own frontend to build with (dockerfile.v0) instead of "
                        "workbench's graph")
    d.add_argument("--invoke", metavar="CMD",
                   help="with --addr: the command to run in the build's result (default: sh), as buildx debug")


def main_debug(args: argparse.Namespace, engine: Engine) -> int:
    """Run `workbench debug`; its builds run on `engine`."""
    from workbench.build_options import no_cache_filter
    from workbench.debug.controller import Breakpoint, Debugger
    from workbench.debug.repl import DebugRepl, run_repl
    from workbench.request import BuildRequest, OutputSpecError, default_root, parse_output
    from workbench.solver.session import Session, SessionError, parse_allow, parse_secret, parse_ssh

    try:
        build_args = dict(_kv(a) for a in args.build_arg)
        secrets = [parse_secret(v) for v in args.secret]
        session = Session(secrets={s.id: s for s in secrets}, ssh=dict(parse_ssh(v) for v in args.ssh),
                          entitlements=frozenset(parse_allow(v) for v in args.allow))
        outputs = [parse_output(o) for o in args.output]
    except (ValueError, SessionError, OutputSpecError) as e:
        print(f"workbench: error: {e}", file=sys.stderr)
        return 2
    context = Path(args.context)
    dockerfile = Path(args.dockerfile) if args.dockerfile else context / "Dockerfile"
    root = Path(args.root) if args.root else default_root()

    def make_request(debugger: Debugger) -> BuildRequest:
        import threading

        return BuildRequest(context=context, dockerfile=dockerfile, build_args=build_args, target=args.target,
                            outputs=outputs, no_cache=args.no_cache, no_cache_filter=no_cache_filter(args), root=root,
                            session=session, cancel=threading.Event(), debugger=debugger)

    from workbench.remote.address import AddressError, address_from_args

    try:
        address = address_from_args(args)
    except AddressError as e:
        print(f"workbench: error: {e}", file=sys.stderr)
        return 2
    if address is not None:
        from workbench.debug.remote import main_remote_debug

        return main_remote_debug(args, address, make_request(Debugger()))
    if args.frontend or args.invoke:
        print(f"workbench: error: {'--frontend' if args.frontend else '--invoke'} needs a BuildKit daemon: pass "
              "--addr ADDR (or set BUILDKIT_HOST)", file=sys.stderr)
        return 2
    breaks = [Breakpoint(line=int(b)) if b.isdigit() else Breakpoint(stage=b) for b in args.breaks]
    repl = DebugRepl(make_request, sys.stdout, breaks, break_on_error=not args.no_break_on_error,
                     engine=engine, dockerfile=dockerfile)
    if not breaks:
        print(f"debugging {dockerfile}: set breakpoints (`break LINE`), then `continue`; `help` lists commands")
    return run_repl(repl, root / "debug-history", start=bool(breaks))


def _kv(item: str) -> tuple[str, str]:
    key, eq, value = item.partition("=")
    if not key or not eq:
        raise ValueError(f"--build-arg {item!r}: expected KEY=VALUE")
    return key, value
