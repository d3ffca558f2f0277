"""`workbench tui`: check the arguments and the terminal, then run the app on a live build."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.engine import Engine


def add_arguments(p: argparse.ArgumentParser) -> None:
    from workbench.build_options import add_build_arguments

    add_build_arguments(p, session=True, devices=True)
    p.add_argument("--theme", help="colour theme: a file name (without .toml) in themes/ (default: the last used)")
    p.add_argument("--no-watch", action="store_true", help="do not rebuild when inputs change")
    p.add_argument("--no-break-on-error", action="store_true",
                   help="do not hold a failed step for a look inside (break on error is on by default)")
    from workbench.remote.address import add_address_arguments

    add_address_arguments(p)  # --addr / $BUILDKIT_HOST and --tls*: the builds run on that BuildKit daemon
    p.add_argument("--frontend", metavar="NAME",
                   help="with --addr: build with the daemon's own frontend (dockerfile.v0) instead of sending "
                        "workbench's graph")


def run(args: argparse.Namespace, build_args: dict[str, str]) -> int:
    """Returns the exit status; refuses (2) without a terminal or with bad arguments."""
    if not sys.stdout.isatty():
        print("workbench tui: error: stdout is not a terminal; the TUI needs one "
              "(use `workbench build --progress plain` for logs)", file=sys.stderr)
        return 2
    from workbench.request import default_root
    from workbench.solver.session import Session, SessionError, parse_allow, parse_secret, parse_ssh
    from workbench.tui.themes import available_themes

    context = Path(args.context)
    dockerfile = Path(args.dockerfile) if args.dockerfile else context / "Dockerfile"
    if not dockerfile.is_file():
        print(f"workbench tui: error: no Dockerfile at {dockerfile} (give one with -f)", file=sys.stderr)
        return 2
    if args.theme is not None and args.theme not in available_themes():
        names = ", ".join(available_themes()) or "none found"
        print(f"workbench tui: error: --theme {args.theme!r}: no such theme (available: {names})", file=sys.stderr)
        return 2
    try:
        secrets = [parse_secret(v) for v in args.secret]
        session = Session(secrets={s.id: s for s in secrets}, ssh=dict(parse_ssh(v) for v in args.ssh),
                          entitlements=frozenset(parse_allow(v) for v in args.allow))
    except (ValueError, SessionError) as e:
        print(f"workbench tui: error: {e}", file=sys.stderr)
        return 2

    try:
        engine, remote = _engine(args)
    except ValueError as e:
        print(f"workbench tui: error: {e}", file=sys.stderr)
        return 2
    from workbench.tui.app import WorkbenchApp
    from workbench.tui.source import LiveBuildSource

    source = LiveBuildSource(context=context, dockerfile=dockerfile,
                             root=Path(args.root) if args.root else default_root(), build_args=build_args,
                             target=args.target, session=session, cdi_spec_dirs=args.cdi_spec_dir,
                             config=Path(args.config) if args.config else None, engine=engine,
                             debuggable=not remote, remote=remote)
    from workbench.tui.widgets.devices_panel import known_devices

    devices = known_devices(args.cdi_spec_dir, source.config)
    app = WorkbenchApp(source, theme=args.theme, watch=not args.no_watch, devices=devices,
                       break_on_error=not args.no_break_on_error)
    try:
        code = app.run()
    finally:
        app.stop()
    return code or 0


def _engine(args: argparse.Namespace) -> tuple[Engine, str]:
    """The engine of `--addr` / BUILDKIT_HOST (builds recorded), and how the UI names its daemon ("": the local
    engine); ValueError (one line) for flags that do not go together."""
    from workbench.history.recorder import recording_engine
    from workbench.remote.address import address_from_args

    address = address_from_args(args)  # AddressError is a ValueError
    if address is None:
        if args.frontend:
            raise ValueError("--frontend needs a BuildKit daemon: pass --addr ADDR (or set BUILDKIT_HOST)")
        return recording_engine(), ""
    from workbench.history.recorder import Recording
    from workbench.remote.engine import DOCKERFILE_FRONTEND, RemoteEngine

    if args.frontend and args.frontend != DOCKERFILE_FRONTEND:
        raise ValueError(f"--frontend {args.frontend}: the daemon's frontend can only be {DOCKERFILE_FRONTEND}; "
                         f"leave --frontend out to send workbench's own build graph")
    engine = RemoteEngine(address, args.frontend or "", recorder=Recording.start)
    return engine, engine.daemon
