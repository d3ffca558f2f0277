"""Turn a solved snapshot chain plus an image config into an image in the content store."""

from __future__ import annotations

import copy
import time
from typing import Any

from workbench.cache.store import CacheStore, LayerBlob
from workbench.image.content import ContentStore
from workbench.snapshot.manager import SnapshotManager

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TYPES = {"gzip": GZIP_LAYER, "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
               "uncompressed": "application/vnd.oci.image.layer.v1.tar"}


def layer_blob(snapshot: str, store: CacheStore, snapshots: SnapshotManager, content: ContentStore,
               compression: str = "gzip") -> LayerBlob:
    """The compressed blob of a snapshot, made once and remembered. With the default (gzip) a remembered blob
    is reused whatever its compression (base layers stay as pulled, as BuildKit without force-compression);
    zstd / uncompressed blobs are made on each export unless the remembered one already is one."""
    from workbench.snapshot.layers import write_layer

    media_type = LAYER_TYPES[compression]
    known = store.layer_blob(snapshot)
    if known is not None and content.has(known.digest) and (compression == "gzip" or known.media_type == media_type):
        return known
    with content.writer() as w:
        diff_id, digest, size = write_layer(snapshots.path(snapshot), w,
                                            "none" if compression == "uncompressed" else compression)
    blob = LayerBlob(diff_id, digest, size, media_type)
    if compression == "gzip":
        store.record_layer_blob(snapshot, blob)
    return blob


def build_image(
    chain: list[str], image: dict[str, Any], store: CacheStore, snapshots: SnapshotManager, content: ContentStore,
    compression: str = "gzip",
) -> str:
    """Write the layers, config and manifest of the image; returns the manifest digest."""
    from workbench.image.config import build_manifest

    blobs = [layer_blob(s, store, snapshots, content, compression) for s in chain]
    config = copy.deepcopy(image)
    config["rootfs"] = {"type": "layers", "diff_ids": [b.diff_id for b in blobs]}
    config.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    keys = ("architecture", "os", "created", "author", "config", "rootfs", "history")
    ordered: dict[str, Any] = {k: config[k] for k in keys if k in config}
    ordered.update({k: v for k, v in config.items() if k not in ordered})
    return build_manifest(content, ordered, [b.descriptor() for b in blobs])
