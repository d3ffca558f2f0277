"""Turn a solved snapshot chain plus an image config into an image in the content store."""

from __future__ import annotations

import copy
import io
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, Protocol, cast

from workbench import interruptible
from workbench.cache.store import CacheStore, LayerBlob
from workbench.image.content import ContentStore
from workbench.snapshot.manager import SnapshotManager

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TYPES = {"gzip": GZIP_LAYER, "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
               "uncompressed": "application/vnd.oci.image.layer.v1.tar"}
_GZIP_TYPES = (GZIP_LAYER, "application/vnd.docker.image.rootfs.diff.tar.gzip")
_LAYERS_AT_ONCE = 4
"""Layers written side by side: enough to keep the compressor threads fed, few enough to bound memory."""


@dataclass(frozen=True)
class Compression:
    """How an export compresses its layers: buildx's `compression`, `compression-level`, `force-compression`."""

    kind: str = "gzip"
    """gzip, zstd or uncompressed."""
    level: int | None = None
    """None: BuildKit's default for the kind (gzip 6, zstd 3)."""
    force: bool = False
    """Recompress remembered (and pulled) blobs of another compression too; without it any remembered blob is
    reused whatever its compression, as BuildKit does."""

    @property
    def media_type(self) -> str:
        return LAYER_TYPES[self.kind]

    def matches(self, known: LayerBlob) -> bool:
        """Whether a remembered blob is in this export's compression."""
        return known.media_type in _GZIP_TYPES if self.kind == "gzip" else known.media_type == self.media_type


def layer_blob(snapshot: str, store: CacheStore, snapshots: SnapshotManager, content: ContentStore,
               compression: str | Compression = "gzip", cancel: threading.Event | None = None) -> LayerBlob:
    """The compressed blob of a snapshot, made once per compression and remembered.

    A remembered blob in the asked compression is reused; without `force` so is the snapshot's usual one
    whatever its compression (base layers stay as pulled, as in BuildKit without force-compression). Once
    `cancel` is set, writing stops (`Canceled`) and nothing is stored."""
    comp = compression if isinstance(compression, Compression) else Compression(compression)
    blob = _known(snapshot, store, content, comp)
    if blob is None:
        blob = _write(snapshot, snapshots, content, comp, cancel=cancel)
        _remember(snapshot, store, content, comp, blob)
    return blob


class Canceled(Exception):
    """A layer's writing stopped because its `cancel` event was set."""


def _known(snapshot: str, store: CacheStore, content: ContentStore, comp: Compression) -> LayerBlob | None:
    """A remembered blob that serves: one in the asked compression first, else (without force) the snapshot's
    usual one, whatever its compression."""
    usable = [b for b in (store.layer_blob_variant(snapshot, comp.media_type), store.layer_blob(snapshot))
              if b is not None and content.has(b.digest)]
    for blob in usable:
        if comp.matches(blob):
            return blob
    return usable[-1] if usable and not comp.force else None


class BlobUpload(Protocol):
    """Where a new layer blob also goes while it is written (`workbench.image.upload.StreamingUpload`)."""

    def write(self, b: bytes) -> int: ...

    def finish(self, digest: str) -> bool: ...

    def abort(self) -> None: ...


Uploads = Callable[[str], BlobUpload]
"""Opens the upload of a snapshot's new blob."""


class _Cancelable(io.RawIOBase):
    """Passes writes on to `out` until `cancel` is set, then raises Canceled."""

    def __init__(self, out: IO[bytes] | BinaryIO, cancel: threading.Event) -> None:
        super().__init__()
        self.out, self.cancel = out, cancel

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.cancel.is_set():
            raise Canceled("canceled")
        return self.out.write(b)


class _Tee(io.RawIOBase):
    def __init__(self, *outs: IO[bytes] | BlobUpload) -> None:
        super().__init__()
        self.outs = outs

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        for out in self.outs:
            out.write(bytes(b) if not isinstance(b, bytes) else b)
        return memoryview(b).nbytes


def _write(snapshot: str, snapshots: SnapshotManager, content: ContentStore, comp: Compression,
           uploads: Uploads | None = None, cancel: threading.Event | None = None) -> LayerBlob:
    """Compress the snapshot into the content store (and, with `uploads`, to the registry at the same time)."""
    from workbench.snapshot.layers import write_layer

    upload = uploads(snapshot) if uploads is not None else None
    try:
        with content.writer() as w:
            out = w if upload is None else cast(BinaryIO, _Tee(w, upload))
            if cancel is not None:
                out = cast(BinaryIO, _Cancelable(out, cancel))
            diff_id, _, size = write_layer(snapshots.path(snapshot), out, comp.kind, comp.level, digest_out=False)
    except BaseException:
        if upload is not None:
            upload.abort()
        raise
    digest = w.digest  # the store's writer hashed the blob as it went by
    if upload is not None:
        upload.finish(digest)  # if it failed, the push uploads the blob from the content store
    return LayerBlob(diff_id, digest, size, comp.media_type)


