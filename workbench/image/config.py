"""Image config and manifest blobs."""

from __future__ import annotations

import json
from typing import Any

from workbench.image.content import ContentStore

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def build_manifest(store: ContentStore, config: dict[str, Any], layers: list[dict[str, Any]]) -> str:
    """Write the config and an OCI manifest for it; returns the manifest digest."""
    cfg = dumps(config)
    cfg_digest = store.write(cfg)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                "config": {"mediaType": CONFIG, "digest": cfg_digest, "size": len(cfg)}, "layers": layers}
    return store.write(dumps(manifest))
