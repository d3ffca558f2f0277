"""`--output type=oci`: an OCI image layout, as a tar."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from workbench.image.config import MANIFEST
from workbench.image.content import ContentStore


def write_oci_archive(dest: Path, store: ContentStore, manifest_digest: str, ref_name: str | None = None) -> None:
    """Write a tar of an OCI layout holding one image; written aside and renamed, never half there."""
    manifest_bytes = store.read(manifest_digest)
    manifest = json.loads(manifest_bytes)
    desc: dict[str, object] = {"mediaType": MANIFEST, "digest": manifest_digest, "size": len(manifest_bytes)}
    if ref_name:
        desc["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [desc]}
    blobs = [manifest_digest, manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        def add_bytes(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tar.addfile(ti, io.BytesIO(data))

        add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes("index.json", json.dumps(index).encode())
        seen = set()
        for d in blobs:
            if d in seen:
                continue
            seen.add(d)
            tar.add(store.path(d), arcname="blobs/sha256/" + d.split(":", 1)[1])
    os.replace(tmp, dest)
