"""moby.buildkit.secrets.v1.Secrets/GetSecret from the build's `--secret` sources.

A value is read when the daemon asks for it and goes only into the response: never into a log, an error
message or an event.
"""

from __future__ import annotations

from collections.abc import Mapping

from workbench.remote.session.h2server import NOT_FOUND, UNKNOWN, Call, GrpcError, Handler, unary
from workbench.remote.session.proto.secrets_pb2 import GetSecretRequest, GetSecretResponse
from workbench.solver.session import SecretNotFound, SecretSource, SessionError


def secrets_handlers(secrets: Mapping[str, SecretSource]) -> dict[str, Handler]:
    """GetSecret answering from `secrets` by id; NOT_FOUND for an unknown id or an unset variable (the daemon
    then fails the mount, or skips it when optional)."""

    def get(request: bytes, call: Call) -> bytes:
        sid = GetSecretRequest.FromString(request).ID
        source = secrets.get(sid)
        if source is None:
            raise GrpcError(NOT_FOUND, f"secret {sid} not found")
        try:
            value = source.read()
        except SecretNotFound as e:
            raise GrpcError(NOT_FOUND, str(e)) from None
        except SessionError as e:  # names the file, never the value
            raise GrpcError(UNKNOWN, str(e)) from None
        return GetSecretResponse(data=value).SerializeToString()

    return {"/moby.buildkit.secrets.v1.Secrets/GetSecret": unary(get)}
