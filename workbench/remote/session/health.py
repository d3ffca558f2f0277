"""grpc.health.v1.Health: the daemon's liveness probe of the session (Docker 20.10: every second, and one
answer slower than 10 s ends the session)."""

from __future__ import annotations

from workbench.remote.session.h2server import Call, Handler, unary
from workbench.remote.session.proto.health_pb2 import HealthCheckResponse

SERVING = HealthCheckResponse(status=HealthCheckResponse.SERVING).SerializeToString()


def _check(request: bytes, call: Call) -> bytes:
    return SERVING


def _watch(call: Call) -> None:
    """Serving now, and until the call ends."""
    call.recv()
    call.send(SERVING)
    call.closed.wait()


HANDLERS: dict[str, Handler] = {
    "/grpc.health.v1.Health/Check": unary(_check),
    "/grpc.health.v1.Health/Watch": _watch,
}
