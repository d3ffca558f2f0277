"""`workbench debug --addr ADDR --frontend dockerfile.v0`: build on the daemon through its gateway, then run a
command (`--invoke`, default `sh`) in the result, this terminal's stdin and output wired to it (no tty), as
`buildx debug --invoke`; when a step fails, in what that step left (unless --no-break-on-error). Breakpoints need
the local engine: refused in one line."""

from __future__ import annotations

import argparse
import shlex
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from workbench.remote.address import Address
    from workbench.request import BuildRequest


def main_remote_debug(args: argparse.Namespace, address: Address, request: BuildRequest) -> int:
    from workbench.progress.events import EventBus
    from workbench.progress.printers import make_printer
    from workbench.remote.control import Control, ControlError
    from workbench.remote.debug import Invocation, RemoteDebugError, run_in_result
    from workbench.remote.engine import DOCKERFILE_FRONTEND, RemoteEngine
    from workbench.remote.solve import shared_key
    from workbench.remote.status import StatusFold
    from workbench.request import BuildFailure

    if args.frontend != DOCKERFILE_FRONTEND:
        return _error(f"debugging workbench's own build graph on a remote BuildKit lands later; pass --frontend "
                      f"{DOCKERFILE_FRONTEND} to debug with the daemon's Dockerfile frontend", 2)
    if args.breaks:
        return _error("--break needs the local engine: on a remote BuildKit, `workbench debug --addr` runs "
                      "--invoke CMD (default sh) in the build's result", 2)
    if request.outputs:
        return _error("--output is not written by `workbench debug --addr`: build with `workbench build --addr`", 2)
    engine = RemoteEngine(address, args.frontend)
    try:
        plan = engine.plan(request)
        argv = shlex.split(args.invoke) if args.invoke else ["sh"]
    except (BuildFailure, ValueError) as e:
        return _error(getattr(e, "message", str(e)), 2)
    if not argv:
        return _error("--invoke: give a command", 2)
    bus = EventBus()
    bus.subscribe(make_printer("plain"))
    fold = StatusFold(bus.emit)
    lock = threading.Lock()

    def out(stream: TextIO) -> Callable[[bytes], None]:
        def write(data: bytes) -> None:
            with lock:
                stream.buffer.write(data)
                stream.flush()
        return write

    command = shlex.join(argv)
    print(f"workbench: after the build, `{command}` runs in its result on {engine.daemon}"
          + ("" if args.no_break_on_error else ", or in what a failed step left")
          + " (no tty; changes are thrown away)", file=sys.stderr, flush=True)

    def on_error(error: str, where: str) -> bool:
        print(f"ERROR: {error}", file=sys.stderr, flush=True)
        if args.no_break_on_error:
            return False
        if where.startswith("("):
            print(f"workbench: no shell on error on {engine.daemon} {where}", file=sys.stderr, flush=True)
        else:
            print(f"workbench: `{command}` in {where} (changes are thrown away)", file=sys.stderr, flush=True)
        return True

    try:
        with Control(address) as control:
            outcome = run_in_result(control, plan, Invocation(argv, sys.stdin.buffer, out(sys.stdout),
                                                              out(sys.stderr), network_host=address.scheme == "docker"),
                                    fold.apply, shared_key(request.context, request.root), on_error)
    except (ControlError, RemoteDebugError) as e:
        return _error(str(e), 1)
    except KeyboardInterrupt:
        return _error("canceled", 130)
    if outcome.error:
        return 1  # the build failed (said by on_error), whatever the command in its leftovers returned
    return outcome.code if outcome.code is not None else 0


def _error(message: str, code: int) -> int:
    print(f"ERROR: {message}", file=sys.stderr)
    return code
