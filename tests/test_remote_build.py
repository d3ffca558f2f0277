"""`workbench build --addr ADDR --frontend dockerfile.v0`: builds on a real BuildKit with the daemon's own
Dockerfile frontend, its SolveStatus printed by our printers. On Docker 20.10's dockerd (BuildKit v0.8, through
the /grpc relay), and on /tmp/bk's buildkitd v0.20 when it runs (skipped, saying so, when it does not)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.docker_daemon import DockerDaemon, docker_daemon  # noqa: F401  (the fixture)

BUILDKITD_SOCKET = "/tmp/bk/buildkitd.sock"
pytestmark = pytest.mark.real
ENV = {**{k: v for k, v in os.environ.items() if k != "BUILDKIT_HOST"}, "WORKBENCH_SERVER": "0"}


def workbench(*args: str, root: Path, timeout: float = 300,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbench.cli", "build", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=timeout, env={**ENV, **(env or {})})


def context_with(tmp_path: Path, dockerfile: str, name: str = "ctx") -> Path:
    ctx = tmp_path / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "hello.txt").write_text("hello from the context\n")
    (ctx / "ignored.txt").write_text("never sent\n")
    (ctx / ".dockerignore").write_text("ignored.txt\n")
    return ctx


def _listening(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def buildkitd_addr() -> str:
    """The address of /tmp/bk's buildkitd v0.20; the test is skipped, saying so, when it does not answer."""
    if not _listening(BUILDKITD_SOCKET):
        pytest.skip(f"no buildkitd v0.20 answers at {BUILDKITD_SOCKET} (start /tmp/bk/buildkitd to run this)")
    return f"unix://{BUILDKITD_SOCKET}"


@pytest.fixture(params=["docker", "buildkitd"])
def addr(request: pytest.FixtureRequest, registry: str) -> str:
    if request.param == "docker":
        daemon: DockerDaemon = request.getfixturevalue("docker_daemon")
        return daemon.addr
    return buildkitd_addr()


COPY_RUN = """FROM localhost:5055/busybox
COPY hello.txt /hello.txt
RUN cat /hello.txt && ls / > /listing && echo remote-run-$((6 * 7))
"""


def test_build_then_rebuild_cached(addr: str, tmp_path: Path, root: Path) -> None:
    ctx = context_with(tmp_path, COPY_RUN)
    with (ctx / "hello.txt").open("a") as f:  # new content each run: a daemon keeps its cache between runs
        f.write(f"run {os.urandom(8).hex()}\n")
    first = workbench("--addr", addr, "--frontend", "dockerfile.v0", "--progress", "plain", str(ctx), root=root)
    assert first.returncode == 0, first.stderr
    out = first.stderr
    assert "[2/3] COPY hello.txt /hello.txt" in out
    assert "[3/3] RUN cat /hello.txt" in out
    assert "hello from the context" in out  # the RUN's log, from the file sent through the session
    assert "remote-run-42" in out
    assert "DONE" in out
    second = workbench("--addr", addr, "--frontend", "dockerfile.v0", "--progress", "plain", str(ctx), root=root)
    assert second.returncode == 0, second.stderr
    lines = second.stderr.splitlines()
    for step in ("[2/3] COPY hello.txt /hello.txt", "[3/3] RUN cat /hello.txt"):
        number = next(line.split()[0] for line in lines if step in line)
        assert f"{number} CACHED" in lines, second.stderr
    assert "remote-run-42" not in second.stderr  # nothing ran


def test_a_failing_run_names_the_step(addr: str, tmp_path: Path, root: Path) -> None:
    ctx = context_with(tmp_path, "FROM localhost:5055/busybox\nRUN echo about-to-fail && exit 3\n")
    r = workbench("--addr", addr, "--frontend", "dockerfile.v0", "--progress", "plain", str(ctx), root=root)
    assert r.returncode == 1
    assert "about-to-fail" in r.stderr
    error_part = r.stderr[r.stderr.index("------"):]
    assert " > [2/2] RUN echo about-to-fail && exit 3:" in error_part
    assert "ERROR: failed to solve:" in error_part and "exit code: 3" in error_part


