"""moby.filesync.v1.Auth: registry credentials for the daemon, from docker's config.json.

Only Credentials is served; the token methods answer UNIMPLEMENTED, so the daemon fetches registry tokens
itself with these credentials (it calls FetchToken only after GetTokenAuthority returned a key).
"""

from __future__ import annotations

from pathlib import Path

from workbench.image.registry_config import docker_credentials
from workbench.remote.session.h2server import UNIMPLEMENTED, Call, GrpcError, Handler, unary
from workbench.remote.session.proto.auth_pb2 import CredentialsRequest, CredentialsResponse

PREFIX = "/moby.filesync.v1.Auth/"


def _unimplemented(call: Call) -> None:
    raise GrpcError(UNIMPLEMENTED, f"{call.path} is not served by this client")


def auth_handlers(config_dir: Path | None = None) -> dict[str, Handler]:
    """Credentials(host) → (user, secret) from $DOCKER_CONFIG / ~/.docker (or `config_dir`), read at each call;
    no entry → an empty answer (anonymous)."""

    def credentials(request: bytes, call: Call) -> bytes:
        host = CredentialsRequest.FromString(request).Host
        found = docker_credentials(host, config_dir)
        if found is None:
            return CredentialsResponse().SerializeToString()
        return CredentialsResponse(Username=found[0], Secret=found[1]).SerializeToString()

    return {
        PREFIX + "Credentials": unary(credentials),
        PREFIX + "FetchToken": _unimplemented,
        PREFIX + "GetTokenAuthority": _unimplemented,
        PREFIX + "VerifyTokenAuthority": _unimplemented,
    }
