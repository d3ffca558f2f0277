"""The `workbench` command line (buildctl / docker buildx names). Imports stay lazy to keep start-up fast."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from workbench.build_options import ROOT_HELP, add_build_arguments, add_device_arguments, no_cache_filter


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Build container images from Dockerfiles.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_build(sub)
    _add_devices(sub)
    from workbench.tui.launch import add_arguments as add_tui_arguments

    add_tui_arguments(sub.add_parser("tui", help="the interactive workbench: live build graph, logs, cache, editor "
                                                 "(also plain `workbench` in a folder with a Dockerfile)"))
    _add_disk(sub)
    dr = sub.add_parser("doctor", help="check the state root, runc and the kernel; say how to fix each problem")
    dr.add_argument("--root", help=ROOT_HELP)
    dr.add_argument("--fix", action="store_true", help="repair what is safe (modes, a corrupt index, orphans)")
    dr.add_argument("--user", help="as root: check the rootless set-up of this user")
    _add_gha_server(sub)
    _add_check(sub)
    _add_inspect(sub)
    from workbench.history.cli import add_parsers as add_history_parsers

    add_history_parsers(sub)  # history ls|show|logs|rm|export|import|trace|diff, replay
    from workbench.image.cli import add_parsers as add_image_parsers

    add_image_parsers(sub)  # image ls|rm|tag|load|save|import|pull|push
    from workbench.debug.command import add_parser as add_debug_parser

    add_debug_parser(sub)
    from workbench.dap.cli import add_parser as add_dap_parser

    add_dap_parser(sub)
    from workbench.remote.cli import add_parser as add_builders_parser

    add_builders_parser(sub)  # builders: the BuildKit daemon of --addr / $BUILDKIT_HOST, or the local engine
    srv = sub.add_parser("server", help="the resident build server that keeps the engine imported")
    srv.add_argument("action", choices=["stop", "status"])
    return parser


def _add_build(sub: Any) -> None:
    b = sub.add_parser("build", help="build an image from a Dockerfile")
    add_build_arguments(b, session=True, devices=True, outputs=True, no_cache=True)
    b.add_argument("-t", "--tag", action="append", default=[], metavar="REF",
                   help="name the image in the local image store (= --output type=image,name=REF)")
    b.add_argument("--push", action="store_true", help="push the image (= --output type=image,push=true)")
    b.add_argument("--metadata-file", help="write the build result metadata (image digest, ...) to this file")
    b.add_argument("--watch", action="store_true",
                   help="rebuild when the Dockerfile or a context file (.dockerignore honoured) changes")
    b.add_argument("--progress", default="auto", choices=["auto", "plain", "tty", "rawjson"])
    b.add_argument("--cache-to", action="append", default=[], metavar="SPEC",
                   help="export build cache: type=gha[,url_v2=URL,token=T,scope=S,mode=max,ignore-error=true] | "
                        "type=local,dest=DIR")
    b.add_argument("--cache-from", action="append", default=[], metavar="SPEC",
                   help="import build cache: type=gha[,url_v2=URL,token=T,scope=S] | type=local,src=DIR")
    from workbench.remote.address import add_address_arguments

    add_address_arguments(b)  # --addr / $BUILDKIT_HOST and --tls*: build on that BuildKit daemon
    b.add_argument("--frontend", metavar="NAME",
                   help="with --addr: the daemon's own frontend to build with (dockerfile.v0)")


def _add_devices(sub: Any) -> None:
    dv = sub.add_parser("devices", help="list the CDI devices builds can request (like buildctl debug workers -v)")
    add_device_arguments(dv)
    dv.add_argument("--format", choices=["text", "json"], default="text")


def _add_disk(sub: Any) -> None:
    du = sub.add_parser("du", help="disk usage of the build cache (like docker buildx du)")
    du.add_argument("--verbose", action="store_true", help="one block per record")
    du.add_argument("--root", help=ROOT_HELP)
    from workbench.remote.address import add_address_arguments

    add_address_arguments(du)  # --addr / $BUILDKIT_HOST: the daemon's cache instead of the local root's
    pr = sub.add_parser("prune", help="remove build cache (like docker buildx prune)")
    pr.add_argument("--all", "-a", action="store_true", help="include internal records (pulled base layers)")
    pr.add_argument("--keep-storage", metavar="SIZE", help="remove least recently used records down to SIZE")
    pr.add_argument("--filter", action="append", default=[], metavar="until=DURATION",
                    help="only records unused for longer than DURATION (e.g. 24h)")
    pr.add_argument("--verbose", action="store_true")
    pr.add_argument("--root", help=ROOT_HELP)
    add_address_arguments(pr)


def _add_gha_server(sub: Any) -> None:
    g = sub.add_parser("gha-server", help="a local emulator of the GitHub Actions cache service (v1 and v2)")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    g.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    g.add_argument("--data", help="where blobs are kept (default: a temporary directory)")
    g.add_argument("--scope", default="refs/heads/main", help="the token's writable cache scope")
    g.add_argument("--read-scope", action="append", default=[], help="another scope the token may read")
    g.add_argument("--token-ttl", type=float, default=6 * 3600, help="token lifetime in seconds")
    g.add_argument("--azurite", default="", metavar="URL",
                   help="keep blobs in azurite's blob service at URL (e.g. http://127.0.0.1:10000) instead of here")
    g.add_argument("--fault", action="append", default=[],
                   metavar="throttle=N|fail-writes|truncate-downloads|expire-urls|slow-uploads=SECONDS",
                   help="inject faults (for tests)")
    g.add_argument("--reservation-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="an upload reservation idle this long (e.g. its build was killed) can be taken over "
                        "by a new reservation of its key (default: 60)")


_METADATA_ROOT_HELP = "state directory, for the image metadata cache"


def _add_check(sub: Any) -> None:
    c = sub.add_parser("check", help="run the Dockerfile build checks only (like docker build --check)")
    add_build_arguments(c, target_help="check only the stages this target needs", root_help=_METADATA_ROOT_HELP)
    c.add_argument("--format", choices=("text", "json"), default="text",
                   help="text, or BuildKit's JSON (as docker build --call=check,format=json)")
    from workbench.remote.address import add_address_arguments

    add_address_arguments(c)  # accepted as on build: the checks are static and run here, whatever the daemon


def _add_inspect(sub: Any) -> None:
    i = sub.add_parser("inspect", help="show how workbench sees a Dockerfile (for learning and debugging)")
    isub = i.add_subparsers(dest="what", required=True)
    ast = isub.add_parser("ast", help="the parsed Dockerfile, in BuildKit's parser dump format")
    ast.add_argument("file", help="the Dockerfile")
    llb = isub.add_parser("llb", help="the build graph: one JSON line per op, inputs first")
    add_build_arguments(llb, target_help="the stage to show", root_help=_METADATA_ROOT_HELP)
    why = isub.add_parser("why", help="why each step of the last build of a Dockerfile hit or missed the cache")
    add_build_arguments(why, build_args=False)
    graph = isub.add_parser("graph", help="the build graph as a picture, with the last recorded build's times")
    add_build_arguments(graph, target_help="the stage to show", root_help="state directory (image metadata, history)")
    graph.add_argument("--format", choices=("text", "dot", "svg", "mermaid"), default="text",
                       help="text lanes, Graphviz DOT, SVG (runs Graphviz's dot) or Mermaid")
    from workbench.imagelayers.cli import add_parser as add_layers_parser

    add_layers_parser(isub)  # inspect layers [CONTEXT|IMAGE]


def _server(args: argparse.Namespace) -> int:
    """`workbench server stop|status` (builds start a server on their own; WORKBENCH_SERVER=0 disables it)."""
    import os
    import time

    from workbench import client, wire

    path = client.socket_path()
    folder = os.path.dirname(path)
    if not client.safe_dir(folder):  # never talk to (or stop for) another user's server
        print(f"workbench: error: the build server's folder {folder} is not a 0700 directory of uid "
              f"{os.geteuid()}: not using it", file=sys.stderr)
        return 1
    try:
        sock = client.connect(path)
    except OSError:
        print(f"no build server is running ({path})")
        return 0 if args.action == "stop" else 1
    try:
        if args.action == "status":
            print(f"a build server is listening on {path}")
            return 0
        wire.send_message(sock, {"stop": True})
        reply, _ = wire.recv_message(sock)
    except (OSError, ValueError):
        reply = None
    finally:
        sock.close()
    if not reply:
        print("the build server did not answer")
        return 0
    from workbench.snapshot.scratch import pid_alive

    pid = int(reply["stopped"])
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:  # gone, so that the next build starts a new one
        time.sleep(0.02)
    print(f"stopped the build server (pid {pid})")
    return 0


def _usage_error(message: str) -> int:
    print(f"workbench: error: {message}", file=sys.stderr)
    return 2


def _build(args: argparse.Namespace) -> int:
    from workbench.errors import format_failure
    from workbench.progress.events import EventBus
    from workbench.progress.printers import make_printer
    from workbench.request import BuildFailure, BuildRequest, OutputSpecError, default_root, parse_output
    from workbench.solver.session import Session, SessionError, parse_allow, parse_secret, parse_ssh_flags

    try:
        build_args = _build_args(args.build_arg)
        secrets = [parse_secret(v) for v in args.secret]
        session = Session(secrets={s.id: s for s in secrets}, ssh=parse_ssh_flags(args.ssh),
                          entitlements=frozenset(parse_allow(v) for v in args.allow))
    except (ValueError, SessionError) as e:
        return _usage_error(str(e))
    if bad := _spec_dir_error(args.cdi_spec_dir):
        return _usage_error(bad)
    try:
        outputs = [parse_output(o) for o in args.output]
        if args.tag or args.push:
            from workbench.exporter.outputs import tag_output

            outputs = tag_output(outputs, args.tag, args.push)
    except OutputSpecError as e:
        return _usage_error(str(e))
    if args.cache_to or args.cache_from:
        from workbench.cache.remote.spec import CacheSpecError, parse_cache_spec

        try:
            cache_to = [parse_cache_spec(c, export=True) for c in args.cache_to]
            cache_from = [parse_cache_spec(c, export=False) for c in args.cache_from]
        except CacheSpecError as e:
            return _usage_error(str(e))
    else:
        cache_to, cache_from = [], []
    context = Path(args.context)
    dockerfile = Path(args.dockerfile) if args.dockerfile else context / "Dockerfile"
    request = BuildRequest(context=context, dockerfile=dockerfile, build_args=build_args, target=args.target,
                           outputs=outputs, no_cache=args.no_cache,
                           no_cache_filter=no_cache_filter(args),
                           root=Path(args.root) if args.root else default_root(), session=session,
                           cache_to=cache_to, cache_from=cache_from, cdi_spec_dirs=args.cdi_spec_dir,
                           config=Path(args.config) if args.config else None)
    from workbench.history.recorder import recording_engine
    from workbench.remote.address import AddressError, address_from_args

    try:
        address = address_from_args(args)
    except AddressError as e:
        return _usage_error(str(e))
    engine: Any = recording_engine()
    if address is not None:
        if problem := _remote_problem(args):
            return _usage_error(problem)
        from workbench.history.recorder import Recording
        from workbench.remote.engine import RemoteEngine

        engine = RemoteEngine(address, args.frontend, recorder=Recording.start)
    elif args.frontend:
        return _usage_error("--frontend needs a BuildKit daemon: pass --addr ADDR (or set BUILDKIT_HOST)")
    if args.watch:
        from dataclasses import replace

        from workbench.watch import run_watch

        return run_watch(lambda cancel: replace(request, cancel=cancel), context, dockerfile, engine=engine)
    from workbench.diskfull import DiskFullWatch

    bus = EventBus()
    bus.subscribe(make_printer(args.progress))
    disk = DiskFullWatch(request.root)  # a full disk under the root is told in one line, whatever hit it
    bus.subscribe(disk)
    try:
        result = engine.build(request, bus)
        if args.metadata_file:
            from workbench.exporter.outputs import write_metadata_file

            write_metadata_file(Path(args.metadata_file), result)
    except BuildFailure as e:
        full = disk.message_for(e)
        print(f"ERROR: {full}" if full else format_failure(e.message, e.location, "", e.dockerfile_text),
              file=sys.stderr)
        from workbench.rootless.userns import failure_hint

        if (hint := failure_hint()) and not e.message.startswith("rootless:"):  # not said twice
            print(hint, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ERROR: build canceled", file=sys.stderr)
        return 130
    except Exception as e:
        full = disk.message_for(e)
        if full is None:
            raise
        print(f"ERROR: {full}", file=sys.stderr)
        return 1
    return 0


def _remote_problem(args: argparse.Namespace) -> str:
    """Why this build cannot go to a remote daemon as asked ("" when it can)."""
    from workbench.remote.engine import DOCKERFILE_FRONTEND

    if args.frontend and args.frontend != DOCKERFILE_FRONTEND:
        return (f"--frontend {args.frontend}: the daemon's frontend can only be {DOCKERFILE_FRONTEND}; leave "
                f"--frontend out to send workbench's own build graph")
    return ""


def _prune_until(args: argparse.Namespace) -> str | None:
    """The DURATION of `--filter until=DURATION` (None without one); ValueError for another kind of filter."""
    until = None
    for f in args.filter:
        key, eq, value = f.partition("=")
        if key != "until" or not eq:
            raise ValueError(f"--filter {f!r}: only until=DURATION is supported")
        until = value
    return until


def _remote_disk(args: argparse.Namespace, address: Any) -> int:
    """`workbench du|prune --addr A`: the daemon's build cache (DiskUsage / Prune)."""
    from workbench.gc.units import parse_duration, parse_size
    from workbench.remote.control import ControlError
    from workbench.remote.disk import remote_du, remote_prune

    try:
        if args.command == "du":
            sys.stdout.write(remote_du(address, args.verbose))
            return 0
        until = _prune_until(args)
        sys.stdout.write(remote_prune(address, all=args.all, verbose=args.verbose,
                                      keep_storage=parse_size(args.keep_storage) if args.keep_storage else None,
                                      until=parse_duration(until) if until else None))
    except ValueError as e:
        return _usage_error(str(e))
    except ControlError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return 0


