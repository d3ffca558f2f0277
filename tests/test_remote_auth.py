"""Registry credentials: docker's credential helpers (`credsStore`, `credHelpers`), read for the local registry
client and the session's Auth service alike, and Auth answering only for the hosts the build has a reason to
contact. A fake `docker-credential-test` on PATH speaks the real helper protocol (`get`, the server on stdin,
JSON on stdout, exit 1 when it has nothing); it logs the servers it was asked for, never a secret."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.test_push_registry import PASSWORD, USER, AuthRegistry, basic_registry  # noqa: F401  (the fixture)
from tests.test_remote_build import ENV, buildkitd_addr
from workbench.image.registry_config import docker_credentials
from workbench.remote.session.auth import allowed_hosts, auth_handlers
from workbench.remote.session.proto.auth_pb2 import CredentialsRequest, CredentialsResponse

HELPER = """#!/bin/sh
[ "$1" = get ] || exit 2
read -r server
echo "$server" >> "{log}"
case "$server" in
{cases}
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """make(name, {server: (user, secret)}): a docker-credential-NAME on PATH; returns its log of servers asked."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

    def make(name: str, creds: dict[str, tuple[str, str]], raw: str = "") -> Path:
        log = tmp_path / f"{name}.log"
        cases = "\n".join(f"  '{server}') echo '{json.dumps({'ServerURL': server, 'Username': u, 'Secret': s})}' ;;"
                          for server, (u, s) in creds.items())
        script = bindir / f"docker-credential-{name}"
        script.write_text(raw or HELPER.format(log=log, cases=cases))
        script.chmod(0o755)
        return log

    return make


def config(tmp_path: Path, **entries: object) -> Path:
    d = tmp_path / "docker"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(entries))
    return d


def ask(host: str, conf: Path, allowed: frozenset[str] | None = None) -> tuple[str, str]:
    """The Auth service's answer for `host` (its handler, called as the h2 server calls it)."""

    class Call:
        path = "/moby.filesync.v1.Auth/Credentials"

        def __init__(self) -> None:
            self.sent: list[bytes] = []
            self.requests = [CredentialsRequest(Host=host).SerializeToString()]

        def recv(self) -> bytes | None:
            return self.requests.pop() if self.requests else None

        def send(self, message: bytes) -> None:
            self.sent.append(message)

    call = Call()
    auth_handlers(conf, allowed)["/moby.filesync.v1.Auth/Credentials"](call)  # type: ignore[arg-type]
    answer = CredentialsResponse.FromString(call.sent[0])
    return answer.Username, answer.Secret


def test_creds_store_answers_for_every_host(helper: Callable[..., Path], tmp_path: Path) -> None:
    log = helper("test", {"registry.example:5000": ("alice", "pa55"),
                          "https://index.docker.io/v1/": ("hubber", "hub-secret")})
    conf = config(tmp_path, credsStore="test",
                  auths={"registry.example:5000": {"auth": "aWdub3JlZDppZ25vcmVk"}})  # the helper wins
    assert docker_credentials("registry.example:5000", conf) == ("alice", "pa55")
    assert docker_credentials("registry-1.docker.io", conf) == ("hubber", "hub-secret")  # docker's name for Hub
    assert docker_credentials("other.example", conf) is None  # "not found": anonymous
    assert log.read_text().split() == ["registry.example:5000", "https://index.docker.io/v1/", "other.example"]
    assert ask("registry.example:5000", conf) == ("alice", "pa55")


def test_cred_helpers_take_precedence_per_host(helper: Callable[..., Path], tmp_path: Path) -> None:
    helper("store", {"a.example": ("from-store", "s1"), "b.example": ("from-store", "s2")})
    helper("special", {"b.example": ("from-special", "s3")})
    conf = config(tmp_path, credsStore="store", credHelpers={"b.example": "special"})
    assert docker_credentials("a.example", conf) == ("from-store", "s1")
    assert docker_credentials("b.example", conf) == ("from-special", "s3")


@pytest.mark.parametrize("raw", [
    "#!/bin/sh\necho not json\n",
    "#!/bin/sh\necho '[1, 2]'\n",
    "#!/bin/sh\necho '{\"Username\": \"u\"}'\n",  # no secret
    "#!/bin/sh\necho boom >&2; exit 3\n",
    "not even a script",  # exec format error
])
def test_a_broken_helper_means_no_credentials(helper: Callable[..., Path], tmp_path: Path, raw: str) -> None:
    helper("broken", {}, raw=raw)
    conf = config(tmp_path, credsStore="broken")
    assert docker_credentials("registry.example", conf) is None
    assert ask("registry.example", conf) == ("", "")


def test_a_missing_or_odd_helper_means_no_credentials(tmp_path: Path) -> None:
    assert docker_credentials("registry.example", config(tmp_path, credsStore="absent-here")) is None
    assert docker_credentials("registry.example", config(tmp_path, credsStore="../../bin/sh")) is None


