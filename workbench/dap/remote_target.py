"""A DAP session's build on a BuildKit daemon (`args: ["--addr", ADDR]`), through its gateway as `workbench debug
--addr --break` drives it (workbench.remote.debug): our own graph is marshalled for the daemon; before a step
to stop at (a breakpoint, `next`), each of its inputs is solved and the build is held there; a stopped step's
files are listed with the gateway's ReadDir on its inputs' refs, and `evaluate` / `exec` run in a gateway
container at its mounts. Once nothing is left to stop before, the whole graph is solved at once; a step that
fails there is stopped at in what it left when the daemon names its mounts (buildkitd v0.20; Docker 20.10's
BuildKit does not).
"""

from __future__ import annotations

import os
import posixpath
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from workbench.dap.target import STALE, Output, Stop, TargetError
from workbench.debug.controller import Breakpoint

if TYPE_CHECKING:
    from workbench.dap.launch import Launch
    from workbench.debug.fsview import Entry
    from workbench.llb.ops import Vertex
    from workbench.progress.events import EventBus
    from workbench.remote.address import Address
    from workbench.remote.debug import Bridge

LIST_SCRIPT = r"""cd -- "$1" || exit 2
for f in .* *; do
  if [ "$f" = . ] || [ "$f" = .. ] || { [ ! -e "$f" ] && [ ! -L "$f" ]; }; then continue; fi
  printf '%s\0%s\0' "$(stat -c '%f %u %g %s' -- "$f")" "$f"
  if [ -L "$f" ]; then readlink -- "$f" | tr -d '
'; fi
  printf '\0'
done"""
"""A directory's entries (`stat`'s hex mode, uid, gid, size; the name; a symlink's target), NUL-separated, from
a shell in the step: for a failed step's mounts, which the gateway's ReadDir does not know (only NewContainer
takes them)."""

NO_PAUSE = ("the build runs on the daemon in one solve from here (no breakpoint or `next` is left before its "
            "end): pause cannot stop it; set a breakpoint on a later step instead")


class _Aborted(Exception):
    pass


@dataclass
class RemoteStop:
    """A stop on the daemon: the step (our vertex), its mounts (pb.Mount on gateway refs) and its env, workdir
    and user (an image config)."""

    vertex: Vertex
    reason: str
    mounts: list[Any]
    config: dict[str, Any]
    error: str = ""
    how: str = ""
    by_exec: bool = False
    """List files with a shell in a container (the mounts are not refs ReadDir knows: a failed step's)."""
    resumed: threading.Event = field(default_factory=threading.Event)