def _devices(args: argparse.Namespace) -> int:
    """`workbench devices`: the CDI devices of the spec dirs; broken spec files are reported on stderr."""
    from workbench.cdi import ConfigError, config_path, load_cdi_config
    from workbench.cdi.listing import format_devices

    if bad := _spec_dir_error(args.cdi_spec_dir):
        return _usage_error(bad)
    try:
        config = load_cdi_config(Path(args.config) if args.config else config_path(), args.cdi_spec_dir)
    except ConfigError as e:
        return _usage_error(str(e))
    text, errors = format_devices(config, args.format == "json")
    for line in errors:
        print(f"WARNING: {line}", file=sys.stderr)
    sys.stdout.write(text)
    return 0


def _spec_dir_error(dirs: list[str]) -> str:
    """What is wrong with a `--cdi-spec-dir` value (a missing dir is fine: it may be created later)."""
    for d in dirs:
        if Path(d).exists() and not Path(d).is_dir():
            return f"--cdi-spec-dir {d}: not a directory"
    return ""


def _build_args(items: list[str]) -> dict[str, str]:
    """`--build-arg KEY=VALUE`; a bare KEY takes the client's environment value, if any (as docker build)."""
    import os

    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key:
            raise ValueError(f"--build-arg {item!r}: expected KEY=VALUE")
        if not eq:
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out