def test_rawjson_events_parse(addr: str, tmp_path: Path, root: Path) -> None:
    ctx = context_with(tmp_path, "FROM localhost:5055/busybox\nRUN echo raw-$((2 + 3))\n")
    r = workbench("--frontend", "dockerfile.v0", "--progress", "rawjson", "--no-cache", str(ctx), root=root,
                  env={"BUILDKIT_HOST": addr})  # the daemon named by the variable, as buildctl takes it
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    names = {v["name"] for d in docs for v in d.get("vertexes", [])}
    assert "[2/2] RUN echo raw-$((2 + 3))" in names
    logs = b"".join(__import__("base64").b64decode(log["data"]) for d in docs for log in d.get("logs", []))
    assert b"raw-5" in logs


OUTPUT_FILES = """FROM localhost:5055/busybox AS build
COPY hello.txt /out/hello.txt
RUN --mount=type=secret,id=tok mkdir -p /out/sub && echo made > /out/sub/made.txt && \\
    test "$(cat /run/secrets/tok)" = s3cret-value && echo secret-ok
FROM scratch
COPY --from=build /out /
"""


def test_local_output_and_secret(addr: str, tmp_path: Path, root: Path) -> None:
    ctx = context_with(tmp_path, OUTPUT_FILES)
    (tmp_path / "tok").write_text("s3cret-value")
    dest = tmp_path / "dest"
    r = workbench("--addr", addr, "--frontend", "dockerfile.v0", "--progress", "plain", "--secret",
                  f"id=tok,src={tmp_path / 'tok'}", "--output", f"type=local,dest={dest}", str(ctx), root=root)
    assert r.returncode == 0, r.stderr
    assert "secret-ok" in r.stderr
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["hello.txt", "sub", "sub/made.txt"]
    assert (dest / "hello.txt").read_text() == "hello from the context\n"
    assert (dest / "sub" / "made.txt").read_text() == "made\n"


def test_tar_output(addr: str, tmp_path: Path, root: Path) -> None:
    import tarfile

    ctx = context_with(tmp_path, OUTPUT_FILES)
    (tmp_path / "tok").write_text("s3cret-value")
    out = tmp_path / "out.tar"
    r = workbench("--addr", addr, "--frontend", "dockerfile.v0", "--progress", "plain", "--secret",
                  f"id=tok,src={tmp_path / 'tok'}", "--output", f"type=tar,dest={out}", str(ctx), root=root)
    assert r.returncode == 0, r.stderr
    with tarfile.open(out) as tar:
        names = sorted(m.name.strip("/") for m in tar.getmembers())
        assert names == ["hello.txt", "sub", "sub/made.txt"]
        made = tar.extractfile("sub/made.txt")
        assert made is not None and made.read() == b"made\n"


# -- Docker 20.10 only -------------------------------------------------------------------------------------------

def test_tag_gives_a_docker_image_over_a_long_build(docker_daemon: DockerDaemon, registry: str,  # noqa: F811
                                                    tmp_path: Path, root: Path) -> None:
    """Also: Docker 20.10 checks the session's health every second and drops it at the first miss, so a
    build longer than 10 s holds only if the session answers throughout."""
    ctx = context_with(tmp_path, "FROM localhost:5055/busybox\nCOPY hello.txt /\nRUN sleep 12 && echo slept\n")
    r = workbench("--addr", docker_daemon.addr, "--frontend", "dockerfile.v0", "--progress", "plain",
                  "-t", "wb-remote/tagged:1", "--metadata-file", str(tmp_path / "meta.json"), str(ctx), root=root)
    assert r.returncode == 0, r.stderr
    assert "slept" in r.stderr
    inspect = subprocess.run(["docker", "-H", f"unix://{docker_daemon.socket}", "image", "inspect",
                              "wb-remote/tagged:1"], capture_output=True, text=True, timeout=60)
    assert inspect.returncode == 0, inspect.stderr
    image = json.loads(inspect.stdout)[0]
    assert "wb-remote/tagged:1" in image["RepoTags"]
    metadata = json.loads((tmp_path / "meta.json").read_text())
    assert metadata["containerimage.digest"] == image["Id"]  # the moby exporter's answer: the image id


