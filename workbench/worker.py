"""The machine a build runs on: one build root's stores, snapshots and content, and the executor.

Ops and cache sources are handed a `Worker`, never the solver: what they read and write lives here. A
rootless or remote executor plugs in below this seam.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from workbench.cache.store import CacheStore, LayerBlob
from workbench.image.content import ContentStore
from workbench.snapshot.manager import SnapshotManager
from workbench.state_root import prepare_root

if TYPE_CHECKING:
    from workbench.executor.runc import ExecResult, OutputFn
    from workbench.executor.spec import ExecSpec

DEFAULT_LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
EXTRACT_PARALLEL = 4  # layers fetched and extracted at once by ensure_layer_chain


@dataclass(frozen=True)
class LayerRef:
    """One layer of an image or of an imported cache record: its blob and what it unpacks to."""

    diff_id: str
    digest: str
    size: int
    media_type: str = DEFAULT_LAYER_TYPE


def chain_id(parent: str, diff_id: str) -> str:
    """The OCI chain id of a layer over `parent` (the chain id below it, "" for the bottom layer)."""
    return diff_id if not parent else "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


class Worker:
    """The stores of one build root, and the executor that runs processes on its snapshots."""

    def __init__(self, root: Path) -> None:
        self.root = prepare_root(root)
        self.store = CacheStore(root / "cache.db")
        self.snapshots = SnapshotManager(root)
        self.content = ContentStore(root / "content")

    def close(self) -> None:
        self.snapshots.cleanup()
        self.store.close()

    def has_chain(self, chain: list[str] | None) -> bool:
        """Whether every snapshot of `chain` is here (False for None)."""
        return chain is not None and all(self.snapshots.exists(s) for s in chain)

    def ensure_layer_chain(self, layers: Sequence[LayerRef],
                           open_blob: Callable[[LayerRef], AbstractContextManager[BinaryIO]],
                           on_extract: Callable[[LayerRef, bool], None],
                           stop: threading.Event | None = None) -> list[str]:
        """The snapshot chain of `layers`, bottom first: each layer is extracted once, shared by chain id.

        The longest chain already here is reused. The layers above it are extracted in parallel (up to
        EXTRACT_PARALLEL at once; each is its own snapshot dir, so order does not matter): `open_blob` gives a
        layer's blob, verified by the time its `with` closes cleanly (it may still be downloading while it is
        read), and `on_extract(layer, done)` is told when its extraction starts and ends. Each extraction goes
        into a temp dir, committed and recorded bottom first only after its blob checked out and its tar hashed
        to the layer's diff ID (else `LayerContentError`), so a failed, lying or interrupted layer leaves nothing
        that a later build trusts. On a failure (or Ctrl-C) `stop` is set: the other extractions end at once
        (the caller's downloads may watch it too).
        """
        from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor

        from workbench.interruptible import wait_futures
        from workbench.snapshot.layers import LayerContentError, extract_layer

        keys, cid = [], ""
        for layer in layers:
            cid = chain_id(cid, layer.diff_id)
            keys.append("layer:" + cid)
        chain: list[str] = []
        start = 0
        for i in reversed(range(len(layers))):
            existing = self.store.lookup(keys[i])
            if existing is not None and self.has_chain(existing):
                chain, start = existing, i + 1
                break
        if start == len(layers):
            return chain

        stop = stop if stop is not None else threading.Event()

        def extract(layer: LayerRef, prepared: Path) -> int:
            with open_blob(layer) as blob:
                on_extract(layer, False)
                diff_id, allocated = extract_layer(blob, prepared / "fs", layer.media_type, stop)
            if diff_id != layer.diff_id:
                raise LayerContentError(f"layer {layer.digest} unpacks to {diff_id}, not to the diff ID "
                                        f"{layer.diff_id} its image config gives: not trusted, nothing was kept")
            on_extract(layer, True)
            return allocated + os.lstat(prepared).st_blocks * 512  # the snapshot dir's size, as the GC measures it

        todo = range(start, len(layers))
        with ExitStack() as stack, ThreadPoolExecutor(min(EXTRACT_PARALLEL, len(todo)),
                                                      thread_name_prefix="layer") as pool:
            prepared = [stack.enter_context(self.snapshots.prepare()) for _ in todo]
            futures = [pool.submit(extract, layers[i], dir_) for i, dir_ in zip(todo, prepared, strict=True)]
            try:
                done, _ = wait_futures(futures, FIRST_EXCEPTION)  # a failure (or Ctrl-C) stops the others at once
                for future in futures:
                    if future in done and future.exception() is not None:
                        future.result()  # the lowest failure is the one raised
                for i, dir_, future in zip(todo, prepared, futures, strict=True):
                    allocated = future.result()
                    layer = layers[i]
                    snapshot = self.snapshots.commit(dir_)
                    self.store.record_snapshot_sizes({snapshot: allocated})  # the GC need not walk it
                    self.store.record_layer_blob(snapshot, LayerBlob(layer.diff_id, layer.digest, layer.size,
                                                                     layer.media_type))
                    chain = self.store.record(keys[i], chain + [snapshot], f"layer {layer.diff_id}")
            except BaseException:
                stop.set()  # the running ones end at their next read; their temp dirs go with the stack
                for future in futures:
                    future.cancel()
                raise
        return chain

    # -- the executor -------------------------------------------------------------------------------

    def run(self, rootfs: Path, spec: ExecSpec, on_output: OutputFn | None = None,
            cancel: threading.Event | None = None) -> ExecResult:
        """Run `spec`'s process on `rootfs` (ExecError when it cannot be started)."""
        from workbench.executor import runc

        return runc.run(rootfs, spec, self.snapshots.tmp, on_output=on_output, cancel=cancel)

    def run_interactive(self, rootfs: Path, spec: ExecSpec, on_start: Callable[[Callable[[], None]], None],
                        terminal: int | None = None) -> int:
        """Run `spec`'s process on `rootfs` on this process's terminal (or on `terminal`); its exit code."""
        from workbench.executor import runc

        return runc.run_interactive(rootfs, spec, self.snapshots.tmp, on_start=on_start, terminal=terminal)
