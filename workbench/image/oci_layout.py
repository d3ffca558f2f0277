"""`--output type=oci`: a tar of an OCI image layout (oci-layout, index.json, blobs/sha256/...)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import IO, Any

from workbench.image.config import INDEX, MANIFEST, dumps
from workbench.image.content import ContentStore, CorruptBlob

REF_NAME = "org.opencontainers.image.ref.name"
_INDEX_TYPES = (INDEX, "application/vnd.docker.distribution.manifest.list.v2+json")


def _blobs(store: ContentStore, digest: str, out: list[str]) -> None:
    """`digest` and every blob it refers to (config, layers; children of an index), in order, each once."""
    if digest in out:
        return
    out.append(digest)
    doc = json.loads(store.read(digest))
    if doc.get("mediaType") in _INDEX_TYPES or "manifests" in doc:
        for child in doc.get("manifests") or []:
            if store.has(child["digest"]):  # other platforms' images need not be here
                _blobs(store, child["digest"], out)
        return
    for desc in [doc["config"], *(doc.get("layers") or [])]:
        if desc["digest"] not in out:
            out.append(desc["digest"])


def tar_entry(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    """A reproducible archive member: root-owned, mtime 0, 0644 (0755 for a directory)."""
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.uid, ti.gid = size, 0, 0, 0
    ti.mode = 0o755 if directory else 0o644
    if directory:
        ti.type = tarfile.DIRTYPE
    return ti


def write_oci_archive(dest: Path, store: ContentStore, manifest_digest: str, ref_name: str | None = None,
                      what: str = "--output type=oci") -> None:
    """Write a tar of an OCI layout holding the image `manifest_digest` (all blobs read from `store`).

    index.json has one descriptor, annotated with `ref_name` as org.opencontainers.image.ref.name if given.
    The tar is written through `atomic_file` (a temp file renamed over `dest`; a symlink at `dest` is
    replaced), so `dest` is never half there. Every blob is verified as it is copied: CorruptBlob (naming
    `ref_name` if given) and nothing written. Deterministic: members have mtime 0, owner 0:0.
    """
    from workbench.fsutil.destination import atomic_file

    dest = Path(dest)
    try:
        manifest_bytes = store.read(manifest_digest)
        manifest = json.loads(manifest_bytes)
        media = manifest.get("mediaType") or (INDEX if "manifests" in manifest else MANIFEST)
        desc: dict[str, Any] = {"mediaType": media, "digest": manifest_digest, "size": len(manifest_bytes)}
        if ref_name:
            desc["annotations"] = {REF_NAME: ref_name}
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [desc]}
        blobs: list[str] = []
        _blobs(store, manifest_digest, blobs)
        for d in blobs:
            if not store.has(d):
                if (corrupt := store.corrupt(d)) is not None:
                    raise corrupt
                raise FileNotFoundError(f"blob {d} of image {ref_name or manifest_digest} is not in the content "
                                        f"store {store.root}")

        with atomic_file(dest, what) as out, new_archive(out) as tar:

            def add_bytes(name: str, data: bytes) -> None:
                tar.addfile(tar_entry(name, len(data)), io.BytesIO(data))

            add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            add_bytes("index.json", dumps(index))
            tar.addfile(tar_entry("blobs/", directory=True))
            tar.addfile(tar_entry("blobs/sha256/", directory=True))
            for d in blobs:
                add_blob(tar, store, d)
    except CorruptBlob as e:
        if ref_name:
            e.for_image(ref_name)
        raise


def new_archive(out: IO[bytes]) -> tarfile.TarFile:
    """A tar (PAX) written to the open file `out`, copying in large chunks."""
    return tarfile.TarFile(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, copybufsize=1 << 20)


def add_blob(tar: tarfile.TarFile, store: ContentStore, digest: str) -> None:
    """Add the blob `digest` as blobs/sha256/<hex>, verified as it is copied (CorruptBlob)."""
    with store.open(digest) as f:
        tar.addfile(tar_entry("blobs/sha256/" + digest.split(":", 1)[1], f.size), f)