def test_unsupported_output_is_one_line(docker_daemon: DockerDaemon, registry: str,  # noqa: F811
                                        tmp_path: Path, root: Path) -> None:
    ctx = context_with(tmp_path, "FROM localhost:5055/busybox\n")
    r = workbench("--addr", docker_daemon.addr, "--frontend", "dockerfile.v0", "--progress", "plain",
                  "--output", f"type=oci,dest={tmp_path / 'out.tar'}", str(ctx), root=root)
    assert r.returncode == 1
    error = [line for line in r.stderr.splitlines() if line.startswith("ERROR")]
    assert error == ["ERROR: failed to solve: --output type=oci is not supported by Docker 20.10's BuildKit "
                     "(it supports type=image, type=local, type=tar)"], r.stderr


def test_session_on_docker_session_endpoint(docker_daemon: DockerDaemon, registry: str,  # noqa: F811
                                            tmp_path: Path) -> None:
    """The engine in this process, its session served on a hijacked `POST /session` (the docker CLI's way):
    the context arrives, the RUN's output streams back as events, and the events end with BuildFinished."""
    from workbench.progress.events import BuildFinished, Event, EventBus, VertexCompleted, VertexLog
    from workbench.remote.address import parse_address
    from workbench.remote.engine import RemoteEngine
    from workbench.request import BuildRequest

    ctx = context_with(tmp_path, "FROM localhost:5055/busybox\nCOPY hello.txt /\nRUN cat /hello.txt\n")
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    engine = RemoteEngine(parse_address(docker_daemon.addr), docker_session=True)
    engine.build(BuildRequest(ctx, ctx / "Dockerfile", no_cache=True, root=tmp_path / "root"), bus)
    logs = b"".join(e.data for e in events if isinstance(e, VertexLog) and e.name == "[3/3] RUN cat /hello.txt")
    assert logs == b"hello from the context\n"
    assert {e.name for e in events if isinstance(e, VertexCompleted)} >= {"[2/3] COPY hello.txt /",
                                                                         "[3/3] RUN cat /hello.txt"}
    assert isinstance(events[-1], BuildFinished) and events[-1].error == ""