def _inspect(args: argparse.Namespace) -> int:
    from workbench.engine import LocalEngine
    from workbench.inspect import InspectError, print_ast

    if args.what == "layers":
        from workbench.imagelayers.cli import run as run_layers

        try:
            layer_build_args = _build_args(args.build_arg)
        except ValueError as e:
            return _usage_error(str(e))
        return run_layers(args, layer_build_args)
    if args.what == "why":
        from workbench.request import default_root
        from workbench.solver.explain import format_last_build, load_last_build

        context = Path(args.context)
        dockerfile = Path(args.dockerfile) if args.dockerfile else context / "Dockerfile"
        record = load_last_build(Path(args.root) if args.root else default_root(), dockerfile)
        if record is None:
            print(f"no build of {dockerfile} is recorded in this root yet", file=sys.stderr)
            return 1
        sys.stdout.write(format_last_build(record))
        return 0
    try:
        if args.what == "ast":
            sys.stdout.flush()
            sys.stdout.buffer.write(print_ast(Path(args.file)).encode("utf-8", "surrogateescape"))
            return 0
        context = Path(args.context)
        dockerfile = Path(args.dockerfile) if args.dockerfile else context / "Dockerfile"
        from workbench.request import default_root

        if args.what == "graph":
            from workbench.inspect_graph import GraphError, graph_text

            root = Path(args.root) if args.root else default_root()
            try:
                sys.stdout.write(graph_text(LocalEngine().llb(context, dockerfile, _build_args(args.build_arg),
                                                              args.target, root), root, dockerfile, args.format))
            except GraphError as e:
                print(str(e), file=sys.stderr)
                return 1
            return 0
        for line in LocalEngine().llb(context, dockerfile, _build_args(args.build_arg), args.target,
                                      Path(args.root) if args.root else default_root()):
            print(line)
    except (InspectError, ValueError) as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


