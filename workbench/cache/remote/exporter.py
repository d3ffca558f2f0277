"""`--cache-to`: after a successful solve, write the layers and the cache config of the solved steps.

mode=min exports the steps whose result is part of the final image (their chain is a prefix of the final
chain), mode=max every step. A step's layer is its snapshot's diff against its parent, as the image exporter
writes it (gzip, or zstd with `compression=zstd`). Blobs the backend already has are not uploaded again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from workbench.cache.remote import Backend, RemoteCacheError
from workbench.cache.remote.format import CacheConfig, Layer, Record
from workbench.progress.events import BuildWarning, EventBus, VertexCompleted, VertexFailed, VertexStarted, VertexStatus

if TYPE_CHECKING:
    from workbench.cache.remote.spec import CacheSpec
    from workbench.llb.ops import Vertex
    from workbench.worker import Worker

KeyOf = Callable[["Vertex"], str]  # a solved vertex's cache key ("" when it was not part of the solve)

ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"


class CacheExportError(Exception):
    """An export that failed and was not allowed to (`ignore-error=false`)."""


def export_caches(specs: list[CacheSpec], worker: Worker, key_of: KeyOf, target: Vertex, final_chain: list[str],
                  bus: EventBus) -> None:
    """Export to every `--cache-to`; CacheExportError for the first one that fails without ignore-error."""
    for spec in specs:
        backend: Backend | None = None
        described = spec.type
        error: Exception | None = None
        try:
            backend = spec.backend()
            described = backend.describe()
        except RemoteCacheError as e:
            error = e
        name = f"exporting cache to {described}"
        vid, start = "internal:" + name, time.time()
        bus.emit(VertexStarted(vid, name, ts=start))
        if backend is not None:
            try:
                _export(spec, backend, worker, key_of, target, final_chain, bus, vid, name)
            except Exception as e:  # network, disk, service answers: decided by ignore-error below
                error = e
        if error is None:
            bus.emit(VertexCompleted(vid, name, duration=time.time() - start))
            continue
        message = str(error) if isinstance(error, RemoteCacheError | OSError) else f"{type(error).__name__}: {error}"
        if spec.ignore_error:
            bus.emit(VertexCompleted(vid, name, duration=time.time() - start))
            bus.emit(BuildWarning(f"failed to export cache to {described}: {message} (ignored: ignore-error=true)"))
            continue
        bus.emit(VertexFailed(vid, name, error=message, duration=time.time() - start))
        raise CacheExportError(f"failed to export cache to {described}: {message}")


def build_config(spec: CacheSpec, worker: Worker, key_of: KeyOf, target: Vertex, final_chain: list[str]) -> CacheConfig:
    """The records and layers of the steps `spec.mode` selects."""
    from workbench.image.assemble import layer_blob
    from workbench.llb.ops import LocalSource

    compression = spec.attrs.get("compression", "gzip")
    if compression not in ("gzip", "zstd"):
        raise RemoteCacheError(f"unsupported compression {compression!r} (gzip or zstd)")
    config = CacheConfig()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    layers: dict[str, Layer] = {}
    for v in target.walk():
        if isinstance(v.op, LocalSource):
            continue
        key = key_of(v)
        chain = worker.store.lookup(key) if key else None
        if chain is None or not all(worker.snapshots.exists(s) for s in chain):
            continue
        if spec.mode == "min" and chain != final_chain[:len(chain)]:
            continue
        idx = []
        for snapshot in chain:
            if snapshot not in layers:
                if compression == "zstd":
                    layers[snapshot] = _zstd_layer(worker, snapshot, created)
                else:
                    b = layer_blob(snapshot, worker.store, worker.snapshots, worker.content)
                    layers[snapshot] = Layer(b.digest, b.size, b.media_type, b.diff_id, created)
            idx.append(config.add_layer(layers[snapshot]))
        config.records.append(Record(key, v.name, tuple(idx)))
    return config


def inline_cache(spec: CacheSpec, worker: Worker, key_of: KeyOf, target: Vertex, final_chain: list[str],
                 image: dict[str, Any]) -> dict[str, Any]:
    """`image` (an image config) with the cache of the steps that made it embedded (`--cache-to type=inline`).

    Only the final image's steps can be inline (their layers are the image's own), so the mode is always min.
    """
    from dataclasses import replace

    from workbench.cache.remote.registry import INLINE_KEY, inline_cache_value

    config = build_config(replace(spec, attrs={**spec.attrs, "mode": "min", "compression": "gzip"}), worker, key_of,
                          target, final_chain)
    return {**image, INLINE_KEY: inline_cache_value(config.dumps())}


def _zstd_layer(worker: Worker, snapshot: str, created: str) -> Layer:
    from workbench.snapshot.layers import write_layer

    with worker.content.writer() as w:
        diff_id, digest, size = write_layer(worker.snapshots.path(snapshot), w, "zstd")
    return Layer(digest, size, ZSTD_LAYER, diff_id, created)


def _export(spec: CacheSpec, be: Backend, worker: Worker, key_of: KeyOf, target: Vertex, final_chain: list[str],
            bus: EventBus, vid: str, name: str) -> None:
    bus.emit(VertexStatus(vid, name, status_id="preparing build cache for export"))
    config = build_config(spec, worker, key_of, target, final_chain)
    bus.emit(VertexStatus(vid, name, status_id="preparing build cache for export", done=True))
    for layer in config.layers:
        status = f"writing layer {layer.digest}"
        if be.has_blob(layer.digest):
            bus.emit(VertexStatus(vid, name, status_id=status, current=layer.size, total=layer.size, done=True))
            continue
        def progress(current: int, total: int, status: str = status, size: int = layer.size,
                     last: list[float] = [0.0]) -> None:  # noqa: B006 - one list per layer, on purpose
            now = time.monotonic()
            if now - last[0] >= 0.1 and current < size:
                last[0] = now
                bus.emit(VertexStatus(vid, name, status_id=status, current=current, total=total or size))

        be.put_blob(layer.digest, worker.content.path(layer.digest), layer.size, progress)
        bus.emit(VertexStatus(vid, name, status_id=status, current=layer.size, total=layer.size, done=True))
    bus.emit(VertexStatus(vid, name, status_id="writing cache manifest"))
    be.write_config(config.dumps(), [x.descriptor() for x in config.layers])
    bus.emit(VertexStatus(vid, name, status_id="writing cache manifest", done=True))
