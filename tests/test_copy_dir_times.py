"""COPY of a directory tree keeps each copied directory's own mtime, as BuildKit's copier leaves it (the times are
set once everything below a directory is in), instead of the time of the copy: below the destination, the same
tree gives the same layer whenever it is built."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from tests.conftest import wb

pytestmark = pytest.mark.real
OLD = 1_577_923_200  # 2020-01-02
TOP = 1_500_000_000


def _layer_members(oci_tar: Path) -> list[dict[str, tarfile.TarInfo]]:
    with tarfile.open(oci_tar) as tar:
        def blob(digest: str) -> bytes:
            f = tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
            assert f is not None
            return f.read()
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        layers = [blob(layer["digest"]) for layer in manifest["layers"]]
    return [{m.name: m for m in tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)))} for data in layers]


def test_copied_directories_keep_their_times(registry: str, tmp_path: Path, root: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "a" / "sub" / "deeper").mkdir(parents=True)
    (ctx / "a" / "sub" / "f").write_text("1\n")
    (ctx / "a" / "sub" / "deeper" / "g").write_text("2\n")
    for d in ("a/sub/deeper", "a/sub"):
        os.utime(ctx / d, (OLD, OLD))
    os.utime(ctx / "a", (TOP, TOP))
    (ctx / "Dockerfile").write_text("FROM localhost:5055/busybox\nCOPY a /a\nWORKDIR /c\nCOPY a .\n")
    out = tmp_path / "image.tar"
    wb(str(ctx), "--output", f"type=oci,dest={out}", root=root)
    layers = _layer_members(out)
    copied, into_workdir = layers[1], layers[3]
    for members, top in ((copied, "a"), (into_workdir, "c")):
        assert members[top].mtime == TOP  # the destination (made by the copy, or the WORKDIR's) takes the source's
        assert members[f"{top}/sub"].mtime == OLD and members[f"{top}/sub/deeper"].mtime == OLD
        assert members[f"{top}/sub/f"].mtime == int((ctx / "a" / "sub" / "f").stat().st_mtime)
