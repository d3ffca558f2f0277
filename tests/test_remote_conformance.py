"""The Dockerfile conformance cases built on a real BuildKit (`workbench build --addr`): each gives the image in
its expected.json, a rerun is all CACHED from the daemon, and the history record names the engine.

Engines: Docker 20.10 (BuildKit v0.8, tests/docker_daemon.py; its image is read back with `docker save`) and
/tmp/bk's buildkitd v0.20 (`--output type=oci`; skipped, saying so, when its socket is down). Frontend paths: the
daemon's Dockerfile frontend (`--frontend dockerfile.v0`) and our own build graph (no --frontend).

CI runs REPRESENTATIVE (a case for each kind of op: RUN, COPY forms, multi-stage, mounts, metadata, ADD, a
failure); WORKBENCH_REMOTE_FULL=1 runs every case.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import CONFORMANCE
from tests.docker_daemon import DockerDaemon, docker_daemon  # noqa: F401  (the fixture)
from tests.test_remote_build import ENV, buildkitd_addr

sys.path.insert(0, str(CONFORMANCE))
import ocitree  # noqa: E402
import run as conformance_run  # noqa: E402

pytestmark = pytest.mark.real

CASES = sorted(p.name for p in (CONFORMANCE / "cases").iterdir() if (p / "Dockerfile").exists())
REPRESENTATIVE = ["f01-empty-wildcard", "v01-run-basic", "v03-copy-basic", "v04-copy-chown-chmod", "v05-multistage",
                  "v06-args", "v09-dockerignore", "v11-metadata", "v13-mount-bind", "v14-mount-secret", "v16-target",
                  "v17-add-archive", "v20-delete", "v25-run-fails"]
FULL = os.environ.get("WORKBENCH_REMOTE_FULL", "") not in ("", "0")
RUN_CASES = CASES if FULL else REPRESENTATIVE
# the rerun (all CACHED) costs a third of a case: CI reruns the cases whose cache keys take the most (files from
# the context and other stages, owners, mounts); WORKBENCH_REMOTE_FULL=1 reruns every case
RERUN = set(CASES) if FULL else {"v04-copy-chown-chmod", "v05-multistage", "v09-dockerignore", "v13-mount-bind",
                                 "v14-mount-secret"}

# Cases an engine cannot build as expected.json says, and why (expected.json is BuildKit v0.20 with
# Dockerfile frontend 1.14). Keys: (engine, frontend path or "*", case).
DOCKER_V08 = "Docker 20.10's BuildKit v0.8 "
V08_FRONTEND = DOCKER_V08 + "Dockerfile frontend "
V08_MOUNT_DIR = DOCKER_V08 + "leaves a RUN --mount target's directory in the image (v0.20 removes it)"
SKIPS: dict[tuple[str, str, str], str] = {
    ("docker", "dockerfile.v0", "f05-sbom-scan-args"):
        V08_FRONTEND + "predates the reserved BUILDKIT_SBOM_SCAN_* args and passes them to RUN's environment",
    ("docker", "*", "v02-env-workdir-user"):
        DOCKER_V08 + "gives USER 1000:1000 no supplementary groups (`id` prints no groups=1000)",
    ("docker", "dockerfile.v0", "v07-heredoc-run"): V08_FRONTEND + "has no heredocs",
    ("docker", "dockerfile.v0", "v08-heredoc-copy"): V08_FRONTEND + "has no heredocs",
    ("docker", "*", "v12-mount-cache"): V08_MOUNT_DIR,
    ("docker", "*", "v13-mount-bind"): V08_MOUNT_DIR,
    ("docker", "dockerfile.v0", "v14-mount-secret"): V08_FRONTEND + "has no RUN --mount=type=secret,env=",
    ("docker", "graph", "v14-mount-secret"):
        DOCKER_V08 + "lacks the LLB cap exec.secretenv (RUN --mount=type=secret,env=): refused in one line",
    ("docker", "*", "v15-mount-tmpfs"): V08_MOUNT_DIR,
    ("docker", "dockerfile.v0", "v24-copy-link"): V08_FRONTEND + "has no COPY --link",
}


def skip_reason(engine: str, frontend: str, case: str) -> str:
    return SKIPS.get((engine, frontend, case)) or SKIPS.get((engine, "*", case), "")


# -- an image to compare ---------------------------------------------------------------------------------------

def whiteouts_mode_0(layer: bytes) -> bytes:
    """The layer with its whiteout markers (.wh.*) at mode 0000, as BuildKit writes them. ocitree reads a
    whiteout at the root as a file (it strips the leading dot with "./"), so the marker's mode shows in the
    tree; Docker's layer export writes 0600. A whiteout's mode means nothing: only its name does."""
    with tarfile.open(fileobj=io.BytesIO(layer)) as src:
        members = src.getmembers()
        if not any(posixpath.basename(m.name).startswith(".wh.") and m.mode for m in members):
            return layer
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=src.format) as dst:
            for m in members:
                if posixpath.basename(m.name).startswith(".wh."):
                    m.mode = 0
                dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    return out.getvalue()


def docker_save_as_oci(save_tar: Path, oci_tar: Path) -> None:
    """A `docker save` archive (manifest.json, the config, each layer's layer.tar) as the OCI layout tar that
    ocitree reads: the same config and layers, as content-addressed blobs under one manifest."""
    with tarfile.open(save_tar) as src:
        def read(name: str) -> bytes:
            f = src.extractfile(name)
            assert f is not None, name
            return f.read()

        saved = json.loads(read("manifest.json"))[0]
        blobs: dict[str, bytes] = {}

        def put(data: bytes) -> dict[str, object]:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            blobs[digest] = data
            return {"digest": digest, "size": len(data)}

        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(read(saved["Config"]))},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                **put(whiteouts_mode_0(read(layer)))} for layer in saved["Layers"]]}
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                **put(json.dumps(manifest).encode())}]}
    with tarfile.open(oci_tar, "w") as out:
        for name, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                           ("index.json", json.dumps(index).encode()),
                           *((f"blobs/sha256/{d.split(':', 1)[1]}", b) for d, b in blobs.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


# -- engines -----------------------------------------------------------------------------------------------------

ENGINES = ["docker", "buildkitd"]
FRONTENDS = ["dockerfile.v0", "graph"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, registry: str) -> tuple[str, str]:
    """(engine name, address)."""
    if request.param == "docker":
        daemon: DockerDaemon = request.getfixturevalue("docker_daemon")
        return "docker", daemon.addr
    return "buildkitd", buildkitd_addr()


def build_cmd(case_dir: Path, meta: dict[str, object], addr: str, frontend: str, root: Path,
              output: list[str], empty: Path) -> list[str]:
    cmd = conformance_run.workbench_cmd(str(case_dir), meta, "OUT")
    args = cmd[cmd.index("build") + 1:]
    if not (case_dir / "context").is_dir():  # git keeps no empty folder: the case's context is empty
        empty.mkdir(exist_ok=True)
        args[args.index(f"{case_dir}/context")] = str(empty)
    i = args.index("--output")
    del args[i:i + 2]  # the output is the engine's: an OCI tar, or a Docker image
    front = ["--frontend", frontend] if frontend != "graph" else []
    return [sys.executable, "-m", "workbench.cli", "build", "--root", str(root), "--addr", addr, *front,
            *output, *args]


def steps(stderr: str) -> dict[str, str]:
    """The numbered steps ([n/m] and [stage n/m]) of a plain progress log, by vertex number; a FROM is left
    out: BuildKit resolves the image again on every build and reports its source DONE, not CACHED."""
    found = (re.match(r"^(#\d+) (\[(?:\S+ )?\d+/\d+\] (\S+).*)$", line) for line in stderr.splitlines())
    return {m[1]: m[2] for m in found if m and m[3] != "FROM"}


def not_cached(stderr: str) -> list[str]:
    """The steps of a plain progress log that did not end CACHED."""
    lines = set(stderr.splitlines())
    return [name for number, name in steps(stderr).items() if f"{number} CACHED" not in lines]


def docker_image(daemon_addr: str, ref: str, out: Path) -> None:
    save = out.with_suffix(".save.tar")
    sock = daemon_addr.removeprefix("docker://")
    p = subprocess.run(["docker", "-H", f"unix://{sock}", "save", "-o", str(save), ref], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    docker_save_as_oci(save, out)


@pytest.mark.parametrize("frontend", FRONTENDS)
@pytest.mark.parametrize("case", RUN_CASES)
def test_case_on_daemon(case: str, frontend: str, engine: tuple[str, str], registry: str, tmp_path: Path,
                        root: Path) -> None:
    name, addr = engine
    why = skip_reason(name, frontend, case)
    if why:
        pytest.skip(why)
    case_dir = CONFORMANCE / "cases" / case
    meta = conformance_run.load_case(str(case_dir))
    expected = json.loads((case_dir / "expected.json").read_text())
    out = tmp_path / "out.tar"
    ref = f"wb-conformance/{case}:{uuid.uuid4().hex[:12]}"
    output = ["-t", ref] if name == "docker" else ["--output", f"type=oci,dest={out}"]
    cmd = build_cmd(case_dir, meta, addr, frontend, root, output, tmp_path / "empty")
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    if expected.get("fails"):
        assert first.returncode != 0, "built, but BuildKit fails this case"
        assert re.search(meta.get("error_pattern", ""), first.stdout + first.stderr, re.I), first.stderr[-800:]
        return
    assert first.returncode == 0, first.stderr[-2000:]
    if name == "docker":
        docker_image(addr, ref, out)
    base = ocitree.describe(registry)["tree"]
    diff = conformance_run.diff(expected, ocitree.against_base(ocitree.describe(str(out)), base))
    assert not diff, "\n".join(diff)

    if case in RERUN:
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
        assert again.returncode == 0, again.stderr[-2000:]
        assert sorted(steps(again.stderr).values()) == sorted(steps(first.stderr).values()), again.stderr[-3000:]
        assert not_cached(again.stderr) == [], again.stderr[-3000:]

    engines = [json.loads(p.read_text())["engine"] for p in sorted((root / "history").glob("*/meta.json"))]
    want = (rf"docker 20\.10\.\S+ \(buildkit v0\.8\) at {re.escape(addr)}" if name == "docker"
            else rf"buildkit v\S+ at {re.escape(addr)}")  # a from-source build says v0.0.0+unknown
    assert len(engines) == (2 if case in RERUN else 1) and all(re.fullmatch(want, e) for e in engines), engines


def test_docker_save_as_oci_reads_like_an_oci_export(tmp_path: Path) -> None:
    """The converted archive gives ocitree the config and the layers applied in order (whiteouts honoured), a
    root whiteout showing as BuildKit's (mode 0000, see whiteouts_mode_0)."""
    def layer(files: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for path, data in files.items():
                info = tarfile.TarInfo(path)
                info.size, info.mode = len(data), 0o644
                t.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    config = {"config": {"Env": ["A=1"], "Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": []}}
    parts = {"manifest.json": json.dumps([{"Config": "c.json", "RepoTags": ["x:y"],
                                           "Layers": ["l1/layer.tar", "l2/layer.tar"]}]).encode(),
             "c.json": json.dumps(config).encode(),
             "l1/layer.tar": layer({"a": b"one\n", "d/gone": b"x"}),
             "l2/layer.tar": layer({"b": b"two\n", "d/.wh.gone": b"", ".wh.x": b""})}
    save = tmp_path / "save.tar"
    with tarfile.open(save, "w") as t:
        for path, data in parts.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    oci = tmp_path / "oci.tar"
    docker_save_as_oci(save, oci)
    desc = ocitree.describe(str(oci))
    assert desc["config"] == {"Env": ["A=1"], "Cmd": ["sh"]}

    def entry(data: bytes) -> str:
        return f"f 0644 0:0 {len(data)} {hashlib.sha256(data).hexdigest()[:16]} {json.dumps(data.decode())}"

    assert desc["tree"] == {"/a": entry(b"one\n"), "/b": entry(b"two\n"),
                            "/wh.x": 'f 0000 0:0 0 e3b0c44298fc1c14 ""'}
