"""`workbench build --addr ADDR` (no --frontend): our own graph, converted by the local frontend, solved by the
daemon as a pb.Definition, exported with our image config; the daemon's status told under our vertex digests.
On Docker 20.10's dockerd (BuildKit v0.8) and on /tmp/bk's buildkitd v0.20 when it runs."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.docker_daemon import DockerDaemon, docker_daemon  # noqa: F401  (the fixture)
from tests.test_remote_build import buildkitd_addr, workbench

pytestmark = pytest.mark.real

APP = """FROM localhost:5055/busybox
ENV GREETING=hi
WORKDIR /app
COPY hello.txt .
RUN cat hello.txt && echo built-$((6 * 7)) > out.txt
USER 1000:1000
LABEL org.example.kind=graph
EXPOSE 8080/tcp
CMD ["cat", "/app/out.txt"]
"""

STAGES = """FROM localhost:5055/busybox as build
RUN mkdir -p /out && echo from-build > /out/made.txt
FROM localhost:5055/busybox
COPY --from=build /out/made.txt /copied/
COPY --link hello.txt /linked/
RUN cat /copied/made.txt /linked/hello.txt > /both.txt
"""


@pytest.fixture(params=["docker", "buildkitd"])
def addr(request: pytest.FixtureRequest, registry: str) -> str:
    if request.param == "docker":
        daemon: DockerDaemon = request.getfixturevalue("docker_daemon")
        return daemon.addr
    return buildkitd_addr()


def _context(tmp_path: Path, dockerfile: str) -> Path:
    """A context whose file is new each run: a daemon keeps its cache between test runs."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "hello.txt").write_text(f"hello {uuid.uuid4().hex}\n")
    return ctx


def _files(tar_path: Path, under: str) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        out = {}
        for m in tar.getmembers():
            name = m.name.strip("/").removeprefix("./")
            if m.isfile() and name.startswith(under):
                f = tar.extractfile(m)
                assert f is not None
                out[name] = f.read()
        return out


def _oci_config(tar_path: Path) -> dict[str, Any]:
    """The image config of a one-platform OCI (or docker) archive."""
    with tarfile.open(tar_path) as tar:
        def blob(digest: str) -> Any:
            f = tar.extractfile("blobs/" + digest.replace(":", "/"))
            assert f is not None
            return json.loads(f.read())

        index_file = tar.extractfile("index.json")
        assert index_file is not None
        manifest = blob(json.load(index_file)["manifests"][0]["digest"])
        return dict(blob(manifest["config"]["digest"]))


def _local_config(ctx: Path, tmp_path: Path, root: Path) -> dict[str, Any]:
    out = tmp_path / "local-oci.tar"
    r = workbench("--progress", "plain", "-o", f"type=oci,dest={out}", str(ctx), root=root)
    assert r.returncode == 0, r.stderr
    return _oci_config(out)


