"""`workbench build --addr … --frontend dockerfile.v0` with the build's options passed to a real daemon: `--ssh`
(a real ssh-agent), `--cache-to` / `--cache-from`, `push=true`, `--allow`, the engine in the history record,
and the faults (a daemon that goes away mid-build, what a daemon cannot do), each in one line.

Daemons: Docker 20.10 (BuildKit v0.8) of tests/docker_daemon.py, and a buildkitd v0.20 of this module's own
(/tmp/bk's binary with a state dir of ours, since its cache is pruned here), both one per module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker_daemon import DockerDaemon, _kill_own_containerd, docker_daemon, start_dockerd, stop_dockerd  # noqa: F401
from tests.test_remote_build import ENV, _listening, _sleepers, context_with, workbench

pytestmark = pytest.mark.real
BUILDKITD = "/tmp/bk/buildkitd"
REGISTRY = "http://127.0.0.1:5055"


@pytest.fixture(scope="module")
def buildkitd() -> Iterator[str]:
    """A buildkitd v0.20 of this module (its own state, so pruning it touches no one else's cache): its address."""
    if os.geteuid() != 0 or not os.access(BUILDKITD, os.X_OK):
        pytest.skip(f"needs root and {BUILDKITD} (BuildKit v0.20)")
    base = Path(tempfile.mkdtemp(prefix="wb-bkd-", dir="/tmp"))
    (base / "buildkitd.toml").write_text('[registry."localhost:5055"]\n  http = true\n')
    sock = base / "buildkitd.sock"
    log = open(base / "buildkitd.log", "wb")
    proc = subprocess.Popen([BUILDKITD, "--root", str(base / "state"), "--addr", f"unix://{sock}",
                             "--oci-worker-net=host", "--config", str(base / "buildkitd.toml"),
                             "--allow-insecure-entitlement", "network.host"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    try:
        deadline = time.monotonic() + 60
        while not _listening(str(sock)):
            assert proc.poll() is None, (base / "buildkitd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "buildkitd did not listen within 60 s"
            time.sleep(0.1)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        subprocess.run(["umount", "-R", "-l", str(base / "state")], capture_output=True, timeout=30)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["docker", "buildkitd"])
def addr(request: pytest.FixtureRequest, registry: str) -> str:
    name = "docker_daemon" if request.param == "docker" else "buildkitd"
    found = request.getfixturevalue(name)
    return found.addr if isinstance(found, DockerDaemon) else str(found)


def remote(addr: str, ctx: Path, root: Path, *args: str, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    return workbench("--addr", addr, "--frontend", "dockerfile.v0", "--progress", "plain", *args, str(ctx),
                     root=root, env=env)


def error_lines(r: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("ERROR")]


def cached_steps(r: subprocess.CompletedProcess[str]) -> set[str]:
    """The names of the steps the plain printer showed as CACHED."""
    lines = r.stderr.splitlines()
    numbers = {line.split()[0] for line in lines if line.endswith(" CACHED")}
    return {line.split(" ", 1)[1] for line in lines if line.split(" ", 1)[0] in numbers and "[" in line
            and not line.endswith(" CACHED")}


def manifest(repo: str, tag: str) -> dict:
    req = urllib.request.Request(f"{REGISTRY}/v2/{repo}/manifests/{tag}", headers={"Accept": ", ".join([
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json"])})
    with urllib.request.urlopen(req, timeout=30) as answer:
        return json.loads(answer.read())


def prune(addr: str) -> None:
    from workbench.remote.address import parse_address
    from workbench.remote.control import Control

    with Control(parse_address(addr), timeout=120) as control:
        control.prune(all=True)


# -- --ssh ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Path]:
    if not shutil.which("ssh-agent"):
        pytest.skip("needs openssh-client (scripts/install.sh)")
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)


SSH_MOUNT = """FROM localhost:5055/busybox
RUN --mount=type=ssh{opt} test -S "$SSH_AUTH_SOCK" && echo agent-{tag}-$((40 + 2))
"""


def test_ssh_agent_is_forwarded(addr: str, agent: Path, tmp_path: Path, root: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    ctx = context_with(tmp_path, SSH_MOUNT.format(opt="", tag=tag))
    r = remote(addr, ctx, root, "--ssh", f"default={agent}")
    assert r.returncode == 0, r.stderr
    assert f"agent-{tag}-42" in r.stderr  # the socket was there, in the step

    required = context_with(tmp_path, SSH_MOUNT.format(opt=",required=true", tag=tag), name="required")
    r = remote(addr, required, root)
    assert r.returncode == 1, r.stderr
    assert f"agent-{tag}-42" not in r.stderr
    r = remote(addr, required, root, "--ssh", "default", env={"SSH_AUTH_SOCK": str(agent)})
    assert r.returncode == 0, r.stderr


def test_ssh_key_files_are_refused_in_one_line(docker_daemon: DockerDaemon, registry: str,  # noqa: F811
                                               tmp_path: Path, root: Path) -> None:
    key = tmp_path / "id_test"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    ctx = context_with(tmp_path, "FROM localhost:5055/busybox\n")
    r = remote(docker_daemon.addr, ctx, root, "--ssh", f"default={key}")
    assert r.returncode == 1
    assert error_lines(r) == [f"ERROR: failed to solve: --ssh default={key}: Docker 20.10's BuildKit is lent an "
                              f"ssh agent, not key files; load the keys into ssh-agent and pass --ssh "
                              f"default=$SSH_AUTH_SOCK"], r.stderr


# -- cache and push on buildkitd v0.20 --------------------------------------------------------------------------------

CACHED_RUN = "FROM localhost:5055/busybox\nCOPY hello.txt /\nRUN echo run-{tag}-$((1 + 1)) > /made && cat /made\n"
RUN_STEP = "[3/3] RUN echo run-{tag}-$((1 + 1)) > /made && cat /made"


def test_registry_cache_export_then_import_after_prune(buildkitd: str, registry: str, tmp_path: Path,
                                                       root: Path) -> None:
    tag = uuid.uuid4().hex[:12]
    ref = f"localhost:5055/wb-remote-cache:{tag}"
    ctx = context_with(tmp_path, CACHED_RUN.format(tag=tag))
    first = remote(buildkitd, ctx, root, "--cache-to", f"type=registry,ref={ref},mode=max")
    assert first.returncode == 0, first.stderr
    assert f"run-{tag}-2" in first.stderr
    cache = manifest("wb-remote-cache", tag)  # the cache manifest list, in the registry
    assert any(layer.get("mediaType", "").startswith("application/vnd.buildkit.cacheconfig")
               for layer in [cache.get("config", {}), *cache.get("manifests", [])]), cache

    prune(buildkitd)
    second = remote(buildkitd, ctx, root, "--cache-from", f"type=registry,ref={ref}")
    assert second.returncode == 0, second.stderr
    assert f"run-{tag}-2" not in second.stderr  # nothing ran again
    assert {"[2/3] COPY hello.txt /", RUN_STEP.format(tag=tag)} <= cached_steps(second)


def test_image_push_on_buildkitd(buildkitd: str, registry: str, tmp_path: Path, root: Path) -> None:
    tag = uuid.uuid4().hex[:12]
    ctx = context_with(tmp_path, CACHED_RUN.format(tag=tag))
    r = remote(buildkitd, ctx, root, "--output", f"type=image,name=localhost:5055/wb-remote-push:{tag},push=true")
    assert r.returncode == 0, r.stderr
    pushed = manifest("wb-remote-push", tag)
    assert pushed.get("layers") or pushed.get("manifests"), pushed
    meta = json.loads(next((root / "history").glob("*/meta.json")).read_text())
    assert re.fullmatch(rf"buildkit v\S+ at {re.escape(buildkitd)}", meta["engine"]), meta["engine"]
    listing = subprocess.run([sys.executable, "-m", "workbench.cli", "history", "ls", "--format", "json", "--root",
                              str(root)], capture_output=True, text=True, timeout=60, env=ENV)
    assert [d["engine"] for d in json.loads(listing.stdout)] == [meta["engine"]]
    table = subprocess.run([sys.executable, "-m", "workbench.cli", "history", "ls", "--root", str(root)],
                           capture_output=True, text=True, timeout=60, env=ENV).stdout.splitlines()
    column = table[0].index("ENGINE")
    assert table[1][column:].startswith(meta["engine"].split(" at ")[0] + " "), table


def test_entitlements_reach_buildkitd(buildkitd: str, registry: str, tmp_path: Path, root: Path) -> None:
    ctx = context_with(tmp_path, "FROM localhost:5055/busybox\nRUN --network=host echo host-net-$((1 + 1))\n")
    denied = remote(buildkitd, ctx, root, "--no-cache")
    assert denied.returncode == 1
    assert "network.host is not allowed" in "\n".join(error_lines(denied)), denied.stderr
    allowed = remote(buildkitd, ctx, root, "--no-cache", "--allow", "network.host")
    assert allowed.returncode == 0, allowed.stderr
    assert "host-net-2" in allowed.stderr


# -- Docker 20.10 --------------------------------------------------------------------------------------------------

def test_docker_push_inline_cache_then_import(docker_daemon: DockerDaemon, registry: str,  # noqa: F811
                                             tmp_path: Path, root: Path) -> None:
    """Docker's BuildKit stores the image and we push it through the Docker API; its inline cache, imported
    from the registry after the daemon's cache is pruned and the image removed, makes every step CACHED."""
    tag = uuid.uuid4().hex[:12]
    name = f"localhost:5055/wb-remote-dpush:{tag}"
    ctx = context_with(tmp_path, CACHED_RUN.format(tag=tag))
    first = remote(docker_daemon.addr, ctx, root, "--output", f"type=image,name={name},push=true",
                   "--cache-to", "type=inline")
    assert first.returncode == 0, first.stderr
    assert f"pushing {name}" in first.stderr and f"run-{tag}-2" in first.stderr
    pushed = manifest("wb-remote-dpush", tag)
    assert pushed["layers"], pushed
    meta = json.loads(next((root / "history").glob("*/meta.json")).read_text())
    assert meta["engine"] == f"docker {docker_daemon.version} (buildkit v0.8) at {docker_daemon.addr}"

    prune(docker_daemon.addr)
    rmi = subprocess.run(["docker", "-H", f"unix://{docker_daemon.socket}", "rmi", name], capture_output=True,
                         text=True, timeout=60)
    assert rmi.returncode == 0, rmi.stderr
    second = remote(docker_daemon.addr, ctx, root, "--cache-from", f"type=registry,ref={name}")
    assert second.returncode == 0, second.stderr
    assert f"run-{tag}-2" not in second.stderr
    assert {"[2/3] COPY hello.txt /", RUN_STEP.format(tag=tag)} <= cached_steps(second)


@pytest.mark.parametrize(("args", "line"), [
    (["--cache-to", "type=registry,ref=localhost:5055/x:c"],
     "--cache-to type=registry is not supported by Docker 20.10's BuildKit (it supports type=inline)"),
    (["--allow", "device=vendor.com/gpu=0"],
     "--allow device=vendor.com/gpu=0: Docker 20.10's BuildKit has no devices entitlement (CDI devices need "
     "BuildKit v0.20 or later: build with --addr on a buildkitd)"),
])
def test_what_docker_cannot_do_is_one_line(docker_daemon: DockerDaemon, registry: str,  # noqa: F811
                                           tmp_path: Path, root: Path, args: list[str], line: str) -> None:
    ctx = context_with(tmp_path, "FROM localhost:5055/busybox\n")
    r = remote(docker_daemon.addr, ctx, root, *args)
    assert r.returncode == 1
    assert error_lines(r) == [f"ERROR: failed to solve: {line}"], r.stderr


def test_a_daemon_that_goes_away_mid_build(registry: str, tmp_path: Path, root: Path) -> None:
    """The test's own dockerd, killed while a step sleeps: one line naming the address, no hang."""
    from tests.docker_daemon import dockerd_missing

    if why := dockerd_missing():
        pytest.skip(why)
    proc, daemon = start_dockerd()
    marker = "23"
    try:
        ctx = context_with(tmp_path, f"FROM localhost:5055/busybox\nRUN echo sleeping && sleep {marker}\n")
        build = subprocess.Popen([sys.executable, "-m", "workbench.cli", "build", "--root", str(root), "--addr",
                                  daemon.addr, "--frontend", "dockerfile.v0", "--progress", "plain", "--no-cache",
                                  str(ctx)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        try:
            deadline = time.monotonic() + 120
            while not _sleepers(marker):
                assert build.poll() is None and time.monotonic() < deadline, build.communicate()
                time.sleep(0.1)
            os.kill(proc.pid, signal.SIGKILL)
            _, err = build.communicate(timeout=20)  # below the step's own 23 s
        finally:
            if build.poll() is None:
                build.kill()
        assert build.returncode == 1, err
        lines = [line for line in err.splitlines() if line.startswith("ERROR")]
        assert len(lines) == 1 and lines[0].startswith(
            f"ERROR: failed to solve: the daemon went away: the connection to {daemon.addr} closed during the "
            f"build"), err
    finally:
        proc.wait(30)
        for pid in _sleepers(marker):  # the step's process, left by the killed daemon
            os.kill(pid, signal.SIGKILL)
        _kill_own_containerd(daemon.base)
        stop_dockerd(proc, daemon)


def test_solve_request_carries_cache_options() -> None:
    from workbench.remote.solve import Exporter, SolvePlan, solve_request

    plan = SolvePlan("dockerfile.v0", {"filename": "Dockerfile"},
                     cache_imports=[Exporter("registry", {"ref": "r/c:1"})],
                     cache_exports=[Exporter("inline")])
    req = solve_request(plan, "ref", "session")
    assert [(e.Type, dict(e.Attrs)) for e in req.Cache.Imports] == [("registry", {"ref": "r/c:1"})]
    assert [(e.Type, dict(e.Attrs)) for e in req.Cache.Exports] == [("inline", {})]
    assert json.loads(req.FrontendAttrs["cache-imports"]) == [{"Type": "registry", "Attrs": {"ref": "r/c:1"}}]


@pytest.mark.parametrize(("message", "line"), [
    ("failed to solve with frontend dockerfile.v0: requested experimental feature mergeop (Merge Op) is not supported "
     "by build server (added in v0.10), please update buildkit",
     "Docker 20.10's BuildKit lacks the capability mergeop this build needs (not supported, added in v0.10); use a "
     "newer BuildKit"),
    ("requested feature exec.mount.ssh  has been disabled on the build server: no agents",
     "Docker 20.10's BuildKit lacks the capability exec.mount.ssh this build needs (disabled there: no agents); "
     "use a newer BuildKit"),
    ("unknown API capability file.symlink", "Docker 20.10's BuildKit does not know the capability file.symlink this "
     "build needs; use a newer BuildKit"),
    ("process did not complete successfully: exit code: 3", "process did not complete successfully: exit code: 3"),
])
def test_a_missing_capability_is_one_line(message: str, line: str) -> None:
    """BuildKit's CapError texts (util/apicaps, v0.8 and v0.20 alike), as the engine reports them."""
    from workbench.remote.engine import cap_error

    assert cap_error("Docker 20.10's BuildKit", message) == line
