"""Pull an image from a registry into the content store.

Every blob is verified against its digest; blobs already in the content store are not fetched again, and a
pull by digest whose blobs are all present does not touch the network. Layers download in parallel, and a
download cut short resumes with a Range request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from workbench.http.client import Response, resumable
from workbench.http.errors import BrokenDownload
from workbench.image.blob_sources import record_source
from workbench.image.content import ContentStore, DigestMismatch
from workbench.image.manifests import resolve_platform
from workbench.image.reference import Reference
from workbench.image.registry_client import Progress, RegistryClient
from workbench.image.registry_config import PARALLEL_PULLS
from workbench.image.registry_errors import RegistryError, reason

CHUNK = 1 << 20
RESUME_ATTEMPTS = 3


@dataclass
class PulledImage:
    """An image whose manifest, config and layer blobs are all in the content store."""

    reference: Reference
    manifest_digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    config_digest: str
    layers: list[dict[str, Any]]


def _fetch_blob(client: RegistryClient, desc: dict[str, Any], store: ContentStore, progress: Progress | None
                ) -> None:
    """Download one blob into the store, verifying size and digest (skipped if present).

    A download cut short (connection reset, early end) resumes where it stopped with a Range request, up to
    RESUME_ATTEMPTS times, when the registry answers ranges (206); the digest covers the joined bytes.
    """
    ref, digest = client.ref, str(desc.get("digest", ""))
    if store.has(digest):
        return
    size = int(desc.get("size", -1))
    what = f"blob {digest} of {ref} from registry {ref.registry}"
    path, doing = f"/blobs/{digest}", f"pulling blob {digest}"
    if progress:
        progress(digest, 0, max(size, 0))

    def reopen(offset: int) -> Response:
        return client.request("GET", path, doing, headers={"Range": f"bytes={offset}-"})

    body = resumable(client.open(path, doing), reopen, size=size, attempts=RESUME_ATTEMPTS, chunk=CHUNK)
    try:
        with store.writer(digest) as w:
            for chunk in body:
                w.write(chunk)
                if 0 <= size < w.size:
                    raise RegistryError(f"{what}: more than the {size} bytes its descriptor says")
                if progress:
                    progress(digest, w.size, max(size, 0))
            if 0 <= size != w.size:
                raise RegistryError(f"{what}: got {w.size} bytes, its descriptor says {size}")
    except BrokenDownload as e:
        if e.unresumable:
            raise RegistryError(f"{what}: download broke off ({reason(e)}) and the registry "
                                "cannot resume it (no range support)") from None
        raise RegistryError(f"{what}: download failed after {e.resumptions} resumptions: {reason(e)}") from None
    except DigestMismatch as e:
        raise RegistryError(f"{what} failed verification (digest mismatch): {e}; nothing was stored") from None
    except OSError as e:
        raise RegistryError(f"{what}: download failed: {reason(e)}") from None
    finally:
        body.close()


def fetch_blob(client: RegistryClient, digest: str, size: int, store: ContentStore,
               progress: Progress | None = None) -> None:
    """Download the blob `digest` (`size` bytes, -1 if unknown) into `store`, verified, resumed if cut short."""
    _fetch_blob(client, {"digest": digest, "size": size}, store, progress)


def pull(ref: Reference, store: ContentStore, platform: str = "linux/amd64",
         progress: Progress | None = None) -> PulledImage:
    """Resolve `ref` for `platform` and fetch its manifest, config and layers into `store`.

    progress(blob digest, bytes so far, total) is called while blobs download; present blobs are skipped.
    """
    if ref.digest is not None:
        try:
            store.path(ref.digest)
        except ValueError as e:
            raise RegistryError(f"{ref}: {e}") from None
    client = RegistryClient(ref)
    digest, manifest, _raw = resolve_platform(client, platform, store)
    config_desc = manifest["config"]
    layers = [dict(layer) for layer in manifest.get("layers") or []]
    for desc in [config_desc, *layers]:
        try:
            store.path(str(desc.get("digest")))
        except ValueError as e:
            raise RegistryError(f"{ref}: manifest {digest}: {e}") from None
    _fetch_blob(client, config_desc, store, None)
    missing = [layer for layer in layers if not store.has(str(layer["digest"]))]
    if len(missing) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(PARALLEL_PULLS, len(missing)), thread_name_prefix="pull") as pool:
            for future in [pool.submit(_fetch_blob, client, layer, store, progress) for layer in missing]:
                future.result()  # the first failure, in layer order
    else:
        for layer in missing:
            _fetch_blob(client, layer, store, progress)
    record_source(store, [str(d["digest"]) for d in missing], ref)
    config_digest = str(config_desc["digest"])
    try:
        config = json.loads(store.read(config_digest))
    except ValueError:
        raise RegistryError(f"{ref}: image config {config_digest} is not JSON") from None
    if not isinstance(config, dict):
        raise RegistryError(f"{ref}: image config {config_digest} is not a JSON object")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        raise RegistryError(f"{ref}: image config lists {len(diff_ids)} layer diff_ids, "
                            f"the manifest {len(layers)} layers")
    return PulledImage(ref, digest, manifest, config, config_digest, layers)