@pytest.mark.parametrize("path", ["", ".", "{abs}:", ":{abs}", "{abs}::", "bin", "./bin"])
def test_a_helper_is_not_run_from_the_current_folder(helper: Callable[..., Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """PATH's empty and relative entries name the folder we run in (a cloned repository): a docker-credential-*
    planted there is not run; the same helper in an absolute PATH folder is."""
    log = helper("planted", {"registry.example": ("mallory", "stolen")})
    monkeypatch.chdir(tmp_path)
    conf = config(tmp_path, credsStore="planted")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}")
    assert docker_credentials("registry.example", conf) == ("mallory", "stolen")  # absolute: found
    for planted_in in (tmp_path, tmp_path / "bin"):
        monkeypatch.chdir(planted_in)
        monkeypatch.setenv("PATH", path.format(abs="/nonexistent-dir"))
        assert docker_credentials("registry.example", conf) is None
    assert log.read_text().split() == ["registry.example"]  # asked once: from the absolute folder only


def test_identity_token_goes_alone(helper: Callable[..., Path], tmp_path: Path) -> None:
    helper("test", {"registry.example": ("<token>", "refresh-me")})
    conf = config(tmp_path, credsStore="test")
    assert ask("registry.example", conf) == ("", "refresh-me")  # as BuildKit's authprovider


def test_only_hosts_the_build_contacts_get_credentials(helper: Callable[..., Path], tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    log = helper("test", {"registry.example:5000": ("alice", "pa55"), "evil.example": ("alice", "pa55")})
    conf = config(tmp_path, credsStore="test")
    allowed = allowed_hosts(["registry.example:5000/team/base:1", "busybox"])
    assert allowed >= {"registry.example:5000", "registry-1.docker.io", "docker.io", "index.docker.io"}
    caplog.set_level(logging.DEBUG)
    assert ask("registry.example:5000", conf, allowed) == ("alice", "pa55")
    assert ask("evil.example", conf, allowed) == ("", "")  # as if none were configured
    assert log.read_text().split() == ["registry.example:5000"]  # the helper was never asked for it
    refused = [r for r in caplog.records if "evil.example" in r.getMessage()]
    assert refused and all(r.levelno == logging.DEBUG for r in refused)
    assert "pa55" not in caplog.text


def test_engine_allows_base_cache_and_push_hosts(tmp_path: Path) -> None:
    from workbench.remote.engine import _registry_refs
    from workbench.remote.proto import ops_pb2
    from workbench.remote.solve import Exporter, SolvePlan

    op = ops_pb2.Op(source=ops_pb2.SourceOp(identifier="docker-image://base.example/img:1"))
    definition = ops_pb2.Definition()
    getattr(definition, "def").append(op.SerializeToString())
    plan = SolvePlan(frontend="", definition=definition.SerializeToString(),
                     cache_imports=[Exporter("registry", {"ref": "cache.example/c:1"})],
                     cache_exports=[Exporter("inline")],
                     exporters=[Exporter("image", {"name": "push.example/a:1,push2.example/b:2", "push": "true"}),
                                Exporter("image", {"name": "nopush.example/a:1"})])
    assert allowed_hosts(_registry_refs(plan, definition)) == {"base.example", "cache.example", "push.example",
                                                           "push2.example"}


# -- a real build: the base image on a registry with basic auth, credentials from a helper -------------------------

@pytest.fixture
def private_base(basic_registry: AuthRegistry, registry: str) -> Iterator[str]:  # noqa: F811
    """busybox copied into the basic-auth registry: its reference."""
    name = f"{basic_registry.host}/private/busybox:latest"
    sk = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--dest-creds",
                         f"{USER}:{PASSWORD}", "docker://localhost:5055/busybox", f"docker://{name}"],
                        capture_output=True, text=True, timeout=120)
    assert sk.returncode == 0, sk.stderr
    yield name


@pytest.mark.real
def test_remote_build_pulls_with_helper_credentials(private_base: str, basic_registry: AuthRegistry,  # noqa: F811
                                                    helper: Callable[..., Path], tmp_path: Path, root: Path) -> None:
    """Our graph on buildkitd v0.20: the local frontend resolves the base and the daemon pulls it, both with the
    credentials `docker-credential-test` gives for the registry."""
    addr = buildkitd_addr()
    log = helper("test", {basic_registry.host: (USER, PASSWORD)})
    conf = config(tmp_path, credsStore="test")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    marker = os.urandom(6).hex()
    (ctx / "Dockerfile").write_text(f"FROM {private_base}\nRUN echo private-{marker}\n")
    env = {**ENV, "DOCKER_CONFIG": str(conf), "PATH": os.environ["PATH"]}
    r = subprocess.run([sys.executable, "-m", "workbench.cli", "build", "--root", str(root), "--addr", addr,
                        "--progress", "plain", str(ctx)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert f"private-{marker}" in r.stderr
    assert basic_registry.host in log.read_text().split()
    assert PASSWORD not in r.stderr + r.stdout
    assert not list(root.glob("history/*/*")) or all(PASSWORD not in p.read_text(errors="replace")
                                                     for p in root.glob("history/*/*") if p.is_file())
