"""New layers compressed while the build still runs.

A build that writes an image (`--output type=oci|docker|image`, not a push, which streams its layers as it
compresses them) compresses each layer of that image as soon as the step that made it completes (or is found
cached), one layer at a time in the background (on every core, at a lower priority than the build's own steps)
while the later steps run; the export then finds those blobs made and compresses only the rest. The blobs are the
same bytes the export would write (the same `layer_blob`), remembered the same way. Only the steps whose filesystem
the image is built on are taken (the target's first-input lineage, and every input of a merge), never other stages.
The export takes over what has not started (`hand_over`, or `settle` first where the blobs must be known before the
export, as an inline cache's are); a failed or canceled build stops the layer being written, storing nothing of it
(`close`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench import interruptible
from workbench.llb.ops import ExecOp, FileOp, LocalSource, MergeOp, Vertex
from workbench.progress.events import Event, EventBus, VertexCached, VertexCompleted

if TYPE_CHECKING:
    from workbench.cache.store import LayerBlob
    from workbench.image.assemble import Compression
    from workbench.request import OutputSpec
    from workbench.worker import Worker


@dataclass(frozen=True)
class Pending:
    """Layers a prefetch started, for an export to wait for (`jobs`, by snapshot), and `cancel` to stop them
    when the export fails."""

    jobs: Mapping[str, Future[LayerBlob]]
    cancel_event: threading.Event

    def cancel(self) -> None:
        self.cancel_event.set()


def image_lineage(target: Vertex) -> frozenset[str]:
    """Digests of the steps below `target` whose top snapshot is a layer of the image `target` ends: each
    exec or file op's first input (a file op's local context is not one), every input of a merge."""
    found: set[str] = set()
    todo = [target]
    while todo:
        v = todo.pop()
        if v.digest in found:
            continue
        found.add(v.digest)
        if isinstance(v.op, MergeOp):
            todo.extend(v.inputs)
        elif isinstance(v.op, ExecOp | FileOp) and v.inputs and not isinstance(v.inputs[0].op, LocalSource):
            todo.append(v.inputs[0])
    found.discard(target.digest)  # the last layer is the export's own, written side by side with the rest
    return frozenset(found)


class LayerPrefetch:
    """Compresses the layers of `lineage` steps as they complete (see the module doc)."""

    def __init__(self, worker: Worker, compression: Compression, lineage: frozenset[str]) -> None:
        self.worker, self.compression, self.lineage = worker, compression, lineage
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="layer-prefetch", initializer=_lower_priority)
        self._jobs: dict[str, Future[LayerBlob]] = {}
        self._lock = threading.Lock()
        self._open = True
        self._cancel = threading.Event()

    def __call__(self, event: Event) -> None:
        """The event bus's sink: the layer of a lineage step that completed (or was cached) is queued."""
        if isinstance(event, VertexCompleted | VertexCached) and event.snapshot and event.vertex in self.lineage:
            if not self.worker.snapshots.exists(event.snapshot):  # a name masked by a redacting bus
                return
            with self._lock:
                if self._open and event.snapshot not in self._jobs:
                    self._jobs[event.snapshot] = self._pool.submit(self._compress, event.snapshot)

    def _compress(self, snapshot: str) -> LayerBlob:
        from workbench.image.assemble import layer_blob

        w = self.worker
        return layer_blob(snapshot, w.store, w.snapshots, w.content, self.compression, self._cancel)

    def hand_over(self, compression: Compression) -> Pending:
        """Stop taking layers; those not started are dropped (the export writes them), those started or done
        are handed to an export in `compression` (to one in another compression none, and the running one
        stops)."""
        with self._lock:
            self._open = False
            jobs = {s: f for s, f in self._jobs.items() if not f.cancel()}
        if compression != self.compression:  # blobs that export would not use: the one being written stops
            self._cancel.set()
            jobs = {}
        return Pending(jobs, self._cancel)

    def settle(self) -> None:
        """Stop taking layers, drop those not started and wait for the one being written (its blob is then
        remembered like any other)."""
        for job in self.hand_over(self.compression).jobs.values():
            try:
                interruptible.result(job)
            except Exception:  # the export writes it
                pass

    def close(self) -> None:
        """Stop: a layer being written stops and stores nothing; nothing else starts. Idempotent."""
        with self._lock:
            self._open = False
        self._cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _lower_priority() -> None:
    """The build's own steps come first: this thread (and the compressor threads it starts, which inherit it)
    runs 10 nice levels below the build."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + 10))
    except OSError:
        pass


def prefetch_layers(outputs: Iterable[OutputSpec], worker: Worker, target: Vertex,
                    bus: EventBus) -> LayerPrefetch | None:
    """A `LayerPrefetch` subscribed to `bus` for the first image output; None when there is none, when it is a
    push (which streams its new layers while it compresses them), or when its options are bad (the export
    reports them)."""
    from workbench.exporter.outputs import EXPORTERS, ExportError, compression_of, is_push

    for out in outputs:
        entry = EXPORTERS.get(out.type)
        if entry is None or not entry.image:
            continue
        if is_push(out):
            return None
        try:
            compression = compression_of(out)
        except ExportError:
            return None
        lineage = image_lineage(target)
        if not lineage:
            return None
        prefetch = LayerPrefetch(worker, compression, lineage)
        bus.subscribe(prefetch)
        return prefetch
    return None
