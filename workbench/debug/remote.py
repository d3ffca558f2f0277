"""`workbench debug --addr ADDR [--frontend dockerfile.v0]`: build on the daemon through its gateway (our own graph,
or the daemon's Dockerfile frontend), then run a command (`--invoke`, default `sh`) in the result, this terminal's
stdin and output wired to it (a tty when stdin is one), as `buildx debug --invoke`; when a step fails, in what that
step left (unless --no-break-on-error). Breakpoints need the local engine: refused in one line."""

from __future__ import annotations

import argparse
import shlex
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from workbench.llb.ops import Vertex
    from workbench.remote.address import Address
    from workbench.request import BuildRequest


def main_remote_debug(args: argparse.Namespace, address: Address, request: BuildRequest) -> int:
    from workbench.debug.controller import Breakpoint
    from workbench.progress.events import EventBus
    from workbench.progress.printers import make_printer
    from workbench.progress.redact import RedactingBus, Redactor
    from workbench.progress.text import printable
    from workbench.remote.control import Control, ControlError
    from workbench.remote.debug import Invocation, RemoteDebugError, Stop, our_graph, run_in_result
    from workbench.remote.engine import RemoteEngine
    from workbench.remote.solve import shared_key
    from workbench.remote.status import StatusFold
    from workbench.request import BuildFailure
    from workbench.solver.session import secret_values

    if args.breaks and args.frontend:
        return _error(f"--break needs workbench's own build graph: leave out --frontend {args.frontend} (the "
                      f"daemon's frontend tells no steps to stop before)", 2)
    breaks = [Breakpoint(line=int(b)) if b.isdigit() else Breakpoint(stage=b) for b in args.breaks]
    if request.outputs:
        return _error("--output is not written by `workbench debug --addr`: build with `workbench build --addr`", 2)
    engine = RemoteEngine(address, args.frontend or "")
    try:
        plan = engine.plan(request) if args.frontend else None  # our graph: converted once connected
        argv = shlex.split(args.invoke) if args.invoke else ["sh"]
    except (BuildFailure, ValueError) as e:
        return _error(getattr(e, "message", str(e)), 2)
    if not argv:
        return _error("--invoke: give a command", 2)
    redactor = Redactor(secret_values(request.session))  # step logs and the daemon's errors can echo a secret

    def said(text: str) -> str:
        return printable(redactor.text(text), keep="\n")

    plain = EventBus()
    plain.subscribe(make_printer("plain"))
    bus = RedactingBus(plain, redactor)
    fold = StatusFold(bus.emit)
    lock = threading.Lock()

    def out(stream: TextIO) -> Callable[[bytes], None]:
        def write(data: bytes) -> None:
            with lock:
                stream.buffer.write(data)
                stream.flush()
        return write

    command = shlex.join(argv)
    tty = sys.stdin.isatty()  # as buildx debug: a terminal here gets one there
    print(f"workbench: after the build, `{command}` runs in its result on {engine.daemon}"
          + ("" if args.no_break_on_error else ", or in what a failed step left")
          + f" ({'a tty' if tty else 'no tty'}; changes are thrown away)", file=sys.stderr, flush=True)

    def on_error(error: str, where: str) -> bool:
        print(f"ERROR: {said(error)}", file=sys.stderr, flush=True)
        if args.no_break_on_error:
            return False
        if where.startswith("("):
            print(f"workbench: no shell on error on {engine.daemon} {where}; for one, point --addr at a recent "
                  f"buildkitd (v0.20 names them)", file=sys.stderr, flush=True)
        else:
            print(f"workbench: `{command}` in {where} (changes are thrown away)", file=sys.stderr, flush=True)
        return True

    def on_stop(stop: Stop) -> None:
        print(f"workbench: `{command}` before {stop.name} ({stop.where}); exit it to continue the build",
              file=sys.stderr, flush=True)

    try:
        with Control(address) as control:
            image = None
            stops: list[Stop] = []
            if plan is None:
                graph = our_graph(engine, control, request, bus)
                plan, image, fold = graph.plan, graph.image, graph.fold
                steps = [v for v in build_order(graph.vertex) if not v.hidden]
                for bp in breaks:
                    if not any(bp.matches(v) for v in steps):
                        return _error(f"--break {bp.line if bp.line is not None else bp.stage}: no step of this "
                                      f"build is at {bp}", 2)
                stops = [graph.stop_before(v) for v in steps if any(bp.matches(v) for bp in breaks)]
            outcome = run_in_result(control, plan, Invocation(argv, sys.stdin.buffer, out(sys.stdout),
                                                              out(sys.stderr), network_host=address.scheme == "docker",
                                                              tty=tty),
                                    fold.apply, shared_key(request.context, request.root), on_error, image,
                                    stops, on_stop)
    except BuildFailure as e:
        return _error(said(e.message), 1)
    except (ControlError, RemoteDebugError) as e:
        return _error(said(str(e)), 1)
    except KeyboardInterrupt:
        return _error("canceled", 130)
    if outcome.error:
        return 1  # the build failed (said by on_error), whatever the command in its leftovers returned
    return outcome.code if outcome.code is not None else 0


def build_order(target: Vertex) -> list[Vertex]:
    """`target`'s graph, each vertex once, inputs before the steps that use them."""
    order: list[Vertex] = []
    seen: set[int] = set()
    stack: list[tuple[Vertex, bool]] = [(target, False)]
    while stack:
        v, expanded = stack.pop()
        if expanded:
            order.append(v)
            continue
        if id(v) in seen:
            continue
        seen.add(id(v))
        stack.append((v, True))
        stack.extend((i, False) for i in reversed(v.inputs))
    return order


def _error(message: str, code: int) -> int:
    print(f"ERROR: {message}", file=sys.stderr)
    return code
