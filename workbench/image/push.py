"""Push an image (or index) from the content store to a registry, and the blob / manifest steps under it
(which the registry cache reuses).

Blobs the registry has are skipped, blobs from another repository of the same registry that they were pulled
from or pushed to are mounted, and the rest are uploaded monolithically or in chunks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from workbench import interruptible
from workbench.image.blob_sources import blob_sources, record_source
from workbench.image.content import ContentStore
from workbench.image.manifests import OCI_INDEX, OCI_MANIFEST
from workbench.image.reference import Reference
from workbench.image.registry_client import Progress, RegistryClient, push_client
from workbench.image.registry_config import PARALLEL_PULLS
from workbench.image.registry_errors import RegistryError

CHUNKED_THRESHOLD = 64 << 20  # blobs larger than this are uploaded in chunks of CHUNK_UPLOAD bytes
CHUNK_UPLOAD = 16 << 20


def blob_exists(client: RegistryClient, digest: str) -> bool:
    """Whether the registry has the blob `digest` in the client's repository (HEAD)."""
    with client.request("HEAD", f"/blobs/{digest}", f"checking blob {digest}", not_found_ok=True) as resp:
        return bool(resp.status == 200)


def upload_location(client: RegistryClient, resp: Any, what: str) -> str:
    """The absolute URL an upload goes on to, from a POST or PATCH answer's Location (RegistryError if none)."""
    location = resp.headers.get("Location")
    if not location:
        raise client.fail(what, "the registry gave no upload Location")
    return client.url(location)


def with_query(url: str, **params: str) -> str:
    """`url` with `params` added to its query (an upload Location may carry one already)."""
    import urllib.parse

    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params)


def upload_blob(client: RegistryClient, digest: str, size: int, path: Path, mount_from: tuple[str, ...] = (),
                chunk_size: int | None = None, progress: Progress | None = None) -> str:
    """Make the blob `digest` (the file `path`, `size` bytes) exist in the client's repository.

    Returns "exists" (already there), "mounted" (cross-repository mount from one of `mount_from`) or
    "uploaded". Uploads are monolithic (one PUT), or chunked (PATCHes of `chunk_size` bytes, then a PUT) when
    `chunk_size` is given or the blob is larger than CHUNKED_THRESHOLD.
    """
    what = f"pushing blob {digest}"
    if blob_exists(client, digest):
        if progress:
            progress(digest, size, size)
        return "exists"
    location = None
    for repo in mount_from:
        if repo == client.ref.repository:
            continue
        with client.request("POST", f"/blobs/uploads/?mount={digest}&from={repo}", what, data=b"") as resp:
            if resp.status == 201:
                if progress:
                    progress(digest, size, size)
                return "mounted"
            location = upload_location(client, resp, what)  # 202: the mount was refused, an upload began instead
            break
    if location is None:
        with client.request("POST", "/blobs/uploads/", what, data=b"") as resp:
            location = upload_location(client, resp, what)
    if chunk_size is None and size > CHUNKED_THRESHOLD:
        chunk_size = CHUNK_UPLOAD
    octets = {"Content-Type": "application/octet-stream"}
    if progress:
        progress(digest, 0, size)
    with open(path, "rb") as f:
        if chunk_size is None:
            with client.request("PUT", with_query(location, digest=digest), what, data=f,
                                headers={**octets, "Content-Length": str(size)}):
                pass
        else:
            offset = 0
            while offset < size:
                n = min(chunk_size, size - offset)
                chunk = f.read(n)
                with client.request("PATCH", location, what, data=chunk,
                                    headers={**octets, "Content-Length": str(n),
                                             "Content-Range": f"{offset}-{offset + n - 1}"}) as resp:
                    location = upload_location(client, resp, what)
                offset += n
                if progress:
                    progress(digest, offset, size)
            with client.request("PUT", with_query(location, digest=digest), what, data=b"",
                                headers={**octets, "Content-Length": "0"}):
                pass
    if progress:
        progress(digest, size, size)
    return "uploaded"


def put_manifest(client: RegistryClient, reference: str, raw: bytes, media_type: str) -> str:
    """PUT a manifest or index under a tag (or its digest); returns its digest, checked against the registry's."""
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    with client.request("PUT", f"/manifests/{reference}", f"pushing manifest {digest}", data=raw,
                        headers={"Content-Type": media_type}) as resp:
        said = resp.headers.get("Docker-Content-Digest") or ""
    if said.startswith("sha256:") and said != digest:
        raise client.fail("pushing manifest", f"the registry stored it as {said}, its content is {digest}")
    return digest


def _media_type(raw: bytes) -> str:
    doc = json.loads(raw)
    return str(doc.get("mediaType") or (OCI_INDEX if "manifests" in doc else OCI_MANIFEST))


def push_image(ref: Reference, store: ContentStore, manifest_digest: str, progress: Progress | None = None,
               chunk_size: int | None = None) -> str:
    """Push the image (or index) `manifest_digest` from `store` to `ref` (its tag, or by digest): blobs first
    (mounted where known, in parallel), then the manifests. Returns the pushed manifest digest."""
    raw = store.read(manifest_digest)
    manifests: list[tuple[str, bytes]] = []  # children before their index
    blobs: dict[str, int] = {}

    def walk(digest: str, data: bytes) -> None:
        doc = json.loads(data)
        if "manifests" in doc:
            for child in doc.get("manifests") or []:
                if store.has(child["digest"]):
                    walk(child["digest"], store.read(child["digest"]))
        else:
            for desc in [doc["config"], *(doc.get("layers") or [])]:
                blobs[str(desc["digest"])] = int(desc.get("size", 0))
        manifests.append((digest, data))

    walk(manifest_digest, raw)
    for digest in blobs:
        if not store.has(digest):
            raise RegistryError(f"pushing {ref}: blob {digest} of image {manifest_digest} is not in the content store")
    sources = {d: blob_sources(store, d, ref.registry) for d in blobs}
    mountable = tuple(sorted({r for repos in sources.values() for r in repos} - {ref.repository}))
    client = push_client(ref, mountable)
    with client.request("HEAD", f"/blobs/{manifest_digest}", f"authenticating to push {manifest_digest}",
                        not_found_ok=True):
        pass  # earns the token before any body is streamed

    def one(digest: str) -> None:
        upload_blob(client, digest, blobs[digest], store.path(digest),
                    tuple(r for r in sources[digest] if r != ref.repository), chunk_size, progress)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(PARALLEL_PULLS, thread_name_prefix="push") as pool:
        for future in [pool.submit(one, d) for d in blobs]:
            interruptible.result(future)
    for digest, data in manifests[:-1]:
        put_manifest(client, digest, data, _media_type(data))
    pushed = put_manifest(client, ref.digest or ref.tag or manifest_digest, raw, _media_type(raw))
    record_source(store, list(blobs), ref)
    return pushed