class RemoteTarget:
    """The build on `address`; `note` tells the client something important (a stop it cannot make)."""

    def __init__(self, address: Address, note: Callable[[str], None]) -> None:
        self.address, self.note = address, note
        self.breakpoints: list[Breakpoint] = []
        self.break_on_error = True
        self._stepping = False
        self._one_solve = False
        self._stop: RemoteStop | None = None
        self._ended = False
        self._cond = threading.Condition()
        self._canceled = threading.Event()
        self._bridge: Bridge | None = None
        self._future: Any = None
        self._containers: dict[str, Any] = {}  # a gateway container → its process's ExecProcess call
        self._lock = threading.Lock()

    # -- the session's side ----------------------------------------------------------------------------

    @property
    def current(self) -> Stop | None:
        return self._stop

    def wait_for_pause(self, timeout: float | None = None) -> Stop | None:
        with self._cond:
            self._cond.wait_for(lambda: self._stop is not None or self._ended, timeout)
            return self._stop

    def build_ended(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def resume(self, how: str) -> None:
        if how not in ("next", "continue", "abort"):
            raise ValueError(f"unknown way to resume: {how}")
        stop = self._stop
        if stop is None:
            return
        self._stepping = how == "next"
        stop.how = how
        with self._cond:
            self._stop = None
        stop.resumed.set()

    def step(self) -> None:
        with self._lock:
            if self._one_solve:
                raise TargetError(NO_PAUSE)
            self._stepping = True

    def cancel(self) -> None:
        """Cancel the daemon's build: the Control.Solve (the daemon then cancels its gateway calls)."""
        self._canceled.set()
        future = self._future
        if future is not None:
            future.cancel()

    def kill_shells(self) -> None:
        for container in list(self._containers):
            self._release(container)

    def list_dir(self, stop: Stop, path: str) -> list[Entry]:
        """`path`'s entries in the stopped step's filesystem: ReadDir on the ref mounted there."""
        import grpc

        from workbench.debug.fsview import Entry
        from workbench.remote.gateway import read_dir
        from workbench.remote.session.filesend import unix_mode

        assert isinstance(stop, RemoteStop) and self._bridge is not None
        path = posixpath.normpath("/" + path)
        mounts = sorted(stop.mounts, key=lambda m: len(m.dest), reverse=True)
        mount = next((m for m in mounts if path == m.dest or path.startswith(m.dest.rstrip("/") + "/")), None)
        if mount is None:
            raise TargetError(f"{path}: no such file or directory")
        if stop.by_exec:
            return self._list_by_exec(stop, path)
        points = {posixpath.basename(m.dest) for m in stop.mounts
                  if m.dest != "/" and posixpath.dirname(m.dest) == path}  # mount points show in their parent
        found: list[Entry] = []
        if mount.resultID:
            inner = posixpath.join(mount.selector or "/", posixpath.relpath(path, mount.dest))
            try:
                stats = read_dir(self._bridge, mount.resultID, posixpath.normpath(inner))
            except grpc.RpcError as e:
                raise TargetError(f"{path}: {e.details() or e.code().name}") from None
            for st in stats:
                mode = unix_mode(st.mode)
                name = posixpath.basename(st.path)
                if name in points:
                    continue
                found.append(Entry(name, mode, st.uid, st.gid, st.size,
                                   st.linkname if (mode & 0o170000) == 0o120000 else None))
        found += [Entry(name, 0o040755, 0, 0, 0) for name in points]
        return sorted(found, key=lambda e: e.name)

    def _list_by_exec(self, stop: RemoteStop, path: str) -> list[Entry]:
        from workbench.debug.fsview import Entry

        out: dict[int, list[bytes]] = {1: [], 2: []}
        code = self.run_captured(stop, ["sh", "-c", LIST_SCRIPT, "sh", path], lambda n, b: out[n].append(b),
                                 threading.Event())
        if code != 0:
            said = b"".join(out[2]).decode("utf-8", "replace").strip().splitlines()
            raise TargetError(f"{path}: " + (said[-1] if said else f"cannot list it (exit code {code})"))
        fields = b"".join(out[1]).split(b"\0")
        found = []
        for i in range(0, len(fields) - 2, 3):
            stat_line, name, target = fields[i:i + 3]
            try:
                mode, uid, gid, size = stat_line.split()
                found.append(Entry(name.decode("utf-8", "surrogateescape"), int(mode, 16), int(uid), int(gid),
                                   int(size), target.decode("utf-8", "surrogateescape") if target else None))
            except ValueError:
                continue  # stat could not read it
        return sorted(found, key=lambda e: e.name)

    def run_captured(self, stop: Stop, argv: list[str], on_output: Output, cancel: threading.Event) -> int:
        from workbench.remote.debug import Invocation

        return self._run(stop, Invocation(argv, None, lambda b: on_output(1, b), lambda b: on_output(2, b),
                                          network_host=self.address.scheme == "docker"), cancel)

    def exec(self, stop: Stop, argv: list[str], terminal: int) -> int:
        from workbench.remote.debug import Invocation

        fd = os.dup(terminal)
        with os.fdopen(fd, "rb", buffering=0) as stdin:
            def write(data: bytes) -> None:
                os.write(terminal, data)
            return self._run(stop, Invocation(argv, stdin, write, write, self.address.scheme == "docker", tty=True),
                             None)

    def _run(self, stop: Stop, invocation: Any, cancel: threading.Event | None) -> int:
        import grpc

        from workbench.remote.debug import RemoteDebugError

        assert isinstance(stop, RemoteStop) and self._bridge is not None
        if stop is not self._stop:
            raise TargetError(STALE)
        bridge = self._bridge
        try:
            container = bridge.new_container(stop.mounts, invocation.network_host)
        except grpc.RpcError as e:
            raise TargetError(f"no container on the daemon: {e.details() or e.code().name}") from None
        self._containers[container] = None
        invocation.on_call = lambda call: self._containers.__setitem__(container, call)
        done = threading.Event()
        if cancel is not None:
            def watch() -> None:
                while not done.wait(0.2):
                    if cancel.is_set():
                        self._release(container)
                        return
            threading.Thread(target=watch, name="dap-eval-cancel", daemon=True).start()
        try:
            return bridge.run_in(container, stop.config, invocation)
        except (grpc.RpcError, RemoteDebugError) as e:
            if cancel is not None and cancel.is_set():
                return 137
            raise TargetError(str(e) if isinstance(e, RemoteDebugError) else e.details() or e.code().name) from None
        finally:
            done.set()
            self._containers.pop(container, None)

    def _release(self, container: str) -> None:
        from workbench.remote.proto import gateway_pb2 as gw

        call = self._containers.pop(container, None)
        if call is not None:
            call.cancel()
        if self._bridge is not None:
            try:
                self._bridge.call("ReleaseContainer", gw.ReleaseContainerRequest(ContainerID=container),
                                  gw.ReleaseContainerResponse, timeout=30)
            except Exception:  # noqa: BLE001 - released already (the process ended), or the daemon is gone
                pass

    # -- the build thread -----------------------------------------------------------------------------

    def build(self, launch: Launch, bus: EventBus) -> None:
        import grpc

        from workbench.debug.remote import build_order
        from workbench.remote.control import SERVICE, Control, ControlError
        from workbench.remote.debug import EVALUATE_CAP, Bridge, RemoteDebugError, our_graph
        from workbench.remote.engine import RemoteEngine
        from workbench.remote.proto import control_pb2 as cpb
        from workbench.remote.solve import new_id, open_session, shared_key, solve_request, watch_status
        from workbench.request import BuildFailure

        request = launch.request(None)
        engine = RemoteEngine(self.address, "")
        try:
            with Control(self.address) as control:
                graph = our_graph(engine, control, request, bus)
                steps = [v for v in build_order(graph.vertex) if not v.hidden]
                ref, session_id = new_id(), new_id()
                pipe, server = open_session(control, replace(graph.plan, output=None, ssh={}), session_id,
                                            shared_key(request.context, request.root), default_name="debug")
                channel = control.channel.grpc
                status_call, reader = watch_status(channel, ref, graph.fold.apply)
                gateway_plan = replace(graph.plan, frontend="", exporters=[], output=None, definition=b"",
                                       result_metadata=None)
                solve = channel.unary_unary(SERVICE + "Solve", request_serializer=cpb.SolveRequest.SerializeToString,
                                            response_deserializer=cpb.SolveResponse.FromString)
                self._future = solve.future(solve_request(gateway_plan, ref, session_id))
                bridge = self._bridge = Bridge(channel, ref)
                try:
                    if self._canceled.is_set():
                        raise _Aborted()
                    caps = bridge.wait_registered(self._future)
                    self._drive(bridge, graph, steps, EVALUATE_CAP in caps, bus)
                    self._future.result(timeout=60)
                finally:
                    self.kill_shells()
                    self._future.cancel()
                    reader.join(1.0)
                    status_call.cancel()
                    pipe.close()
                    server.close()
        except _Aborted:
            raise BuildFailure("aborted") from None
        except grpc.RpcError as e:
            if self._canceled.is_set():
                raise BuildFailure("aborted") from None
            raise BuildFailure(_said(e)) from None
        except (ControlError, RemoteDebugError) as e:
            raise BuildFailure(str(e)) from None

    def _drive(self, bridge: Bridge, graph: Any, steps: list[Vertex], evaluate: bool, bus: EventBus) -> None:
        """Stop before each step asked for, then solve the whole graph; a failure stops where it can."""
        import grpc

        from workbench.remote.debug import failed_step
        from workbench.remote.gateway import stat_file

        try:
            for i, v in enumerate(steps):
                hit = any(bp.matches(v) for bp in self.breakpoints)
                if hit or self._stepping:
                    stop = graph.stop_before(v)
                    mounts = bridge.stop_mounts(stop, evaluate=evaluate)
                    self._hold(RemoteStop(v, "breakpoint" if hit else "step", mounts, stop.config), bus)
                with self._lock:  # a pause asked from here on must not be lost
                    if not self._stepping and not any(bp.matches(w) for w in steps[i + 1:] for bp in self.breakpoints):
                        self._one_solve = True
                        break
            self._one_solve = True
            result = bridge.solve("", {}, evaluate=evaluate, definition=graph.plan.definition)
            if not evaluate:  # a lazy result (Docker 20.10): built here, so a failure is seen before Return
                stat_file(bridge, result.ref, "/")
        except grpc.RpcError as e:
            if self._canceled.is_set() or e.code() == grpc.StatusCode.UNAVAILABLE:
                raise
            error = _said(e)
            try:
                failed = failed_step(e)
                if self.break_on_error and not self._canceled.is_set():
                    at = next((s for s in reversed(steps) if failed is not None and s.name == failed.name), None)
                    if failed is not None and at is not None:
                        self._hold(RemoteStop(at, "error", failed.mounts, failed.config, error, by_exec=True), bus)
                    else:
                        self.note(f"cannot stop at the failed step on {self.address.text}: its error does not name "
                                  "the step's filesystems (a recent buildkitd, v0.20, does); the build ends\n")
            finally:
                bridge.give_up(error)
            raise
        bridge.finish(result)

    def _hold(self, stop: RemoteStop, bus: EventBus) -> None:
        from workbench.progress.events import DebugPaused

        if self._canceled.is_set():
            raise _Aborted()
        with self._cond:
            self._stop = stop
            self._cond.notify_all()
        v = stop.vertex
        bus.emit(DebugPaused(vertex=v.digest, name=v.name, reason=stop.reason, source=v.source, error=stop.error))
        stop.resumed.wait()
        self.kill_shells()
        if stop.how == "abort":
            raise _Aborted()


def _said(error: Any) -> str:
    from workbench.remote.debug import rpc_error_line

    return rpc_error_line(error)
