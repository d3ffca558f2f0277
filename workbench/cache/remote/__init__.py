"""Remote build cache: `--cache-to` / `--cache-from`, one cache format shared by every backend.

The format (`workbench.cache.remote.format`) is BuildKit's idea of a cache export: the compressed layer
blobs of the exported steps, plus one JSON *cache config* (`application/vnd.workbench.cacheconfig.v0+json`)
whose records link a solver cache key to the chain of layers that is its result. Importing a record means
fetching its layers (verified by digest, then by diff id), extracting them through the safe layer code into
snapshots, and recording the key in the local store: the step is then CACHED without running.

A backend stores blobs and the config somewhere. It is a small class with these methods (see `Backend`):

    describe() -> str                      # "gha:buildkit", "local:/path", for messages and progress
    has_blob(digest) -> bool               # is this blob already there (skip the upload)?
    put_blob(digest, path, size, progress) # upload the file at `path` (its content hashes to `digest`)
    get_blob(digest, out, progress)        # download into the binary file `out` (the caller verifies)
    read_configs() -> list[bytes]          # every cache config readable here (none is fine: [])
    write_config(config, layers)           # store the config; `layers` = the layer descriptors it names,
                                           # for backends that also write a manifest (OCI layout, registry)

`progress(current, total)` reports bytes. Errors are `RemoteCacheError`. A new backend (inline, registry) is
one module with such a class plus a constructor taking the `--cache-*` attributes, registered in
`workbench.cache.remote.spec.BACKENDS` by type name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

Progress = Callable[[int, int], None]


class RemoteCacheError(Exception):
    """A cache import or export problem (bad attributes, an unreachable service, a corrupt blob)."""


class Backend(Protocol):
    """Where a cache export lives; every backend implements these six calls."""

    def describe(self) -> str: ...

    def has_blob(self, digest: str) -> bool: ...

    def put_blob(self, digest: str, path: Path, size: int, progress: Progress) -> None: ...

    def get_blob(self, digest: str, out: BinaryIO, progress: Progress) -> None: ...

    def read_configs(self) -> list[bytes]: ...

    def write_config(self, config: bytes, layers: list[dict[str, object]]) -> None: ...