def _remember(snapshot: str, store: CacheStore, content: ContentStore, comp: Compression, blob: LayerBlob) -> None:
    """A gzip blob becomes the snapshot's usual one (what pulls record) unless it has one; any other is kept as
    a variant, found again by an export in the same compression."""
    usual = store.layer_blob(snapshot)
    if comp.kind == "gzip" and (usual is None or not content.has(usual.digest)):
        store.record_layer_blob(snapshot, blob)
    else:
        store.record_layer_blob_variant(snapshot, blob)


class PendingLayers(Protocol):
    """Layers being compressed elsewhere (`workbench.exporter.prefetch.Pending`)."""

    @property
    def jobs(self) -> Mapping[str, Future[LayerBlob]]: ...

    def cancel(self) -> None: ...


def layer_blobs(chain: list[str], store: CacheStore, snapshots: SnapshotManager, content: ContentStore,
                compression: str | Compression = "gzip", uploads: Uploads | None = None,
                pending: PendingLayers | None = None) -> list[LayerBlob]:
    """`layer_blob` of each snapshot of `chain`, the ones to write compressed side by side (each on every
    core as well: the producers of several tars keep the compressor threads busier than one does); new blobs
    also go to `uploads` as they are written. A snapshot in `pending` is being compressed elsewhere (a
    `LayerPrefetch` of the build): its blob is waited for, and written here only if that failed; if this
    export fails, that work is canceled."""
    comp = compression if isinstance(compression, Compression) else Compression(compression)
    jobs = pending.jobs if pending is not None else {}
    blobs = {s: None if s in jobs else _known(s, store, content, comp) for s in dict.fromkeys(chain)}
    todo = [s for s, b in blobs.items() if b is None]
    written: set[str] = set()  # remembered here; a pending job's blob was remembered by it

    def make(s: str) -> LayerBlob:
        if s in jobs:
            try:
                jobs[s].result()
            except Canceled:  # this export failed and stopped it: nothing to write
                raise
            except Exception:  # it failed: written here instead
                pass
            if (known := _known(s, store, content, comp)) is not None:
                return known
        written.add(s)
        return _write(s, snapshots, content, comp, uploads)

    try:
        if len(todo) == 1:
            blobs[todo[0]] = make(todo[0])
        elif todo:
            with ThreadPoolExecutor(min(len(todo), _LAYERS_AT_ONCE), thread_name_prefix="layer") as pool:
                futures = {s: pool.submit(make, s) for s in todo}
                try:
                    for s, f in futures.items():
                        blobs[s] = interruptible.result(f)
                except BaseException:  # a failed layer or Ctrl-C: those not started are not, those done stay known
                    if pending is not None:
                        pending.cancel()  # a job waited for stops now, not at the end of its layer
                    pool.shutdown(wait=True, cancel_futures=True)
                    for s, f in futures.items():
                        if s in written and f.done() and not f.cancelled() and f.exception() is None:
                            _remember(s, store, content, comp, f.result())
                    raise
    except BaseException:
        if pending is not None:
            pending.cancel()
        raise
    done = {s: b for s, b in blobs.items() if b is not None}
    for s in todo:  # the store is written from this thread, as before
        if s in written:
            _remember(s, store, content, comp, done[s])
    return [done[s] for s in chain]


def build_image(
    chain: list[str], image: dict[str, Any], store: CacheStore, snapshots: SnapshotManager, content: ContentStore,
    compression: str | Compression = "gzip", uploads: Uploads | None = None,
    pending: PendingLayers | None = None,
) -> str:
    """Write the layers, config and manifest of the image; returns the manifest digest. New layer blobs also
    go to `uploads` while they are written (a push); `pending` as in `layer_blobs`."""
    from workbench.image.config import build_manifest

    blobs = layer_blobs(chain, store, snapshots, content, compression, uploads, pending)
    config = copy.deepcopy(image)
    config["rootfs"] = {"type": "layers", "diff_ids": [b.diff_id for b in blobs]}
    config.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    keys = ("architecture", "os", "created", "author", "config", "rootfs", "history")
    ordered: dict[str, Any] = {k: config[k] for k in keys if k in config}
    ordered.update({k: v for k, v in config.items() if k not in ordered})
    return build_manifest(content, ordered, [b.descriptor() for b in blobs])
