"""Image config and manifest blobs (OCI media types)."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from workbench.image.content import ContentStore

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
_GO_ESCAPES = [("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")]


def dumps(doc: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it: keys in insertion order, no spaces, UTF-8, and <, >, &,
    U+2028, U+2029 escaped (they can only occur inside strings, so replacing them in the text is safe)."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in _GO_ESCAPES:
        text = text.replace(ch, esc)
    return text.encode()


def new_image(base_config: dict[str, Any] | None = None, platform: str = "linux/amd64") -> dict[str, Any]:
    """A new image config: a deep copy of the base image's (its layers and history kept), or an empty one."""
    if base_config is not None:
        image = copy.deepcopy(base_config)
    else:
        os_, _, arch = platform.partition("/")
        arch, _, variant = arch.partition("/")
        image = {"architecture": arch, "os": os_}
        if variant:
            image["variant"] = variant
        image["config"] = {}
    image.setdefault("config", {})
    image.setdefault("history", [])
    image["rootfs"] = {"type": "layers", "diff_ids": list((image.get("rootfs") or {}).get("diff_ids") or [])}
    return image


def add_history(image: dict[str, Any], created_by: str, empty_layer: bool = False, comment: str | None = None,
                created: str | None = None) -> None:
    """Append a history entry (`empty_layer` for steps that change only the config)."""
    entry: dict[str, Any] = {"created": created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "created_by": created_by}
    if comment:
        entry["comment"] = comment
    if empty_layer:
        entry["empty_layer"] = True
    image.setdefault("history", []).append(entry)


def build_manifest(store: ContentStore, config: dict[str, Any], layers: list[dict[str, Any]]) -> str:
    """Write `config` and an OCI manifest of it and `layers` (descriptors, as given); returns the manifest digest."""
    cfg = dumps(config)
    cfg_digest = store.write(cfg)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                "config": {"mediaType": CONFIG, "digest": cfg_digest, "size": len(cfg)},
                "layers": [dict(layer) for layer in layers]}
    return store.write(dumps(manifest))