def _rawjson(r: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [v for line in r.stderr.splitlines() if line.startswith("{")
            for v in json.loads(line).get("vertexes", [])]


def test_our_graph_builds_exports_and_reruns_cached(addr: str, tmp_path: Path, root: Path) -> None:
    ctx = _context(tmp_path, APP)
    out = tmp_path / "out.tar"
    first = workbench("--addr", addr, "--progress", "plain", "-o", f"type=tar,dest={out}", str(ctx), root=root)
    assert first.returncode == 0, first.stderr
    assert "[4/4] RUN cat hello.txt" in first.stderr
    assert (ctx / "hello.txt").read_text() in first.stderr  # the RUN's log: the context came through the session
    assert _files(out, "app/") == {"app/hello.txt": (ctx / "hello.txt").read_bytes(), "app/out.txt": b"built-42\n"}

    # the image config is our frontend's, exactly as a local build makes it
    local = _local_config(ctx, tmp_path, root)
    if addr.startswith("docker://"):
        tag = f"wb-graph/app:{uuid.uuid4().hex[:8]}"
        r = workbench("--addr", addr, "--progress", "plain", "-t", tag, str(ctx), root=root)
        assert r.returncode == 0, r.stderr
        socket = addr.removeprefix("docker://")
        inspect = subprocess.run(["docker", "-H", f"unix://{socket}", "image", "inspect", tag],
                                 capture_output=True, text=True, timeout=60)
        assert inspect.returncode == 0, inspect.stderr
        theirs = json.loads(inspect.stdout)[0]["Config"]
        for ours_key, docker_key in (("Env", "Env"), ("Cmd", "Cmd"), ("WorkingDir", "WorkingDir"),
                                     ("User", "User"), ("Labels", "Labels"), ("ExposedPorts", "ExposedPorts")):
            assert theirs[docker_key] == local["config"][ours_key], docker_key
    else:
        oci = tmp_path / "remote-oci.tar"
        r = workbench("--addr", addr, "--progress", "plain", "-o", f"type=oci,dest={oci}", str(ctx), root=root)
        assert r.returncode == 0, r.stderr
        assert _oci_config(oci)["config"] == local["config"]
    assert local["config"]["Env"][-1] == "GREETING=hi" and local["config"]["User"] == "1000:1000"

    # a rerun: every step of ours CACHED, under our vertex digests (those `workbench inspect llb` lists)
    again = workbench("--addr", addr, "--progress", "rawjson", "-o", f"type=tar,dest={out}", str(ctx), root=root)
    assert again.returncode == 0, again.stderr
    llb = subprocess.run([sys.executable, "-m", "workbench.cli", "inspect", "llb", "--root", str(root), str(ctx)],
                         capture_output=True, text=True, timeout=120)
    assert llb.returncode == 0, llb.stderr
    ours = {json.loads(line)["digest"]: json.loads(line)["name"] for line in llb.stdout.splitlines()}
    steps = {d: n for d, n in ours.items() if n.startswith(("[2/4]", "[3/4]", "[4/4]"))}
    assert len(steps) == 3
    vertexes = _rawjson(again)
    for digest, name in steps.items():
        seen = [v for v in vertexes if v["digest"] == digest]
        assert seen and all(v["name"] == name for v in seen), name
        assert any(v.get("cached") for v in seen), name
    assert not any(v.get("started") and not v.get("cached") for v in vertexes if v["digest"] in steps)


def test_a_failing_run_names_its_dockerfile_line(addr: str, tmp_path: Path, root: Path) -> None:
    ctx = _context(tmp_path, "FROM localhost:5055/busybox\nCOPY hello.txt /\n"
                             f"RUN echo about-to-fail-{uuid.uuid4().hex[:6]} && exit 3\n")
    r = workbench("--addr", addr, "--progress", "plain", str(ctx), root=root)
    assert r.returncode == 1, r.stderr
    error_part = r.stderr[r.stderr.index("------"):]
    assert "Dockerfile:3" in error_part, r.stderr
    assert " >>> RUN echo about-to-fail-" in error_part
    assert "exit code: 3" in error_part


def test_multi_stage_copy_from_and_link(addr: str, tmp_path: Path, root: Path) -> None:
    """COPY --from another stage, and COPY --link (a merge; on Docker 20.10, which has no MergeOp, copies); the
    local frontend's checks are printed as a local build prints them."""
    ctx = _context(tmp_path, STAGES)
    out = tmp_path / "out.tar"
    r = workbench("--addr", addr, "--progress", "plain", "-o", f"type=tar,dest={out}", str(ctx), root=root)
    assert r.returncode == 0, r.stderr
    assert " - FromAsCasing: 'as' and 'FROM' keywords' casing do not match\n" in r.stderr
    files = {**_files(out, "copied/"), **_files(out, "linked/"), **_files(out, "both.txt")}
    hello = (ctx / "hello.txt").read_bytes()
    assert files == {"copied/made.txt": b"from-build\n", "linked/hello.txt": hello,
                     "both.txt": b"from-build\n" + hello}


def test_unknown_frontend_is_refused(tmp_path: Path, root: Path) -> None:
    ctx = _context(tmp_path, "FROM scratch\n")
    r = workbench("--addr", "unix:///run/buildkit/buildkitd.sock", "--frontend", "gateway.v0", str(ctx), root=root,
                  timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == ("workbench: error: --frontend gateway.v0: the daemon's frontend can only be "
                                "dockerfile.v0; leave --frontend out to send workbench's own build graph")


def test_status_of_our_graph_uses_our_digests() -> None:
    """The fold names the daemon's op digests by our vertex digests, with the step's Dockerfile lines."""
    from workbench.progress.events import Event, SourceLocation, VertexCached, VertexStarted
    from workbench.remote.proto import control_pb2 as pb
    from workbench.remote.status import StatusFold

    events: list[Event] = []
    where = SourceLocation("Dockerfile", 3, 3)
    fold = StatusFold(events.append, graph={"sha256:op1": "sha256:ours1", "sha256:op2": "sha256:ours2"},
                      sources={"sha256:op2": where}, names={"sha256:op1": "[1/2] FROM b"})
    started = pb.StatusResponse(vertexes=[pb.Vertex(digest="sha256:op2", inputs=["sha256:op1"], name="[2/2] RUN x")])
    started.vertexes[0].started.seconds = 10
    # a daemon sharing the vertex with another job may name it as that job does: our name stays
    cached = pb.StatusResponse(vertexes=[pb.Vertex(digest="sha256:op1", name="[stage-0 1/3] FROM b", cached=True)])
    fold.apply(cached)
    fold.apply(started)
    assert isinstance(events[0], VertexCached) and events[0].vertex == "sha256:ours1"
    assert events[0].name == "[1/2] FROM b"
    assert isinstance(events[1], VertexStarted) and events[1].vertex == "sha256:ours2"
    assert events[1].inputs == ("sha256:ours1",) and events[1].source == where


def test_definition_in_the_solve_request() -> None:
    from workbench.remote.proto import control_pb2 as pb
    from workbench.remote.proto import ops_pb2
    from workbench.remote.solve import SolvePlan, solve_request

    d = ops_pb2.Definition()
    getattr(d, "def").append(b"\x12\x00")
    req = solve_request(SolvePlan(frontend="", definition=d.SerializeToString()), "ref", "sess")
    assert isinstance(req, pb.SolveRequest) and req.Frontend == "" and list(getattr(req.Definition, "def")) == [
        b"\x12\x00"]
    assert base64.b64encode(req.Definition.SerializeToString()) == base64.b64encode(d.SerializeToString())
