"""LLBBridge, the gateway API of a build: the calls a client makes to drive a Control.Solve that was sent with no
frontend (as BuildKit's client.Build does), on the same connection, keyed by that Solve's Ref."""

from __future__ import annotations

from typing import Any

BRIDGE = "/moby.buildkit.v1.frontend.LLBBridge/"
BUILD_ID_KEY = "buildkit-controlapi-buildid"
REGISTER_WAIT_S = 10.0  # the daemon registers the build for the gateway a moment after Solve arrives


class Gateway:
    """LLBBridge calls for the build `build_id` (the Control.Solve's Ref)."""

    def __init__(self, channel: Any, build_id: str) -> None:
        self.channel = channel
        self.metadata = [(BUILD_ID_KEY, build_id)]

    def call(self, method: str, request: Any, response_cls: Any, timeout: float | None = None) -> Any:
        stub = self.channel.unary_unary(BRIDGE + method, request_serializer=type(request).SerializeToString,
                                        response_deserializer=response_cls.FromString)
        return stub(request, metadata=self.metadata, timeout=timeout)

    def wait_registered(self, solve_future: Any) -> list[str]:
        """Ping until the daemon knows the build; the gateway caps it enables. grpc.RpcError when the Solve
        ended, the daemon is unreachable or it did not register the build in REGISTER_WAIT_S."""
        import time

        import grpc

        from workbench.remote.proto import gateway_pb2 as gw

        deadline = time.monotonic() + REGISTER_WAIT_S
        while True:
            try:
                pong = self.call("Ping", gw.PingRequest(), gw.PongResponse, timeout=5)
                break
            except grpc.RpcError as e:
                if solve_future.done() or time.monotonic() > deadline or e.code() == grpc.StatusCode.UNAVAILABLE:
                    raise
                time.sleep(0.05)  # "no such job" until the daemon has registered the Solve
        return [c.ID for c in pong.FrontendAPICaps if c.Enabled]


def read_dir(gateway: Gateway, ref: str, path: str) -> list[Any]:
    """ReadDir: the entries (fsutil Stat: path = the name, mode as Go's FileMode) of directory `path` in `ref`."""
    from workbench.remote.proto import gateway_pb2 as gw

    req = gw.ReadDirRequest(Ref=ref, DirPath=path)
    return list(gateway.call("ReadDir", req, gw.ReadDirResponse, timeout=60).entries)


def stat_file(gateway: Gateway, ref: str, path: str) -> Any:
    """StatFile: `path` in `ref` (an fsutil Stat)."""
    from workbench.remote.proto import gateway_pb2 as gw

    req = gw.StatFileRequest(Ref=ref, Path=path)
    return gateway.call("StatFile", req, gw.StatFileResponse, timeout=60).stat
