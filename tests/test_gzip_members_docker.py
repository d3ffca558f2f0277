"""Layers written as several gzip members (one per MiB of tar) are read whole by Go's gzip readers: a Docker
20.10 daemon loads an image exported with `--output type=docker` and pulls one pushed to the local registry,
checking each layer against its diff ID, and the files in its containers are the ones built."""

from __future__ import annotations

import io
import random
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import wb
from tests.docker_daemon import DockerDaemon, docker_daemon  # noqa: F401  (the fixture)

pytestmark = pytest.mark.real


def _context(tmp_path: Path) -> tuple[Path, bytes]:
    """A context whose layer spans several members, stored (random) and deflated (text) ones."""
    rnd = random.Random(22)
    text = b"".join(b"line %d of a source file\n" % i for i in range(90_000))
    big = rnd.randbytes(1_300_000) + text + rnd.randbytes(700_000) + b"the end\n"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "big").write_bytes(big)
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nCOPY big /data/big\n")
    return ctx, big


def _docker(daemon: DockerDaemon, *args: str) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(["docker", "-H", f"unix://{daemon.socket}", *args], capture_output=True, timeout=180)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc


def _file_in(daemon: DockerDaemon, image: str, path: str) -> bytes:
    container = _docker(daemon, "create", image, "/bin/true").stdout.decode().strip()
    try:
        archive = _docker(daemon, "cp", f"{container}:{path}", "-").stdout
    finally:
        _docker(daemon, "rm", container)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile(Path(path).name)
        assert member is not None
        return member.read()


def _layer_members(tar_path: Path) -> int:
    """How many gzip members the biggest layer of a docker-format tar has."""
    import zlib

    with tarfile.open(tar_path) as tar:
        blobs = [tar.extractfile(m).read() for m in tar.getmembers()  # type: ignore[union-attr]
                 if m.isfile() and m.size > 1_000_000]
    blob, count = max(blobs, key=len), 0
    while blob:
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        inflate.decompress(blob)
        blob, count = inflate.unused_data, count + 1
    return count


def test_docker_loads_and_pulls_a_layer_of_many_gzip_members(docker_daemon: DockerDaemon, registry: str,  # noqa: F811
                                                              tmp_path: Path, root: Path) -> None:
    ctx, big = _context(tmp_path)
    out = tmp_path / "image.tar"
    wb(str(ctx), "--output", f"type=docker,dest={out},name=members:loaded", root=root)
    assert _layer_members(out) >= 4
    _docker(docker_daemon, "load", "-i", str(out))
    assert _file_in(docker_daemon, "members:loaded", "/data/big") == big

    name = f"localhost:5055/members-{uuid.uuid4().hex[:12]}:pushed"
    wb(str(ctx), "--output", f"type=image,name={name},push=true", root=root)
    _docker(docker_daemon, "pull", name)
    assert _file_in(docker_daemon, name, "/data/big") == big