def _sleepers(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                    found.append(int(pid))
            except OSError:
                pass
    return found


def test_ctrl_c_cancels_the_remote_solve(docker_daemon: DockerDaemon, registry: str,  # noqa: F811
                                         tmp_path: Path, root: Path) -> None:
    marker = "31"
    ctx = context_with(tmp_path, f"FROM localhost:5055/busybox\nRUN echo sleeping && sleep {marker}\n")
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "build", "--root", str(root), "--addr",
                             docker_daemon.addr, "--frontend", "dockerfile.v0", "--progress", "plain", "--no-cache",
                             str(ctx)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            # as a terminal's foreground job has it, whatever an earlier test left in this process
                            # (a child inherits an ignored SIGINT, and Python then installs no handler)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    interrupt_when_running(proc, marker)


def interrupt_when_running(proc: subprocess.Popen[str], marker: str,
                           running: Callable[[], bool] = lambda: True) -> None:
    """Ctrl-C the build `proc` once its step `sleep MARKER` runs (and `running()` holds): it ends `build canceled`
    (130), and the daemon kills the step's container."""
    try:
        deadline = time.monotonic() + 120
        while not (_sleepers(marker) and running()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)  # far below the time the step would take
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "build canceled" in err
    deadline = time.monotonic() + 15
    while _sleepers(marker) and time.monotonic() < deadline:  # the daemon kills the step's container
        time.sleep(0.2)
    assert _sleepers(marker) == []


# -- refusals, before any daemon is asked --------------------------------------------------------------------------

def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.stderr.count("\n") == 1, r.stderr
    return r.stderr.strip()


def test_unreachable_addr_is_one_line(tmp_path: Path, root: Path) -> None:
    ctx = context_with(tmp_path, "FROM scratch\n")
    r = workbench("--addr", f"unix://{tmp_path}/none.sock", "--frontend", "dockerfile.v0", "--progress", "plain",
                  str(ctx), root=root, timeout=60)
    assert r.returncode == 1
    line = next(line for line in r.stderr.splitlines() if line.startswith("ERROR"))
    assert line == (f"ERROR: failed to solve: cannot reach BuildKit at unix://{tmp_path}/none.sock (--addr): "
                    f"{tmp_path}/none.sock does not exist; start buildkitd there, or point --addr (or "
                    f"BUILDKIT_HOST) at a running daemon")


def test_frontend_without_addr_is_refused(tmp_path: Path, root: Path) -> None:
    ctx = context_with(tmp_path, "FROM scratch\n")
    r = workbench("--frontend", "dockerfile.v0", str(ctx), root=root, timeout=60)
    assert r.returncode == 2
    assert one_error_line(r) == "workbench: error: --frontend needs a BuildKit daemon: pass --addr ADDR (or set " \
                                "BUILDKIT_HOST)"


def test_status_fold_merges_updates_by_digest() -> None:
    """A vertex reported started, then completed, then again completed, is one start and one end; a cached
    one is CACHED; logs and statuses go to their vertex."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from workbench.progress.events import VertexCached, VertexCompleted, VertexLog, VertexStarted, VertexStatus
    from workbench.remote.proto import control_pb2 as pb
    from workbench.remote.status import StatusFold

    events: list[object] = []
    fold = StatusFold(events.append)
    t1, t2 = Timestamp(seconds=100), Timestamp(seconds=103)
    fold.apply(pb.StatusResponse(vertexes=[pb.Vertex(digest="sha256:a", name="[1/2] FROM x", started=t1,
                                                     completed=t1, cached=True),
                                           pb.Vertex(digest="sha256:b", name="[2/2] RUN y", inputs=["sha256:a"],
                                                     started=t1)]))
    fold.apply(pb.StatusResponse(logs=[pb.VertexLog(vertex="sha256:b", stream=1, msg=b"out\n", timestamp=t1)],
                                 statuses=[pb.VertexStatus(ID="pull", vertex="sha256:b", current=5, total=10)]))
    fold.apply(pb.StatusResponse(vertexes=[pb.Vertex(digest="sha256:b", name="[2/2] RUN y", inputs=["sha256:a"],
                                                     started=t1, completed=t2)]))
    fold.apply(pb.StatusResponse(vertexes=[pb.Vertex(digest="sha256:b", name="[2/2] RUN y", started=t1,
                                                     completed=t2)]))
    kinds = [(type(e).__name__, e.vertex) for e in events]  # type: ignore[attr-defined]
    assert kinds == [("VertexCached", "sha256:a"), ("VertexStarted", "sha256:b"), ("VertexStatus", "sha256:b"),
                     ("VertexLog", "sha256:b"), ("VertexCompleted", "sha256:b")]
    assert isinstance(events[1], VertexStarted) and events[1].inputs == ("sha256:a",)
    assert isinstance(events[0], VertexCached)
    assert isinstance(events[3], VertexLog) and events[3].data == b"out\n"
    assert isinstance(events[2], VertexStatus) and (events[2].current, events[2].total) == (5, 10)
    assert isinstance(events[4], VertexCompleted) and events[4].duration == 3.0


def test_the_solve_request_always_carries_cache_options() -> None:
    """buildkitd v0.20 reads SolveRequest.Cache without a nil check: a request without it panics the daemon."""
    from workbench.remote.solve import Exporter, SolvePlan, solve_request

    plan = SolvePlan("dockerfile.v0", {"filename": "Dockerfile"}, [Exporter("image", {"name": "a/b:c"})])
    req = solve_request(plan, "ref", "session")
    assert req.HasField("Cache")
    assert [(e.Type, dict(e.Attrs)) for e in req.Exporters] == [("image", {"name": "a/b:c"})]
    assert (req.ExporterDeprecated, dict(req.ExporterAttrsDeprecated)) == ("image", {"name": "a/b:c"})
    legacy = solve_request(SolvePlan("dockerfile.v0", exporters=[Exporter("moby", {"name": "x"})],
                                     legacy_exporter=True), "ref", "session")
    assert not legacy.Exporters and legacy.ExporterDeprecated == "moby" and legacy.HasField("Cache")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True,
                          timeout=120, env=ENV)


def test_du_and_prune_on_the_daemon(docker_daemon: DockerDaemon, registry: str, tmp_path: Path,  # noqa: F811
                                    root: Path) -> None:
    """`du --addr` lists the daemon's build cache (not the local root's), `prune --addr --all` empties it."""
    ctx = context_with(tmp_path, f"FROM localhost:5055/busybox\nRUN echo {os.urandom(6).hex()} > /f\n")
    built = workbench("--addr", docker_daemon.addr, "--frontend", "dockerfile.v0", str(ctx), root=root)
    assert built.returncode == 0, built.stderr
    du = _cli("du", "--addr", docker_daemon.addr)
    assert du.returncode == 0, du.stderr
    lines = du.stdout.splitlines()
    assert lines[0].split() == ["ID", "RECLAIMABLE", "SIZE", "LAST", "ACCESSED"] and len(lines) > 3, du.stdout
    assert lines[-1].startswith("Total:") and lines[-1].split()[1] != "0B", du.stdout
    pruned = _cli("prune", "--addr", docker_daemon.addr, "--all")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.splitlines()[-1].startswith("Total:") and len(pruned.stdout.splitlines()) > 2
    after = _cli("du", "--addr", docker_daemon.addr).stdout.splitlines()
    assert after[-1].split()[1] in ("0B", "0.0B"), after
    bad = _cli("du", "--addr", "unix:///nonexistent/buildkitd.sock")
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_daemon_error_text_is_redacted(docker_daemon: DockerDaemon, registry: str, tmp_path: Path,  # noqa: F811
                                       root: Path) -> None:
    """The daemon's error text, printed by us, shows no secret value (here the failed command holds one)."""
    value = f"hunter2-{os.urandom(4).hex()}"
    ctx = context_with(tmp_path, f"FROM localhost:5055/busybox\nRUN --mount=type=secret,id=tok true && "
                                 f"echo {value} > /dev/null && exit 3\n")
    (tmp_path / "tok").write_text(value)
    for frontend in (["--frontend", "dockerfile.v0"], []):
        r = workbench("--addr", docker_daemon.addr, *frontend, "--progress", "plain", "--secret",
                      f"id=tok,src={tmp_path / 'tok'}", str(ctx), root=root)
        assert r.returncode == 1, r.stderr
        errors = [line for line in r.stderr.splitlines() if line.startswith("ERROR:")]
        assert errors and "exit code: 3" in errors[-1], r.stderr
        assert value not in "\n".join(errors) and "****" in errors[-1], r.stderr  # (the Dockerfile excerpt is
        # the user's own text, shown as the local engine shows it)


def test_device_nodes_in_a_local_output_only_when_asked(addr: str, tmp_path: Path, root: Path) -> None:
    if addr.startswith("docker://"):
        pytest.skip("Docker 20.10's BuildKit copies a device node as an empty regular file: nothing to refuse")
    ctx = context_with(tmp_path, "FROM localhost:5055/busybox AS b\nRUN mknod /node c 1 3\n"
                                 "FROM scratch\nCOPY --from=b /node /node\n")
    refused = workbench("--addr", addr, "--output", f"type=local,dest={tmp_path / 'out'}", str(ctx), root=root)
    assert refused.returncode == 1 and "refusing 'node': a device node" in refused.stderr, refused.stderr
    assert not (tmp_path / "out").exists()
    made = workbench("--addr", addr, "--output", f"type=local,dest={tmp_path / 'out'},devices=true", str(ctx),
                     root=root)
    assert made.returncode == 0, made.stderr
    st = (tmp_path / "out" / "node").lstat()
    import stat

    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
