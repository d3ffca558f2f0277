"""moby.filesync.v1.Auth: registry credentials for the daemon, from docker's config.json.

Credentials come as docker finds them (workbench.image.registry_config.docker_credentials): the host's
credential helper (`credHelpers`, else `credsStore`) when one is configured, else "auths". They are given only
for the hosts the build has a reason to contact (`allowed`: its base images' registries, its registry caches,
its push targets); any other host gets the answer of a host without credentials, logged at debug level only.
Only Credentials is served; the token methods answer UNIMPLEMENTED, so the daemon fetches registry tokens
itself with these credentials (it calls FetchToken only after GetTokenAuthority returned a key).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from workbench.image.reference import InvalidReference, parse_reference
from workbench.image.registry_config import docker_credentials
from workbench.remote.session.h2server import UNIMPLEMENTED, Call, GrpcError, Handler, unary
from workbench.remote.session.proto.auth_pb2 import CredentialsRequest, CredentialsResponse

PREFIX = "/moby.filesync.v1.Auth/"
IDENTITY_TOKEN_USER = "<token>"  # a helper's Username for an identity token (docker's tokenUsername)
HUB_HOSTS = frozenset({"registry-1.docker.io", "index.docker.io", "docker.io"})

log = logging.getLogger(__name__)


def _unimplemented(call: Call) -> None:
    raise GrpcError(UNIMPLEMENTED, f"{call.path} is not served by this client")


def registry_host(ref: str) -> str | None:
    """The registry host the daemon contacts for image reference `ref` ("registry-1.docker.io" for Docker Hub),
    None when `ref` is not a reference."""
    try:
        return parse_reference(ref).registry
    except InvalidReference:
        return None


def allowed_hosts(refs: Iterable[str]) -> frozenset[str]:
    """The registry hosts of `refs` (image references), Docker Hub under all of its names."""
    hosts = {h for ref in refs if (h := registry_host(ref))}
    return frozenset(hosts | HUB_HOSTS if hosts & HUB_HOSTS else hosts)


def auth_handlers(config_dir: Path | None = None, allowed: frozenset[str] | None = None) -> dict[str, Handler]:
    """Credentials(host) → (user, secret) from $DOCKER_CONFIG / ~/.docker (or `config_dir`), read at each call;
    no entry, or a host outside `allowed` (None: any host), → an empty answer (anonymous)."""

    def credentials(request: bytes, call: Call) -> bytes:
        host = CredentialsRequest.FromString(request).Host
        if allowed is not None and host not in allowed:
            log.debug("no registry credentials for %r: the build has no reason to contact it", host)
            return CredentialsResponse().SerializeToString()
        found = docker_credentials(host, config_dir)
        if found is None:
            return CredentialsResponse().SerializeToString()
        user, secret = found
        if user == IDENTITY_TOKEN_USER:  # as BuildKit's authprovider: an identity token goes alone
            return CredentialsResponse(Secret=secret).SerializeToString()
        return CredentialsResponse(Username=user, Secret=secret).SerializeToString()

    return {
        PREFIX + "Credentials": unary(credentials),
        PREFIX + "FetchToken": _unimplemented,
        PREFIX + "GetTokenAuthority": _unimplemented,
        PREFIX + "VerifyTokenAuthority": _unimplemented,
    }
