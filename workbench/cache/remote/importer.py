"""`--cache-from`: load the cache configs before the solve; turn a record into a local result on demand.

An `ImportedCache` is one of the solver's cache sources (workbench.solver.cachesource): it is asked to
`materialize` a vertex whose key is not in the local store. Its layers are downloaded
(skipped when a snapshot of the same chain is already here), checked against the blob digest and the diff id,
extracted by the safe layer code into snapshots, and the key is recorded in the local store. Any failure is a
warning and the step simply runs; a blob that does not match its digest is never stored.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO

from workbench.cache.remote import Backend, RemoteCacheError
from workbench.cache.remote.format import CacheConfig, Layer, Record, loads
from workbench.progress.events import BuildWarning, EventBus, VertexCompleted, VertexStarted, VertexStatus

if TYPE_CHECKING:
    from workbench.cache.remote.spec import CacheSpec
    from workbench.llb.ops import Vertex
    from workbench.worker import LayerRef, Worker


class ImportedCache:
    """The records of every `--cache-from`, first source first, materialized on `worker`."""

    def __init__(self, bus: EventBus, worker: Worker) -> None:
        self.bus = bus
        self.worker = worker
        self.records: dict[str, tuple[Backend, CacheConfig, Record]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, specs: list[CacheSpec], bus: EventBus, worker: Worker) -> ImportedCache:
        imported = cls(bus, worker)
        for spec in specs:
            try:
                backend = spec.backend()
            except RemoteCacheError as e:
                bus.emit(BuildWarning(f"failed to import cache {spec.type}: {e}"))
                continue
            name = f"importing cache manifest from {backend.describe()}"
            vid, start = "internal:" + name, time.time()
            bus.emit(VertexStarted(vid, name, ts=start))
            try:
                for data in backend.read_configs():
                    config = loads(data)
                    for record in config.records:
                        imported.records.setdefault(record.key, (backend, config, record))
            except Exception as e:  # an import failure is a warning, never a failed build
                what = str(e) if isinstance(e, RemoteCacheError | OSError | ValueError) else f"{type(e).__name__}: {e}"
                bus.emit(BuildWarning(f"failed to import cache from {backend.describe()}: {what}"))
            bus.emit(VertexCompleted(vid, name, duration=time.time() - start))
        return imported

    def has(self, key: str) -> bool:
        return key in self.records

    def materialize(self, v: Vertex, key: str) -> list[str] | None:
        """The local snapshot chain for `key` made from the imported record, or None (with a warning)."""
        found = self.records.get(key)
        if found is None:
            return None
        backend, config, record = found
        progress = _Progress(self.bus, v.name, key)
        try:
            chain = self._chain(backend, [config.layers[i] for i in record.layers], progress)
            return self.worker.store.record(key, chain, v.name)
        except Exception as e:  # network, digest, corrupt tar, zstd: all only a warning, and the step runs
            with self._lock:
                self.records.pop(key, None)  # not trusted again in this build
            what = str(e) if isinstance(e, RemoteCacheError | OSError) else f"{type(e).__name__}: {e}"
            self.bus.emit(BuildWarning(f"failed to import cache for {v.name} from {backend.describe()}: {what}",
                                       vertex=v.digest))
            return None
        finally:
            progress.finish()

    def _chain(self, backend: Backend, layers: list[Layer], progress: _Progress) -> list[str]:
        from workbench.worker import LayerRef

        worker = self.worker

        @contextmanager
        def open_blob(layer: LayerRef) -> Iterator[BinaryIO]:
            if not worker.content.has(layer.digest):
                _download(worker, backend, layer, progress)
            with open(worker.content.path(layer.digest), "rb") as f:
                yield f  # ensure_layer_chain checks the diff ID as it extracts

        def on_extract(layer: LayerRef, done: bool) -> None:
            progress.status(f"extracting {layer.digest}", 0, 0, done=done)

        refs = [LayerRef(layer.diff_id, layer.digest, layer.size, layer.media_type) for layer in layers]
        return worker.ensure_layer_chain(refs, open_blob, on_extract)


class _Progress:
    """Byte progress of one record's import, under its own internal vertex (started on first use)."""

    def __init__(self, bus: EventBus, step: str, key: str) -> None:
        self.bus, self.name, self.vid = bus, f"importing cache for {step}", f"internal:importing cache {key}"
        self.start = 0.0

    def status(self, status_id: str, current: int, total: int, done: bool = False) -> None:
        if not self.start:
            self.start = time.time()
            self.bus.emit(VertexStarted(self.vid, self.name, ts=self.start))
        self.bus.emit(VertexStatus(self.vid, self.name, status_id=status_id, current=current, total=total,
                                   done=done))

    def finish(self) -> None:
        if self.start:
            self.bus.emit(VertexCompleted(self.vid, self.name, duration=time.time() - self.start))


def _download(worker: Worker, backend: Backend, layer: LayerRef, progress: _Progress) -> None:
    """Fetch a blob into the content store: to a private ingest file, verified by digest, then renamed."""
    tmp = worker.content.ingest / f"{os.getpid()}-{secrets.token_hex(8)}"
    last = [0.0]

    def report(current: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.1 and current < (total or layer.size):
            last[0] = now
            progress.status(layer.digest, current, total or layer.size)

    try:
        with open(tmp, "w+b") as f:
            backend.get_blob(layer.digest, f, report)
            f.flush()
            os.fsync(f.fileno())
            f.seek(0)
            sha = hashlib.sha256()
            size = 0
            while chunk := f.read(1 << 20):
                sha.update(chunk)
                size += len(chunk)
        digest = "sha256:" + sha.hexdigest()
        if digest != layer.digest:
            raise RemoteCacheError(f"downloaded blob {layer.digest} has digest {digest} ({size} of {layer.size} "
                                   "bytes): not trusted")
        os.replace(tmp, worker.content.path(layer.digest))
        progress.status(layer.digest, size, size, done=True)
    finally:
        tmp.unlink(missing_ok=True)
