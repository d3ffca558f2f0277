"""moby.buildkit.secrets.v1.Secrets/GetSecret from the build's `--secret` sources.

A value is read when the daemon asks for it and goes only into the response: never into a log, an error
message or an event. When we send our own graph we know every id it can ask for (`graph_secrets` keeps only
those); with the daemon's Dockerfile frontend we cannot, and every `--secret` is served.
"""

from __future__ import annotations

from collections.abc import Mapping

from workbench.remote.proto import ops_pb2 as pb
from workbench.remote.session.h2server import NOT_FOUND, UNKNOWN, Call, GrpcError, Handler, unary
from workbench.remote.session.proto.secrets_pb2 import GetSecretRequest, GetSecretResponse
from workbench.solver.session import SecretNotFound, SecretSource, SessionError

GIT_AUTH_ATTRS = ("git.authtokensecret", "git.authheadersecret")


def referenced_ids(definition: pb.Definition) -> set[str]:
    """The secret ids a Definition can make the daemon ask for: its secret mounts and secret env, and for a git
    source its auth secrets as BuildKit's git source asks for them (`ID.<host>`, then `ID`)."""
    ids: set[str] = set()
    for data in getattr(definition, "def"):  # (a Python keyword)
        op = pb.Op.FromString(data)
        if op.HasField("exec"):
            ids.update(m.secretOpt.ID for m in op.exec.mounts if m.mountType == pb.SECRET)
            ids.update(e.ID for e in op.exec.secretenv)
        elif op.HasField("source") and op.source.identifier.startswith("git://"):
            host = op.source.identifier.removeprefix("git://").split("/", 1)[0]
            for attr in GIT_AUTH_ATTRS:
                if name := op.source.attrs.get(attr):
                    ids.update((f"{name}.{host}", name))
    return ids


def graph_secrets(secrets: Mapping[str, SecretSource], definition: pb.Definition) -> dict[str, SecretSource]:
    """`secrets` less the ids `definition` never asks for: a daemon asking for one of those gets NOT_FOUND, as
    for an id the user did not pass."""
    wanted = referenced_ids(definition)
    return {sid: source for sid, source in secrets.items() if sid in wanted}


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
