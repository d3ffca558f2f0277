"""The local image store, archives (docker / OCI) in and out, rootfs import, output specs, GC of named images."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH
from workbench.exporter.outputs import tag_output
from workbench.image.archive import ArchiveError, import_rootfs, load_archive, write_docker_archive
from workbench.image.reference import parse_reference
from workbench.image.registry_config import uses_http
from workbench.image.resolve import local_image
from workbench.image.store import ImageStore, ImageStoreError
from workbench.request import OutputSpecError, parse_output


def _rootfs_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _cli(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(WORKBENCH + [*args, "--root", str(root)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "WORKBENCH_SERVER": "0"})


def test_import_tag_ls_rm(tmp_path: Path) -> None:
    raw = _rootfs_tar({"etc/hello": b"hi\n"})
    (tmp_path / "rootfs.tar.gz").write_bytes(gzip.compress(raw))
    images = ImageStore(tmp_path / "root")
    digest = import_rootfs(tmp_path / "rootfs.tar.gz", images, "hello",
                           ["ENV PATH=/bin A=b", 'CMD ["sh", "-c", "echo"]', "WORKDIR /srv", "LABEL x=y"])
    manifest = json.loads(images.content.read(digest))
    config = json.loads(images.content.read(manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(raw).hexdigest()]
    assert config["config"] == {"Env": ["PATH=/bin", "A=b"], "Cmd": ["sh", "-c", "echo"], "WorkingDir": "/srv",
                                "Labels": {"x": "y"}}
    layer = images.content.read(manifest["layers"][0]["digest"])
    assert gzip.decompress(layer) == raw
    assert images.get("docker.io/library/hello:latest") == images.get("hello")
    images.tag("localhost:5000/team/hello:1.0", digest)
    out = _cli("image", "ls", root=tmp_path / "root").stdout.splitlines()
    assert out[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert {tuple(line.split()[:3]) for line in out[1:]} == {("hello", "latest", digest[7:19]),
                                                            ("localhost:5000/team/hello", "1.0", digest[7:19])}
    proc = _cli("image", "tag", digest[7:19], "again:2", root=tmp_path / "root")
    assert proc.returncode == 0, proc.stderr
    assert images.get("again:2").digest == digest  # type: ignore[union-attr]
    proc = _cli("image", "rm", "hello", "nope", root=tmp_path / "root")
    assert proc.returncode == 1 and "Untagged: hello:latest" in proc.stdout and "no such image: nope" in proc.stderr
    assert images.get("hello") is None
    with pytest.raises(ImageStoreError, match="invalid reference format"):
        images.tag("Bad Name", digest)
    with pytest.raises(ArchiveError, match="not a tar archive"):
        (tmp_path / "junk").write_bytes(b"not a tar at all" * 100)
        import_rootfs(tmp_path / "junk", images, "junk")


def _classic_docker_save(path: Path) -> tuple[bytes, dict]:  # type: ignore[type-arg]
    """An archive as `docker save` (classic format) writes it: <id>/layer.tar uncompressed, <hex>.json config."""
    layer = _rootfs_tar({"bin/tool": b"#!/bin/sh\n"})
    diff = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["tool"]},
              "rootfs": {"type": "layers", "diff_ids": [diff]}}
    cfg = json.dumps(config).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    with tarfile.open(path, "w") as t:
        for name, data in [(cfg_name, cfg), ("abc123/layer.tar", layer), ("abc123/VERSION", b"1.0"),
                           ("manifest.json", json.dumps([{"Config": cfg_name, "RepoTags": ["tool:1"],
                                                          "Layers": ["abc123/layer.tar"]}]).encode()),
                           ("repositories", b'{"tool":{"1":"abc123"}}')]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return layer, config


def test_load_classic_docker_archive_then_save_and_load_again(tmp_path: Path) -> None:
    layer, config = _classic_docker_save(tmp_path / "classic.tar")
    proc = _cli("image", "load", "-i", str(tmp_path / "classic.tar"), root=tmp_path / "root")
    assert proc.returncode == 0 and proc.stdout.strip() == "Loaded image: tool:1", proc.stderr
    images = ImageStore(tmp_path / "root")
    stored = images.get("tool:1")
    assert stored is not None
    manifest = json.loads(images.content.read(stored.digest))
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert images.content.read(manifest["layers"][0]["digest"]) == layer
    # save (BuildKit's docker archive: also an OCI layout) and load into another root: the same image
    proc = _cli("image", "save", "-o", str(tmp_path / "saved.tar"), "tool:1", root=tmp_path / "root")
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(tmp_path / "saved.tar") as t:
        names = set(t.getnames())
        entries = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        index = json.load(t.extractfile("index.json"))  # type: ignore[arg-type]
    assert {"manifest.json", "index.json", "oci-layout", "repositories"} <= names
    assert entries[0]["RepoTags"] == ["tool:1"] and entries[0]["Config"] in names
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/library/tool:1"
    again = ImageStore(tmp_path / "root2")
    assert load_archive(tmp_path / "saved.tar", again) == [("docker.io/library/tool:1", stored.digest)]
    # as an OCI layout, with the name from the annotation
    (tmp_path / "saved.tar").rename(tmp_path / "oci.tar")
    with tarfile.open(tmp_path / "oci.tar") as src, tarfile.open(tmp_path / "only-oci.tar", "w") as dst:
        for m in src.getmembers():
            if m.name not in ("manifest.json", "repositories"):
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    third = ImageStore(tmp_path / "root3")
    assert load_archive(tmp_path / "only-oci.tar", third, "renamed:x") == [("docker.io/library/renamed:x",
                                                                            stored.digest)]


def test_load_refuses_corrupt_and_foreign_archives(tmp_path: Path) -> None:
    images = ImageStore(tmp_path / "root")
    (tmp_path / "x.tar").write_bytes(_rootfs_tar({"hello": b"x"}))
    with pytest.raises(ArchiveError, match="neither a docker archive"):
        load_archive(tmp_path / "x.tar", images)
    _classic_docker_save(tmp_path / "classic.tar")
    load_archive(tmp_path / "classic.tar", images)
    digest = images.get("tool:1").digest  # type: ignore[union-attr]
    write_docker_archive(tmp_path / "s.tar", images.content, [(digest, ["tool:1"])])
    # flip a byte of the config blob inside the archive: its digest no longer matches
    cfg = json.loads(images.content.read(digest))["config"]["digest"]
    with tarfile.open(tmp_path / "s.tar") as src, tarfile.open(tmp_path / "bad.tar", "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if m.name.endswith(cfg.split(":")[1]) and data:
                data = b" " + data[1:]
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    fresh = ImageStore(tmp_path / "fresh")
    with pytest.raises(ArchiveError, match=f"bad.tar: blobs/sha256/{cfg[7:]}: content digest .* does not match"):
        load_archive(tmp_path / "bad.tar", fresh)  # read as a docker archive (manifest.json)
    with pytest.raises(ArchiveError, match="does not match"):
        _load_oci_only(tmp_path / "bad.tar", fresh)  # read as an OCI layout (index.json)
    assert fresh.entries() == [] and not fresh.content.has(cfg)


def _load_oci_only(path: Path, images: ImageStore) -> None:
    stripped = path.with_name("stripped.tar")
    with tarfile.open(path) as src, tarfile.open(stripped, "w") as dst:
        for m in src.getmembers():
            if m.name != "manifest.json":
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    load_archive(stripped, images)


def test_prune_keeps_named_images(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (tmp_path / "rootfs.tar").write_bytes(_rootfs_tar({"a": b"a" * 1000}))
    digest = import_rootfs(tmp_path / "rootfs.tar", ImageStore(root), "kept")
    blobs = root / "content" / "blobs" / "sha256"
    before = sorted(p.name for p in blobs.iterdir())
    assert len(before) == 3
    assert _cli("prune", "--all", root=root).returncode == 0
    assert sorted(p.name for p in blobs.iterdir()) == before
    assert _cli("image", "rm", "kept", root=root).returncode == 0
    assert _cli("prune", "--all", root=root).returncode == 0
    assert not (blobs / digest.split(":")[1]).exists()


def test_local_image_lookup_for_from(tmp_path: Path) -> None:
    (tmp_path / "rootfs.tar").write_bytes(_rootfs_tar({"a": b"a"}))
    images = ImageStore(tmp_path / "root")
    digest = import_rootfs(tmp_path / "rootfs.tar", images, "base:1")
    found = local_image(parse_reference("base:1"), images.content, "linux/amd64")
    assert found is not None and found[0] == digest and found[1]["os"] == "linux"
    assert local_image(parse_reference("base:1"), images.content, "linux/arm64") is None
    assert local_image(parse_reference("base:2"), images.content, "linux/amd64") is None
    assert local_image(parse_reference(f"base@{digest}"), images.content, "linux/amd64") is None  # pinned: pull


def test_output_specs_and_tags() -> None:
    assert parse_output("type=docker,dest=a.tar").type == "docker"
    assert parse_output("type=tar,dest=fs.tar").type == "tar"
    spec = parse_output('type=image,"name=a:1,b:2",push=true')
    assert spec.attrs == {"name": "a:1,b:2", "push": "true"}
    assert parse_output("type=registry,name=r/x").attrs == {"name": "r/x", "push": "true"}
    with pytest.raises(OutputSpecError, match="name= is required"):
        parse_output("type=image")
    with pytest.raises(OutputSpecError, match="unsupported type 'nope'"):
        parse_output("type=nope,dest=x")
    with pytest.raises(OutputSpecError, match="name 'UPPER'"):
        parse_output("type=image,name=UPPER")
    outs = tag_output([parse_output("type=oci,dest=o.tar")], ["app:1", "app:2"], push=False)
    assert [o.type for o in outs] == ["oci", "image"] and outs[1].attrs == {"name": "app:1,app:2"}
    outs = tag_output([parse_output("type=image,name=x")], ["y"], push=True)
    assert outs[0].attrs == {"name": "x,y", "push": "true"}
    with pytest.raises(OutputSpecError, match="--push needs an image name"):
        tag_output([], [], push=True)


def test_insecure_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_INSECURE_REGISTRIES", raising=False)
    assert uses_http("localhost:5000") and uses_http("127.0.0.1") and not uses_http("registry.example.com")
    monkeypatch.setenv("WORKBENCH_INSECURE_REGISTRIES", "registry.example.com, other:5000")
    assert uses_http("registry.example.com") and uses_http("registry.example.com:443") and uses_http("other:5000")
    assert not uses_http("other:5001") and not uses_http("registry-1.docker.io")


def test_registry_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """buildkitd.toml's [registry."host"] http / insecure, from the workbench config file."""
    from workbench.image.registry_config import registry_config

    (tmp_path / "wb.toml").write_text('[registry."mirror.internal:5000"]\nhttp = true\n'
                                      '[registry."tls.internal"]\ninsecure = true\n')
    monkeypatch.setenv("WORKBENCH_CONFIG", str(tmp_path / "wb.toml"))
    monkeypatch.delenv("WORKBENCH_INSECURE_REGISTRIES", raising=False)
    assert uses_http("mirror.internal:5000") and not uses_http("mirror.internal:5001")
    assert not uses_http("tls.internal") and registry_config("tls.internal:443") == {"insecure": True}
