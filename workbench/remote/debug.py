"""A command in a build's result on a BuildKit daemon, through its gateway (as `buildx debug --invoke` does).

The order, as BuildKit's client.Build: open the session; call Control.Solve with no frontend and no definition
(the daemon then waits for a gateway client to drive the build); on the same connection, with the metadata
`buildkit-controlapi-buildid: <the Solve's Ref>`, call LLBBridge.Ping (the caps), LLBBridge.Solve with the
Dockerfile frontend (the result's ref), NewContainer with that ref mounted at /, ExecProcess (Init, then stdin as
File messages; the daemon answers Started, File output, Exit, Done), ReleaseContainer, and Return with the result,
which ends Control.Solve. The build is evaluated in LLBBridge.Solve (`Evaluate`, cap gateway.solve.evaluate), so
a failed step comes back there with `errdefs.Solve+json` in the status details: the ids of its inputs and of what
it left in its mounts (kept for this build), and its op. With `on_error`, the command then runs on those mounts,
with the step's env, workdir and user, before the error is Returned (the Solve fails with it).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import IO, Any

from workbench.remote.control import SERVICE, Control, ControlError
from workbench.remote.gateway import BRIDGE, Gateway
from workbench.remote.solve import SolvePlan, new_id, open_session, solve_request, watch_status

EXEC_CAP = "gateway.exec"
EVALUATE_CAP = "gateway.solve.evaluate"
SOLVE_ERROR = "github.com/moby/buildkit/errdefs.Solve+json"


class RemoteDebugError(Exception):
    """One line: what the daemon could not do (its build failed, or it has no gateway containers)."""


@dataclass
class Invocation:
    """What to run in the result: argv (in the image's env, workdir and user), its stdin and where output goes."""

    argv: list[str]
    stdin: IO[bytes] | None = None
    stdout: Callable[[bytes], object] = field(default=lambda b: None)
    stderr: Callable[[bytes], object] = field(default=lambda b: None)
    network_host: bool = False


@dataclass
class Outcome:
    """How it went: the build's error ("" when it built) and the command's exit code (None: it did not run)."""

    error: str = ""
    code: int | None = None


def run_in_result(control: Control, plan: SolvePlan, invocation: Invocation, on_status: Callable[[Any], None],
                  shared: str = "", on_error: Callable[[str, str], bool] | None = None) -> Outcome:
    """Build `plan` (frontend and attrs) through the daemon's gateway and run `invocation` in the result.
    When a step fails, `on_error(error, where)` is told, and the command runs in what that step left if it
    answers True (and the daemon told the step's mounts). RemoteDebugError for a daemon without gateway
    containers, ControlError for one that cannot be reached."""
    import grpc

    from workbench.remote.proto import control_pb2 as cpb

    ref, session_id = new_id(), new_id()
    # the session serves the context, Dockerfile and secrets only: no output comes back, no agent is lent
    pipe, server = open_session(control, replace(plan, output=None, ssh={}), session_id, shared,
                                default_name="debug")
    channel = control.channel.grpc
    status_call, reader = watch_status(channel, ref, on_status)
    gateway_plan = replace(plan, frontend="", exporters=[], output=None)
    solve = channel.unary_unary(SERVICE + "Solve", request_serializer=cpb.SolveRequest.SerializeToString,
                                response_deserializer=cpb.SolveResponse.FromString)
    future = solve.future(solve_request(gateway_plan, ref, session_id))
    bridge = Bridge(channel, ref)
    caps: list[str] = []
    try:
        try:
            caps = bridge.wait_registered(future)
            result = bridge.solve(plan.frontend, plan.frontend_attrs, evaluate=EVALUATE_CAP in caps)
            container = bridge.new_container(bridge.result_mounts(result), invocation.network_host)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                raise control.fault(e, "Solve") from None
            error = _one_line(e.details() or e.code().name)
            try:
                failed = failed_step(e)
                where = (f"what {failed.name or 'the failed step'} left" if failed is not None else
                         "(its error does not name the failed step's filesystems)" if EVALUATE_CAP in caps else
                         f"(its gateway cannot evaluate a build: cap {EVALUATE_CAP} is off)")
                code = None
                if on_error is not None and on_error(error, where) and failed is not None:
                    code = bridge.run_in(bridge.new_container(failed.mounts, invocation.network_host),
                                         failed.config, invocation)
            finally:
                bridge.give_up(error)
            return Outcome(error, code)
        try:
            code = bridge.run_in(container, result.config, invocation)
        finally:
            bridge.finish(result)
        try:
            future.result(timeout=60)
        except grpc.RpcError as e:
            raise RemoteDebugError(_one_line(e.details() or e.code().name)) from None
        return Outcome("", code)
    except grpc.RpcError as e:
        raise control.fault(e, "gateway") if e.code() == grpc.StatusCode.UNAVAILABLE else \
            RemoteDebugError(_one_line(e.details() or e.code().name)) from None
    finally:
        future.cancel()
        reader.join(1.0)
        status_call.cancel()
        pipe.close()
        server.close()


@dataclass
class GatewayResult:
    ref: str
    config: dict[str, Any]  # the image config ("containerimage.config"), for env, workdir and user


class Bridge(Gateway):
    """LLBBridge calls for the build `build_id` (the Control.Solve's Ref), with containers."""

    def wait_registered(self, solve_future: Any) -> list[str]:
        """Ping until the daemon knows the build; the gateway caps it enables. RemoteDebugError when it has no
        containers (`gateway.exec`)."""
        caps = super().wait_registered(solve_future)
        if EXEC_CAP not in caps:
            raise RemoteDebugError(f"this daemon's gateway has no containers (cap {EXEC_CAP} is off)")
        return caps

    def solve(self, frontend: str, attrs: dict[str, str], evaluate: bool = False) -> GatewayResult:
        from workbench.remote.proto import gateway_pb2 as gw

        req = gw.SolveRequest(Frontend=frontend, FrontendOpt=attrs, allowResultReturn=True, Evaluate=evaluate)
        res = self.call("Solve", req, gw.SolveResponse).result
        which = res.WhichOneof("result")
        if which == "ref":
            ref = res.ref.id
        elif which == "refs" and len(res.refs.refs) == 1:
            ref = next(iter(res.refs.refs.values())).id
        elif which == "refDeprecated":
            ref = res.refDeprecated
        else:
            raise RemoteDebugError("the build made several results (one per platform): pass one --platform")
        config: dict[str, Any] = {}
        raw = res.metadata.get("containerimage.config")
        if raw:
            try:
                config = json.loads(raw).get("config") or {}
            except ValueError:
                pass
        return GatewayResult(ref, config)

    def result_mounts(self, result: GatewayResult) -> list[Any]:
        """`result` mounted at / (writable: changes go to a throw-away layer)."""
        from workbench.remote.proto import ops_pb2 as ops

        return [ops.Mount(dest="/", resultID=result.ref, mountType=ops.BIND, input=-1, output=-1)]

    def new_container(self, mounts: list[Any], network_host: bool) -> str:
        """A container on `mounts` (pb.Mount with resultIDs); its id. A lazy result is built here: a daemon that
        does not evaluate in Solve fails here with the build's error."""
        from workbench.remote.proto import gateway_pb2 as gw
        from workbench.remote.proto import ops_pb2 as ops

        container_id = new_id()
        self.call("NewContainer", gw.NewContainerRequest(
            ContainerID=container_id, Mounts=mounts, Network=ops.HOST if network_host else ops.UNSET),
            gw.NewContainerResponse)
        return container_id

    def run_in(self, container_id: str, config: dict[str, Any], inv: Invocation) -> int:
        """`inv` in the container (then released); its exit code."""
        import grpc

        from workbench.remote.proto import gateway_pb2 as gw

        try:
            return self._exec(container_id, config, inv)
        finally:
            try:
                self.call("ReleaseContainer", gw.ReleaseContainerRequest(ContainerID=container_id),
                            gw.ReleaseContainerResponse, timeout=30)
            except grpc.RpcError as e:  # the release answers with the process's error ("exit code: 7"): told
                if e.code() == grpc.StatusCode.UNAVAILABLE:
                    raise

    def _exec(self, container_id: str, config: dict[str, Any], inv: Invocation) -> int:
        from workbench.remote.proto import gateway_pb2 as gw
        from workbench.remote.proto import ops_pb2 as ops

        pid = new_id()
        outbox: queue.Queue[Any] = queue.Queue()
        meta = ops.Meta(args=inv.argv, env=config.get("Env") or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                                                  "/usr/bin:/sbin:/bin"],
                        cwd=config.get("WorkingDir") or "/", user=config.get("User") or "")
        outbox.put(gw.ExecMessage(ProcessID=pid, Init=gw.InitMessage(ContainerID=container_id, Meta=meta,
                                                                        Fds=[0, 1, 2], Tty=False)))

        def requests() -> Iterator[Any]:
            while (msg := outbox.get()) is not None:
                yield msg

        stream = self.channel.stream_stream(BRIDGE + "ExecProcess",
                                            request_serializer=gw.ExecMessage.SerializeToString,
                                            response_deserializer=gw.ExecMessage.FromString)
        call = stream(requests(), metadata=self.metadata)
        code: int | None = None
        try:
            for msg in call:
                kind = msg.WhichOneof("Input")
                if kind == "Started":
                    threading.Thread(target=_feed_stdin, args=(inv.stdin, pid, outbox), daemon=True).start()
                elif kind == "File" and msg.File.Data:
                    (inv.stdout if msg.File.Fd == 1 else inv.stderr)(msg.File.Data)
                elif kind == "Exit":
                    code = msg.Exit.Code
                    if msg.Exit.Error.message and msg.Exit.Code == 0:
                        raise RemoteDebugError(_one_line(msg.Exit.Error.message))
                elif kind == "Done":
                    break
        finally:
            outbox.put(None)
            call.cancel()
        if code is None:
            raise RemoteDebugError("the daemon ended the process without an exit code")
        return code

    def finish(self, result: GatewayResult | None, error: str = "") -> None:
        """Return: the result (the Solve ends well) or the error (it fails with it)."""
        from workbench.remote.proto import gateway_pb2 as gw

        if result is not None:
            req = gw.ReturnRequest(result=gw.Result(ref=gw.Ref(id=result.ref)))
        else:
            req = gw.ReturnRequest(error=gw.RPCStatus(code=2, message=error))
        self.call("Return", req, gw.ReturnResponse, timeout=30)

    def give_up(self, error: str) -> None:
        """Return the error, so the waiting Control.Solve ends (best effort: the daemon may be gone)."""
        try:
            self.finish(None, error)
        except Exception:
            pass


