"""`type=registry,ref=REF`: the cache as an OCI manifest in a registry; also reads inline caches of images.

Export (`--cache-to type=registry,ref=R,mode=max`): the layer blobs go to R's repository (existing ones and
cross-repository mounts are skipped by the push code), the cache config becomes the manifest's config blob,
and the manifest is tagged R:

    {"mediaType": "application/vnd.oci.image.manifest.v1+json",
     "config": {"mediaType": "application/vnd.workbench.cacheconfig.v0+json", ...},
     "layers": [the layers the records name]}

Import (`--cache-from type=registry,ref=R`) reads that manifest, or, when R is an image built with
`--cache-to type=inline`, the cache config embedded in the image config under `INLINE_KEY` (its records point
at the image's own layers).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any, BinaryIO

from workbench.cache.remote import Progress, RemoteCacheError
from workbench.cache.remote.format import MEDIA_TYPE

INLINE_KEY = "workbench.cache.v0"
"""The image config key of an inline cache (BuildKit's is moby.buildkit.cache.v0, in its own format)."""
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class RegistryBackend:
    def __init__(self, ref: str, platform: str = "linux/amd64") -> None:
        from workbench.image.reference import InvalidReference, parse_reference

        if not ref:
            raise RemoteCacheError("ref= is required for type=registry")
        try:
            self.ref = parse_reference(ref)
        except InvalidReference as e:
            raise RemoteCacheError(f"ref={ref}: {e}") from None
        self.platform = platform
        self._push: Any = None
        self._pull: Any = None

    def describe(self) -> str:
        return f"registry:{self.ref}"

    def _pusher(self) -> Any:
        from workbench.image.registry_client import push_client

        if self._push is None:
            self._push = push_client(self.ref)
        return self._push

    def _puller(self) -> Any:
        from workbench.image.registry_client import pull_client

        if self._pull is None:
            self._pull = self._push or pull_client(self.ref)
        return self._pull

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from workbench.http.errors import HttpError
        from workbench.image.registry_errors import RegistryError

        try:
            return fn(*args, **kwargs)
        except RegistryError as e:
            raise RemoteCacheError(str(e)) from None
        except (OSError, HttpError) as e:  # a body that broke off while read here
            raise RemoteCacheError(f"{what}: {e}") from None

    def has_blob(self, digest: str) -> bool:
        from workbench.image.push import blob_exists

        return bool(self._call(f"checking blob {digest}", blob_exists, self._pusher(), digest))

    def put_blob(self, digest: str, path: Path, size: int, progress: Progress) -> None:
        from workbench.image.push import upload_blob

        def report(_digest: str, current: int, total: int) -> None:
            progress(current, total)

        self._call(f"pushing blob {digest}", upload_blob, self._pusher(), digest, size, path, progress=report)

    def get_blob(self, digest: str, out: BinaryIO, progress: Progress) -> None:
        client = self._puller()

        def download() -> None:
            with client.open(f"/blobs/{digest}", f"fetching blob {digest}") as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                done = 0
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    progress(done, total)

        self._call(f"fetching blob {digest}", download)

    def _blob_bytes(self, digest: str, limit: int = 64 << 20) -> bytes:
        client = self._puller()

        def read() -> bytes:
            with client.open(f"/blobs/{digest}", f"fetching blob {digest}") as resp:
                return bytes(resp.read(limit + 1))

        data: bytes = self._call(f"fetching blob {digest}", read)
        if len(data) > limit or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RemoteCacheError(f"{self.ref}: blob {digest} does not match its digest")
        return data

    def read_configs(self) -> list[bytes]:
        from workbench.image.manifests import fetch_manifest, select_platform

        client = self._puller()
        reference = self.ref.digest or self.ref.tag or "latest"
        _, _, doc = self._call(f"reading {self.ref}", fetch_manifest, client, reference)
        if "manifests" in doc:  # an image index: the platform's image (its inline cache)
            chosen = self._call(f"reading {self.ref}", select_platform, doc, self.platform, str(self.ref))
            _, _, doc = self._call(f"reading {self.ref}", fetch_manifest, client, chosen["digest"])
        config = doc.get("config") or {}
        raw = self._blob_bytes(str(config.get("digest", "")))
        if config.get("mediaType") == MEDIA_TYPE:
            return [raw]
        try:  # an image: is there an inline cache in its config?
            inline = json.loads(raw).get(INLINE_KEY)
            return [base64.b64decode(inline)] if inline else []
        except (ValueError, AttributeError, TypeError) as e:
            raise RemoteCacheError(f"{self.ref}: unreadable inline cache: {e}") from None

    def write_config(self, config: bytes, layers: list[dict[str, object]]) -> None:
        import tempfile

        from workbench.image.push import put_manifest, upload_blob

        digest = "sha256:" + hashlib.sha256(config).hexdigest()
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(config)
            tmp.flush()
            self._call("pushing the cache config", upload_blob, self._pusher(), digest, len(config), Path(tmp.name))
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": MEDIA_TYPE, "digest": digest, "size": len(config)},
                    "layers": layers}
        raw = json.dumps(manifest, separators=(",", ":")).encode()
        self._call("pushing the cache manifest", put_manifest, self._pusher(), self.ref.tag or "latest", raw,
                   OCI_MANIFEST)


def inline_cache_value(config: bytes) -> str:
    """What goes into an image config under INLINE_KEY."""
    return base64.b64encode(config).decode()