def _check(args: argparse.Namespace) -> int:
    from workbench.engine import LocalEngine
    from workbench.inspect import InspectError
    from workbench.remote.address import AddressError, address_from_args
    from workbench.request import default_root

    try:
        address_from_args(args)  # a bad --addr is refused as on build; a good one changes nothing
    except AddressError as e:
        return _usage_error(str(e))
    context = Path(args.context)
    dockerfile = Path(args.dockerfile) if args.dockerfile else context / "Dockerfile"
    try:
        out, err, failed = LocalEngine().check(context, dockerfile, _build_args(args.build_arg), args.target,
                                               Path(args.root) if args.root else default_root(), args.format)
    except (InspectError, ValueError) as e:
        print(str(e), file=sys.stderr)
        return 1
    sys.stdout.write(out)
    sys.stderr.write(err)
    return 1 if failed else 0


def _disk(args: argparse.Namespace) -> int:
    from workbench.gc import main_du, main_prune
    from workbench.remote.address import AddressError, address_from_args
    from workbench.request import default_root
    from workbench.state_root import prepare_root

    try:
        address = address_from_args(args)
    except AddressError as e:
        return _usage_error(str(e))
    if address is not None:
        return _remote_disk(args, address)
    root = prepare_root(Path(args.root) if args.root else default_root())
    if args.command == "du":
        sys.stdout.write(main_du(root, args.verbose))
        return 0
    try:
        until = _prune_until(args)
        sys.stdout.write(main_prune(root, all=args.all, keep_storage=args.keep_storage, until=until,
                                    verbose=args.verbose))
    except ValueError as e:
        return _usage_error(str(e))
    return 0