@dataclass
class FailedStep:
    """A failed exec step as the daemon tells it: its name, its mounts (on the results it left or was given)
    and its env, workdir and user (as an image config)."""

    name: str
    mounts: list[Any]
    config: dict[str, Any]


def failed_step(error: Any) -> FailedStep | None:
    """The failed exec step in a gateway Solve's error (`errdefs.Solve+json`); None when it names none (not an
    exec, or a daemon that does not say)."""
    from workbench.remote.proto import gateway_pb2 as gw
    from workbench.remote.proto import ops_pb2 as ops

    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if not raw:
        return None
    details = [d for d in gw.RPCStatus.FromString(raw).details if d.type_url == SOLVE_ERROR]
    if not details:
        return None
    try:
        solve = json.loads(details[0].value)
    except ValueError:
        return None
    op = solve.get("op") or {}
    exec_op = op.get("exec")
    if not exec_op:
        return None
    inputs, left = solve.get("inputIDs") or [], solve.get("mountIDs") or []
    mounts = []
    for i, m in enumerate(exec_op.get("mounts") or []):
        kind = int(m.get("mountType") or 0)
        if kind == ops.TMPFS:
            mounts.append(ops.Mount(dest=m.get("dest", ""), mountType=ops.TMPFS, input=-1, output=-1))
            continue
        if kind != ops.BIND:
            continue  # secrets, ssh sockets and cache mounts are the step's own: not mounted in the shell
        n = int(m.get("input") or 0)  # Go's JSON leaves out zeros
        result = left[i] if i < len(left) and left[i] else inputs[n] if 0 <= n < len(inputs) else ""
        mounts.append(ops.Mount(dest=m.get("dest", ""), selector=m.get("selector", ""), resultID=result,
                                readonly=bool(m.get("readonly")), mountType=ops.BIND, input=-1, output=-1))
    meta = exec_op.get("meta") or {}
    name = (solve.get("description") or {}).get("llb.customname", "")
    return FailedStep(name, mounts, {"Env": meta.get("env") or [], "WorkingDir": meta.get("cwd") or "/",
                                     "User": meta.get("user") or ""})


def _feed_stdin(stdin: IO[bytes] | None, pid: str, outbox: queue.Queue[Any]) -> None:
    from workbench.remote.proto import gateway_pb2 as gw

    if stdin is not None:
        read = getattr(stdin, "read1", stdin.read)
        while chunk := read(32 * 1024):
            outbox.put(gw.ExecMessage(ProcessID=pid, File=gw.FdMessage(Fd=0, Data=chunk)))
    outbox.put(gw.ExecMessage(ProcessID=pid, File=gw.FdMessage(Fd=0, EOF=True)))


def _one_line(text: str) -> str:
    marker = "desc = "
    while text.startswith("rpc error:") and marker in text:
        text = text.split(marker, 1)[1]
    return text.strip().splitlines()[0] if text.strip() else "the daemon gave no reason"


__all__ = ["ControlError", "Invocation", "Outcome", "RemoteDebugError", "run_in_result"]
