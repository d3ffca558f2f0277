"""Image config/manifest building and OCI archive export, read back by ocitree.describe() and skopeo."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.registry_fixture import DATA, Registry, image_registry_fixture  # noqa: F401
from workbench.image.config import LAYER_GZIP, add_history, build_manifest, dumps, new_image
from workbench.image.content import ContentStore
from workbench.image.oci_layout import write_oci_archive
from workbench.image.pull import PulledImage, pull
from workbench.image.reference import parse_reference


def _ocitree() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ocitree", DATA / "ocitree.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ocitree = _ocitree()
needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo (Debian package skopeo)")


def _layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzip layer holding `files`; returns (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            t.addfile(ti, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0), "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()


def _image(store: ContentStore, base: dict[str, Any] | None = None,
           base_layers: list[dict[str, Any]] | None = None) -> str:
    image = new_image(base)
    image["config"]["Env"] = ["A=1"]
    image["config"]["Cmd"] = ["cat", "/hello.txt"]
    blob, diff_id = _layer({"hello.txt": b"hello <oci> & co\n"})
    desc = {"mediaType": LAYER_GZIP, "digest": store.write(blob), "size": len(blob)}
    image["rootfs"]["diff_ids"].append(diff_id)
    add_history(image, "COPY hello.txt /", created="2024-01-01T00:00:00Z")
    image["created"] = "2024-01-01T00:00:00Z"
    return build_manifest(store, image, [*(base_layers or []), desc])


def _skopeo_inspect(path: Path) -> dict[str, Any]:
    out = subprocess.run(["skopeo", "inspect", f"oci-archive:{path}"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_build_manifest_blobs(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = _image(store)
    manifest = json.loads(store.read(digest))
    assert list(manifest) == ["schemaVersion", "mediaType", "config", "layers"]
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    raw_config = store.read(manifest["config"]["digest"])
    assert manifest["config"]["size"] == len(raw_config)
    assert b" " not in raw_config.replace(b"COPY hello.txt /", b"")  # compact, like Go
    config = json.loads(raw_config)
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["rootfs"]["type"] == "layers" and len(config["rootfs"]["diff_ids"]) == 1
    assert _image(store) == digest  # deterministic


def test_dumps_like_go() -> None:
    assert dumps({"b": 1, "a": ["<x> & y", "é"]}) == '{"b":1,"a":["\\u003cx\\u003e \\u0026 y","é"]}'.encode()


def test_oci_archive_of_built_image(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    digest = _image(store)
    dest = tmp_path / "out.tar"
    write_oci_archive(dest, store, digest, "example.com/hello:1")
    assert not (tmp_path / "out.tar.tmp").exists()
    with tarfile.open(dest) as tf:
        names = tf.getnames()
        index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
        assert json.loads(tf.extractfile("oci-layout").read()) == {"imageLayoutVersion": "1.0.0"}  # type: ignore[union-attr]
        for m in tf.getmembers():
            if m.name.startswith("blobs/sha256/") and m.isfile():
                assert hashlib.sha256(tf.extractfile(m).read()).hexdigest() == m.name.rsplit("/", 1)[1]  # type: ignore[union-attr]
    assert [n for n in names if n.startswith("blobs/sha256/") and len(n) > 20].__len__() == 3
    assert index["manifests"] == [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                                   "size": len(store.read(digest)),
                                   "annotations": {"org.opencontainers.image.ref.name": "example.com/hello:1"}}]
    desc = ocitree.describe(str(dest))
    assert desc["config"] == {"Env": ["A=1"], "Cmd": ["cat", "/hello.txt"]}
    assert desc["tree"]["/hello.txt"].startswith("f 0644 0:0 17 ")
    first = dest.read_bytes()
    write_oci_archive(dest, store, digest, "example.com/hello:1")
    assert dest.read_bytes() == first  # deterministic


def test_oci_archive_missing_blob_leaves_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    digest = _image(store)
    manifest = json.loads(store.read(digest))
    store.path(manifest["layers"][0]["digest"]).unlink()
    with pytest.raises(FileNotFoundError, match="not in the content store"):
        write_oci_archive(tmp_path / "out.tar", store, digest)
    assert list(tmp_path.glob("out.tar*")) == []


@needs_skopeo
def test_oci_archive_readable_by_skopeo(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    digest = _image(store)
    write_oci_archive(tmp_path / "out.tar", store, digest)
    info = _skopeo_inspect(tmp_path / "out.tar")
    assert info["Digest"] == digest and info["Architecture"] == "amd64" and len(info["Layers"]) == 1


@pytest.fixture
def pulled(image_registry: Registry, tmp_path: Path) -> tuple[ContentStore, PulledImage]:
    store = ContentStore(tmp_path / "store")
    return store, pull(parse_reference(f"{image_registry.host}/busybox"), store)


def test_pulled_busybox_exports(pulled: tuple[ContentStore, PulledImage], tmp_path: Path) -> None:
    store, image = pulled
    dest = tmp_path / "busybox.tar"
    write_oci_archive(dest, store, image.manifest_digest, "latest")
    desc = ocitree.describe(str(dest))
    assert desc["config"]["Cmd"] == ["sh"]
    assert desc["tree"]["/bin/busybox"].startswith("f 0755 0:0 ")
    assert desc["tree"]["/bin/sh"].endswith("-> busybox")
    assert desc["tree"]["/tmp"] == "d 1777 0:0"
    info = _skopeo_inspect(dest)
    assert info["Digest"] == image.manifest_digest
    assert info["Layers"] == [x["digest"] for x in image.layers]


def test_image_on_pulled_base_exports(pulled: tuple[ContentStore, PulledImage], tmp_path: Path) -> None:
    store, base = pulled
    digest = _image(store, base.config, base.layers)
    dest = tmp_path / "app.tar"
    write_oci_archive(dest, store, digest)
    desc = ocitree.describe(str(dest))
    assert desc["config"] == {"Env": ["A=1"], "Cmd": ["cat", "/hello.txt"]}
    base_tree = ocitree.describe(str(_export(store, base.manifest_digest, tmp_path / "base.tar")))["tree"]
    diff = ocitree.against_base(desc, base_tree)
    assert list(diff["changed"]) == ["/hello.txt"] and diff["removed"] == []
    config = json.loads(store.read(json.loads(store.read(digest))["config"]["digest"]))
    assert config["rootfs"]["diff_ids"][:1] == base.config["rootfs"]["diff_ids"]
    assert [h["created_by"] for h in config["history"]] == ["busybox-static rootfs", "COPY hello.txt /"]
    info = _skopeo_inspect(dest)
    assert info["Digest"] == digest and len(info["Layers"]) == 2


def _export(store: ContentStore, digest: str, dest: Path) -> Path:
    write_oci_archive(dest, store, digest)
    return dest
