"""`workbench inspect layers [CONTEXT|IMAGE]`: each layer's size, files added / changed / removed and wasted
bytes, and the image's efficiency, as a table or JSON (like dive)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.build_options import ROOT_HELP

if TYPE_CHECKING:
    from workbench.imagelayers.analysis import LayerReport

DEFAULT_PLATFORM = "linux/amd64"  # imagelayers.sources's, not imported here: the parser is built on every command

SOURCE_HELP = ("a build context directory: its Dockerfile is built (or taken from the cache) and the final image "
               "shown; else an image archive file (--output type=oci|docker); else an image name or digest: the "
               "root's image store first, then its registry (default: .)")


def add_parser(sub: Any) -> None:
    """The `layers` subcommand of `workbench inspect`."""
    p = sub.add_parser("layers", help="each layer of an image: size, files added / changed / removed, wasted "
                                      "bytes, efficiency (like dive)")
    p.add_argument("source", nargs="?", default=".", metavar="CONTEXT|IMAGE", help=SOURCE_HELP)
    p.add_argument("-f", "--file", dest="dockerfile", help="the Dockerfile (default: CONTEXT/Dockerfile)")
    p.add_argument("--target", help="the stage to build")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE", help="set a build argument")
    p.add_argument("--root", help=ROOT_HELP)
    p.add_argument("--platform", default=DEFAULT_PLATFORM, help="of an image or archive with several (default: "
                                                                 f"{DEFAULT_PLATFORM})")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--progress", choices=("auto", "plain", "tty", "quiet"), default="auto",
                   help="the build's progress on stderr (auto: tty on a terminal, else quiet)")


def run(args: argparse.Namespace, build_args: dict[str, str]) -> int:
    """Print the report of `args.source`; errors are one line on stderr (a Dockerfile's as a build shows it)."""
    from workbench.imagelayers.report import format_json, format_text
    from workbench.imagelayers.sources import LayerError, image_report
    from workbench.request import default_root

    root = Path(args.root) if args.root else default_root()
    source = Path(args.source)
    try:
        if source.is_dir():
            report = _built(args, source, build_args, root)
            if report is None:
                return 1
        else:
            if args.dockerfile or args.target or build_args:
                print(f"ERROR: {args.source} is not a directory: -f, --target and --build-arg need a build context",
                      file=sys.stderr)
                return 1
            report = image_report(root, args.source, args.platform)
    except LayerError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    width = shutil.get_terminal_size((80, 24)).columns if sys.stdout.isatty() else 80
    sys.stdout.write(format_json(report) if args.format == "json" else format_text(report, max(width, 80)))
    return 0


def _built(args: argparse.Namespace, context: Path, build_args: dict[str, str], root: Path) -> LayerReport | None:
    """Build the context (cached steps are not run again) and report its final image; None if the build fails
    (its error printed)."""
    from workbench.engine import LocalEngine
    from workbench.errors import format_failure
    from workbench.imagelayers.sources import BuiltStep, build_report
    from workbench.progress.events import Event, EventBus
    from workbench.progress.trace import Step, Trace
    from workbench.request import BuildFailure, BuildRequest

    dockerfile = Path(args.dockerfile) if args.dockerfile else context / "Dockerfile"
    trace: Trace[Step] = Trace(lambda vid, name, number: Step(vid, name, number))
    bus = EventBus()

    def follow(event: Event) -> None:
        trace.apply(event)

    bus.subscribe(follow)
    mode = args.progress if args.progress != "auto" else "tty" if sys.stderr.isatty() else "quiet"
    if mode != "quiet":
        from workbench.progress.printers import make_printer

        bus.subscribe(make_printer(mode))
    request = BuildRequest(context=context, dockerfile=dockerfile, build_args=build_args, target=args.target,
                           root=root)
    try:
        LocalEngine().build(request, bus)
    except BuildFailure as e:
        print(format_failure(e.message, e.location, "", e.dockerfile_text), file=sys.stderr)
        return None
    steps = [BuiltStep(s.id, s.name, s.source.start_line if s.source else None, s.cache_key, s.inputs)
             for s in trace.steps if not s.internal]
    return build_report(root, steps, str(dockerfile), digests=True)
