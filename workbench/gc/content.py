"""Content blobs in GC's view: layer blobs go with their snapshot, and the manifests, configs and indexes
that point at kept layers go with the snapshot of their topmost kept layer."""

from __future__ import annotations

import json
from pathlib import Path

_MAX_METADATA = 4 << 20  # manifests, indexes and configs are small JSON blobs


def blob_dir(root: Path) -> Path:
    """Where `root`'s content blobs are (one file per sha256 digest)."""
    return root / "content" / "blobs" / "sha256"


def _read_metadata(path: Path) -> dict[str, object] | None:
    """A blob's JSON document if it is a small JSON object (a manifest, index or config)."""
    try:
        if path.stat().st_size > _MAX_METADATA:
            return None
        with open(path, "rb") as f:
            if f.read(1) != b"{":
                return None
            doc = json.loads(b"{" + f.read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _digests(descs: object) -> list[str]:
    if not isinstance(descs, list):
        return []
    return [str(d.get("digest", "")) for d in descs if isinstance(d, dict)]


def attach_metadata(blob_dir: Path, names: list[str], owner: dict[str, str]) -> dict[str, str]:
    """Manifests (and their configs) and indexes among `names` that point at kept layer blobs, attached to
    the snapshot of their topmost kept layer: {blob digest: snapshot}."""
    manifests: dict[str, dict[str, object]] = {}
    indexes: dict[str, dict[str, object]] = {}
    for name in names:
        digest = "sha256:" + name
        if digest in owner:
            continue
        doc = _read_metadata(blob_dir / name)
        if doc is None:
            continue
        if isinstance(doc.get("manifests"), list):
            indexes[digest] = doc
        elif isinstance(doc.get("layers"), list) and isinstance(doc.get("config"), dict):
            manifests[digest] = doc
    attached: dict[str, str] = {}
    for digest, doc in manifests.items():
        kept = [owner[d] for d in _digests(doc["layers"]) if d in owner]
        if kept:
            attached[digest] = kept[-1]
            for config in _digests([doc["config"]]):
                if config not in owner:
                    attached.setdefault(config, kept[-1])
    for digest, doc in indexes.items():
        kept = [attached[d] for d in _digests(doc["manifests"]) if d in attached]
        if kept:
            attached[digest] = kept[0]
    return attached
