"""Where a solve finds a step's result without running it: the local store first, then imported caches.

A `CacheSource` turns a cache key into a snapshot chain on this worker, or says it cannot (None); the
solver asks each in turn. `--cache-from` (workbench.cache.remote.importer) is one; a new kind of remote
cache is another class with these two methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from workbench.llb.ops import Vertex
    from workbench.worker import Worker


class CacheSource(Protocol):
    def has(self, key: str) -> bool:
        """Whether a result for `key` is known here (it may still fail to materialize)."""
        ...

    def materialize(self, v: Vertex, key: str) -> list[str] | None:
        """The local snapshot chain for `key` (made here if need be), or None."""
        ...


class LocalCache:
    """The build root's own store: a key's chain, if every snapshot of it is still here."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def has(self, key: str) -> bool:
        return self.worker.store.lookup(key) is not None

    def materialize(self, v: Vertex, key: str) -> list[str] | None:
        chain = self.worker.store.lookup(key)
        return chain if chain is not None and self.worker.has_chain(chain) else None


class PeekCache(LocalCache):
    """The local store, looked at without counting a use (a prediction must leave the GC's view unchanged)."""

    def has(self, key: str) -> bool:
        return self.worker.store.peek(key) is not None

    def materialize(self, v: Vertex, key: str) -> list[str] | None:
        chain = self.worker.store.peek(key)
        return chain if chain is not None and self.worker.has_chain(chain) else None
