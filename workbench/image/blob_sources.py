"""Which repositories of a registry hold a blob (for cross-repository mounts when pushing).

Recorded next to the content store (`sources/<hex>`, one "registry/repository" a line) by pulls and pushes.
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench.image.content import ContentStore
from workbench.image.reference import Reference


def _sources_dir(store: ContentStore) -> Path:
    return store.root / "sources"


def record_source(store: ContentStore, digests: list[str], ref: Reference) -> None:
    """Remember that the blobs `digests` are in `ref`'s repository (so a push to another repository of the same
    registry can mount them instead of uploading)."""
    line = f"{ref.registry}/{ref.repository}\n"
    d = _sources_dir(store)
    d.mkdir(mode=0o700, exist_ok=True)
    for digest in digests:
        path = d / digest.split(":", 1)[1]
        try:
            if line in path.read_text().splitlines(keepends=True):
                continue
        except OSError:
            pass
        # one short append: atomic enough between processes
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600), "a") as f:
            f.write(line)


def blob_sources(store: ContentStore, digest: str, registry: str) -> list[str]:
    """Repositories of `registry` known to hold the blob `digest`."""
    try:
        lines = (_sources_dir(store) / digest.split(":", 1)[1]).read_text().splitlines()
    except OSError:
        return []
    return [line.split("/", 1)[1] for line in lines if line.startswith(registry + "/") and "/" in line]
