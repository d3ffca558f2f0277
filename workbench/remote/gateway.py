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


def _fs_messages() -> dict[str, Any]:
    """ReadDirRequest/Response, StatFileRequest/Response and fsutil's Stat, as gateway.proto and fsutil's
    types/stat.proto declare them (field numbers are what the wire needs; built here, not generated)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="workbench_gateway_fs.proto", package="workbench.gatewayfs",
                                            syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, str]) -> None:
        m = fd.message_type.add(name=name)
        for fname, number, ftype, type_name in fields:
            label = f.LABEL_REPEATED if type_name.startswith("*") else f.LABEL_OPTIONAL
            field = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = ".workbench.gatewayfs." + type_name.lstrip("*")

    message("Stat", ("path", 1, f.TYPE_STRING, ""), ("mode", 2, f.TYPE_UINT32, ""), ("uid", 3, f.TYPE_UINT32, ""),
            ("gid", 4, f.TYPE_UINT32, ""), ("size", 5, f.TYPE_INT64, ""), ("modTime", 6, f.TYPE_INT64, ""),
            ("linkname", 7, f.TYPE_STRING, ""))
    message("ReadDirRequest", ("Ref", 1, f.TYPE_STRING, ""), ("DirPath", 2, f.TYPE_STRING, ""),
            ("IncludePattern", 3, f.TYPE_STRING, ""))
    message("ReadDirResponse", ("entries", 1, f.TYPE_MESSAGE, "*Stat"))
    message("StatFileRequest", ("Ref", 1, f.TYPE_STRING, ""), ("Path", 2, f.TYPE_STRING, ""))
    message("StatFileResponse", ("stat", 1, f.TYPE_MESSAGE, "Stat"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName("workbench.gatewayfs." + m.name))
            for m in fd.message_type}


_FS: dict[str, Any] = {}


def fs_message(name: str) -> Any:
    """One of the ReadDir/StatFile message classes (built once)."""
    if not _FS:
        _FS.update(_fs_messages())
    return _FS[name]


def read_dir(gateway: Gateway, ref: str, path: str) -> list[Any]:
    """ReadDir: the entries (fsutil Stat: path = the name, mode as Go's FileMode) of directory `path` in `ref`."""
    req = fs_message("ReadDirRequest")(Ref=ref, DirPath=path)
    return list(gateway.call("ReadDir", req, fs_message("ReadDirResponse"), timeout=60).entries)


def stat_file(gateway: Gateway, ref: str, path: str) -> Any:
    """StatFile: `path` in `ref` (an fsutil Stat)."""
    req = fs_message("StatFileRequest")(Ref=ref, Path=path)
    return gateway.call("StatFile", req, fs_message("StatFileResponse"), timeout=60).stat
