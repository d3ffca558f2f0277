"""`type=local`: the cache as an OCI image layout directory (`dest=` to export, `src=` to import), as BuildKit.

    DIR/oci-layout
    DIR/index.json              {"manifests": [<the cache index>, annotated org.opencontainers.image.ref.name=TAG]}
    DIR/blobs/sha256/<hex>      the layers, the cache config, and the cache index: an OCI image index whose
                                "manifests" are the layer descriptors and the config descriptor
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO

from workbench.cache.remote import Progress, RemoteCacheError
from workbench.cache.remote.format import MEDIA_TYPE
from workbench.image.content import check_digest

INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


class LocalBackend:
    def __init__(self, directory: Path, tag: str = "latest") -> None:
        self.dir = Path(directory)
        self.tag = tag

    def describe(self) -> str:
        return f"local:{self.dir}"

    def _blob(self, digest: str) -> Path:
        return self.dir / "blobs" / "sha256" / check_digest(digest).split(":", 1)[1]

    def has_blob(self, digest: str) -> bool:
        return self._blob(digest).is_file()

    def put_blob(self, digest: str, path: Path, size: int, progress: Progress) -> None:
        target = self._blob(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
        progress(size, size)

    def get_blob(self, digest: str, out: BinaryIO, progress: Progress) -> None:
        try:
            with open(self._blob(digest), "rb") as f:
                total = os.fstat(f.fileno()).st_size
                done = 0
                while chunk := f.read(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    progress(done, total)
        except FileNotFoundError:
            raise RemoteCacheError(f"blob {digest} is missing from {self.dir}") from None

    def _write_bytes(self, data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self._blob(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return {"digest": digest, "size": len(data)}

    def write_config(self, config: bytes, layers: list[dict[str, object]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        config_desc = {"mediaType": MEDIA_TYPE, **self._write_bytes(config)}
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [*layers, config_desc]}
        index_desc = {"mediaType": INDEX, **self._write_bytes(json.dumps(index, separators=(",", ":")).encode())}
        top_path = self.dir / "index.json"
        manifests = []
        if top_path.is_file():  # keep other tags
            try:
                manifests = [m for m in json.loads(top_path.read_text()).get("manifests", [])
                             if (m.get("annotations") or {}).get(REF_NAME) != self.tag]
            except (ValueError, AttributeError):
                manifests = []
        manifests.append({**index_desc, "annotations": {REF_NAME: self.tag}})
        (self.dir / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        tmp = top_path.with_name(f".index.json.{secrets.token_hex(4)}")
        tmp.write_text(json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}))
        os.replace(tmp, top_path)

    def read_configs(self) -> list[bytes]:
        top_path = self.dir / "index.json"
        if not top_path.is_file():
            raise RemoteCacheError(f"{self.dir} is not an OCI layout with a cache (no index.json)")
        try:
            top = json.loads(top_path.read_text())
            entry = next((m for m in top.get("manifests", [])
                          if (m.get("annotations") or {}).get(REF_NAME) == self.tag), None)
            if entry is None:
                return []
            index = json.loads(self._verified(entry["digest"]))
            return [self._verified(m["digest"]) for m in index.get("manifests", []) if m.get("mediaType") == MEDIA_TYPE]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise RemoteCacheError(f"{self.dir}: unreadable cache index: {e}") from None

    def _verified(self, digest: str) -> bytes:
        data = self._blob(digest).read_bytes()
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RemoteCacheError(f"{self.dir}: blob {digest} does not match its digest")
        return data
