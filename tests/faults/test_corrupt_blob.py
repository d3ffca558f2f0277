"""A corrupted blob of the local content store never goes unnoticed (issue 15, item 7).

`--output type=oci|docker`, `image save` and a `FROM` of the stored image each fail naming the blob and the
image and saying how to get a good copy; nothing is shipped, and the bad blob leaves the store, so building
the image again repairs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, wb

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlay mounts)")

IMAGE = "corrupt-app:1"
FULL_NAME = "docker.io/library/corrupt-app:1"


def _stored_image(tmp_path: Path, root: Path) -> tuple[Path, dict[str, str]]:
    """Build and store IMAGE; returns the context and {"manifest"|"config"|"layer": digest}."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY big.bin /big.bin\nCOPY a.txt /a.txt\n")
    (ctx / "big.bin").write_bytes(os.urandom(3 << 20))
    (ctx / "a.txt").write_text("a\n")
    wb(str(ctx), "-t", IMAGE, root=root)
    manifest = json.loads((root / "images.json").read_text())["images"][FULL_NAME]["digest"]
    doc = json.loads(_blob(root, manifest).read_bytes())
    return ctx, {"manifest": manifest, "config": doc["config"]["digest"], "layer": doc["layers"][0]["digest"]}


def _blob(root: Path, digest: str) -> Path:
    return root / "content" / "blobs" / "sha256" / digest.split(":", 1)[1]


def _corrupt(root: Path, digest: str) -> None:
    """Flip one byte in the middle of the blob: same size, different content."""
    path = _blob(root, digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _assert_named(proc: subprocess.CompletedProcess[str], digest: str) -> None:
    assert proc.returncode != 0, proc.stderr[-2000:]
    err = proc.stderr
    assert "Traceback" not in err and "bad checksum" not in err, err[-2000:]
    line = next((x for x in err.splitlines() if digest in x and "corrupt" in x), "")
    assert line, err[-2000:]
    assert FULL_NAME in line and "workbench image pull" in line, line


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_archive_export_of_a_corrupt_layer_fails_and_ships_nothing(tmp_path: Path, root: Path, kind: str) -> None:
    ctx, digests = _stored_image(tmp_path, root)
    which = "layer"  # a build's export writes a config (and manifest) of its own; the layers are reused
    _corrupt(root, digests[which])
    out = tmp_path / "out"
    out.mkdir()
    proc = wb(str(ctx), "--output", f"type={kind},dest={out / 'image.tar'}", root=root, check=False)
    _assert_named(proc, digests[which])
    assert os.listdir(out) == []
    wb(str(ctx), "-t", IMAGE, root=root)  # the bad blob left the store: building again repairs it
    wb(str(ctx), "--output", f"type={kind},dest={out / 'image.tar'}", root=root)
    with tarfile.open(out / "image.tar") as tar:
        assert "blobs/sha256/" + digests[which].split(":", 1)[1] in tar.getnames()


@pytest.mark.parametrize("which", ["layer", "config", "manifest"])
def test_image_save_of_a_corrupt_blob_fails_and_ships_nothing(tmp_path: Path, root: Path, which: str) -> None:
    _, digests = _stored_image(tmp_path, root)
    _corrupt(root, digests[which])
    dest = tmp_path / "saved.tar"
    proc = subprocess.run(WORKBENCH + ["image", "save", "--root", str(root), "-o", str(dest), IMAGE],
                          capture_output=True, text=True, timeout=120)
    _assert_named(proc, digests[which])
    assert not dest.exists() and sorted(os.listdir(tmp_path)) == ["ctx", "root"]


@pytest.mark.parametrize("which", ["layer", "config"])
def test_from_a_stored_image_with_a_corrupt_blob_fails_naming_it(tmp_path: Path, root: Path, which: str) -> None:
    _, digests = _stored_image(tmp_path, root)
    _corrupt(root, digests[which])
    ctx2 = tmp_path / "ctx2"
    ctx2.mkdir()
    (ctx2 / "Dockerfile").write_text(f"FROM {IMAGE}\nCOPY b.txt /b.txt\n")
    (ctx2 / "b.txt").write_text("b\n")
    out = tmp_path / "out"
    proc = wb(str(ctx2), "--output", f"type=local,dest={out}", root=root, check=False)
    _assert_named(proc, digests[which])
    assert not (out / "big.bin").exists()


def test_pull_again_repairs_a_corrupt_blob_of_a_pulled_image(registry: str, tmp_path: Path, root: Path) -> None:
    def image(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(WORKBENCH + ["image", *args, "--root", str(root)], capture_output=True, text=True,
                              timeout=120)

    name = "localhost:5055/busybox:latest"
    assert image("pull", name).returncode == 0
    manifest = json.loads((root / "images.json").read_text())["images"][name]["digest"]
    doc = json.loads(_blob(root, manifest).read_bytes())
    _corrupt(root, doc["config"]["digest"])
    pulled = image("pull", name)  # reads the config it already has: finds it corrupt, fetches it again
    assert pulled.returncode == 0, pulled.stderr
    layer = doc["layers"][0]["digest"]
    _corrupt(root, layer)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {name}\nRUN echo ok > /ok\n")
    out = tmp_path / "out"
    proc = wb(str(ctx), "--output", f"type=local,dest={out}", root=root, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    line = next((x for x in proc.stderr.splitlines() if layer in x and "corrupt" in x), "")
    assert name in line and f"workbench image pull {name}" in line, proc.stderr[-2000:]
    assert image("pull", name).returncode == 0
    wb(str(ctx), "--output", f"type=local,dest={out}", root=root)
    assert (out / "ok").read_text() == "ok\n" and (out / "bin" / "busybox").is_file()
