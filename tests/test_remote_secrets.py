"""The session's Secrets service gives the daemon only the `--secret` ids our graph mounts (red-team finding 8):
an id the user passed that no step mounts is NOT_FOUND, as if not passed. With the daemon's Dockerfile frontend
we cannot know which ids the build mounts, and every `--secret` is served."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.test_remote_build import buildkitd_addr, workbench
from tests.test_remote_marshal import _graph
from tests.test_remote_session import Served
from workbench.remote.address import parse_address
from workbench.remote.engine import RemoteEngine
from workbench.remote.marshal import marshal
from workbench.remote.session.proto.secrets_pb2 import GetSecretRequest, GetSecretResponse
from workbench.remote.session.services import SessionServices
from workbench.request import BuildRequest
from workbench.solver.session import SecretSource, Session

GET_SECRET = "/moby.buildkit.secrets.v1.Secrets/GetSecret"
MOUNTS_A = "FROM busybox\nRUN --mount=type=secret,id=a --mount=type=secret,id=e,env=E true\n"


def _request(tmp_path: Path, text: str, secrets: dict[str, bytes]) -> BuildRequest:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(text)
    sources = {}
    for sid, value in secrets.items():
        (tmp_path / sid).write_bytes(value)
        sources[sid] = SecretSource(sid, path=str(tmp_path / sid))
    return BuildRequest(context=ctx, dockerfile=ctx / "Dockerfile", root=tmp_path / "root",
                        session=Session(secrets=sources))


def _get(channel: grpc.Channel, sid: str) -> bytes:
    call = channel.unary_unary(GET_SECRET, request_serializer=GetSecretRequest.SerializeToString,
                               response_deserializer=GetSecretResponse.FromString)
    return call(GetSecretRequest(ID=sid), timeout=10).data


def test_our_graph_serves_only_the_ids_it_mounts(tmp_path: Path) -> None:
    request = _request(tmp_path, MOUNTS_A, {"a": b"value-a", "b": b"value-b", "e": b"value-e"})
    engine = RemoteEngine(parse_address("unix:///nonexistent/buildkitd.sock"), frontend="")
    plan = engine.graph_plan(request, marshal(_graph(MOUNTS_A), MOUNTS_A), {})
    served = Served(tmp_path / "s.sock", SessionServices(secrets=plan.secrets).handlers())
    try:
        assert _get(served.channel, "a") == b"value-a"  # a mount
        assert _get(served.channel, "e") == b"value-e"  # a secret env
        with pytest.raises(grpc.RpcError) as e:
            _get(served.channel, "b")  # passed, mounted by no step: as if not passed
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert e.value.details() == "secret b not found"
    finally:
        served.close()


def test_git_sources_may_ask_for_their_auth_secrets(tmp_path: Path) -> None:
    text = "FROM busybox\nADD https://github.com/moby/buildkit.git#v0.1 /src\n"
    secrets = {"GIT_AUTH_TOKEN.github.com": b"t1", "GIT_AUTH_TOKEN": b"t2", "GIT_AUTH_TOKEN.gitlab.com": b"t3"}
    request = _request(tmp_path, text, secrets)
    plan = RemoteEngine(parse_address("unix:///nonexistent/buildkitd.sock"), frontend="").graph_plan(
        request, marshal(_graph(text), text), {})
    assert sorted(plan.secrets) == ["GIT_AUTH_TOKEN", "GIT_AUTH_TOKEN.github.com"]  # not another host's token


def test_the_dockerfile_frontend_serves_every_secret(tmp_path: Path) -> None:
    request = _request(tmp_path, MOUNTS_A, {"a": b"value-a", "b": b"value-b"})
    plan = RemoteEngine(parse_address("unix:///nonexistent/buildkitd.sock"), frontend="dockerfile.v0").plan(request)
    assert sorted(plan.secrets) == ["a", "b"]  # the daemon's frontend decides what it mounts: we cannot tell


SECRET_RUN = """FROM localhost:5055/busybox
RUN --mount=type=secret,id=a test "$(cat /run/secrets/a)" = "$(printf 'sec%s' ret-a-4d1f)" && echo secret-a-ok
"""


@pytest.mark.real
def test_the_mounted_secret_builds_and_its_value_is_in_no_log(registry: str, tmp_path: Path, root: Path) -> None:
    addr = buildkitd_addr()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(SECRET_RUN)
    (tmp_path / "a").write_text("secret-a-4d1f")
    (tmp_path / "b").write_text("secret-b-77c2")
    r = workbench("--addr", addr, "--progress", "plain", "--no-cache", "--secret", f"id=a,src={tmp_path / 'a'}",
                  "--secret", f"id=b,src={tmp_path / 'b'}", str(ctx), root=root)
    assert r.returncode == 0, r.stderr
    assert "secret-a-ok" in r.stderr
    for value in (b"secret-a-4d1f", b"secret-b-77c2"):
        assert value.decode() not in r.stdout + r.stderr
        leaks = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and value in p.read_bytes()]
        assert not leaks, leaks