PARSER: argparse.ArgumentParser | None = None
"""Built once by the build server (its children parse with it); the CLI builds its own."""


def main(argv: list[str] | None = None, via_server: bool = False) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv and Path("Dockerfile").is_file():
        argv = ["tui"]  # plain `workbench` in a folder with a Dockerfile opens the workbench
    if not via_server and argv[:1] == ["build"] and "--watch" not in argv:
        from workbench import client

        if client.enabled():
            code = client.run_via_server(argv)
            if code is not None:
                return code
    args = (PARSER or _build_parser()).parse_args(argv)
    from workbench.rootless.userns import UsernsError, prepare

    try:
        prepare(argv)  # not root: the local engine runs as root of a user namespace of ours (still one thread)
    except UsernsError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    from workbench.state_root import RootError

    try:
        return _dispatch(args)
    except RootError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        # a full disk under the root, whichever command hit it (pull, import, prune …), is one line
        from workbench.diskfull import is_disk_full, message

        root = Path(getattr(args, "root", None) or _default_root())
        if not is_disk_full(e, root):
            raise
        print(f"ERROR: {message(root)}", file=sys.stderr)
        return 1


def _default_root() -> Path:
    from workbench.request import default_root

    return default_root()


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "server":
        return _server(args)
    if args.command == "debug":
        from workbench.debug.command import main_debug
        from workbench.history.recorder import recording_engine

        return main_debug(args, recording_engine())
    if args.command == "dap":
        from workbench.dap.cli import main_dap
        from workbench.history.recorder import recording_engine

        return main_dap(args, recording_engine())
    if args.command == "build":
        return _build(args)
    if args.command == "devices":
        return _devices(args)
    if args.command == "tui":
        from workbench.tui.launch import run as run_tui

        try:
            return run_tui(args, _build_args(args.build_arg))
        except ValueError as e:
            return _usage_error(str(e))
    if args.command == "inspect":
        return _inspect(args)
    if args.command == "check":
        return _check(args)
    if args.command in ("history", "replay"):
        from workbench.history.cli import run as run_history

        return run_history(args)
    if args.command in ("du", "prune"):
        return _disk(args)
    if args.command == "doctor":
        from workbench.doctor import main as doctor_main
        from workbench.request import default_root

        return doctor_main(Path(args.root) if args.root else default_root(), args.fix, args.user)
    if args.command == "image":
        from workbench.image.cli import run as run_image

        return run_image(args)
    if args.command == "builders":
        from workbench.remote.cli import run as run_builders

        return run_builders(args)
    if args.command == "gha-server":
        from workbench.gha.server import main as gha_main

        return gha_main(args.host, args.port, Path(args.data) if args.data else None, args.scope,
                        args.read_scope, args.fault, args.token_ttl, args.azurite, args.reservation_timeout)
    return 2


if __name__ == "__main__":
    sys.exit(main())
