"""What a `FROM ref` names: the local image store first (built, loaded or imported images), else the registry."""

from __future__ import annotations

import json
import time
from typing import Any

from workbench.image.content import ContentStore, CorruptBlob
from workbench.image.reference import Reference
from workbench.progress.events import EventBus, VertexCompleted, VertexFailed, VertexStarted


def local_image(ref: Reference, content: ContentStore, platform: str) -> tuple[str, dict[str, Any]] | None:
    """(manifest digest, config) of the image the local store names `ref` for `platform`, if it has one."""
    from workbench.image.store import ImageStore, ImageStoreError

    if ref.digest is not None or not (content.root.parent / "images.json").exists():
        return None
    images = ImageStore.for_content(content)
    try:
        found = images.get(str(ref))
        if found is None:
            return None
        digest = images.manifest_for(found.digest, platform)
        if digest is None:
            return None
        manifest = json.loads(content.read(digest))
        config = json.loads(content.read(manifest["config"]["digest"]))
        for layer in manifest.get("layers") or []:
            if not content.has(layer["digest"]):
                if (corrupt := content.corrupt(layer["digest"])) is not None:
                    raise corrupt
                return None  # pruned: a pull fetches it again
    except CorruptBlob as e:  # found now or by an earlier read: a build on must not quietly use another image
        raise e.for_image(str(ref)) from None
    except (ImageStoreError, OSError, ValueError, KeyError):
        return None
    return digest, config


def resolve_image(ref: str, content: ContentStore, bus: EventBus, platform: str = "linux/amd64"
                  ) -> tuple[str, str, dict[str, Any]]:
    """(normalized name, manifest digest, config) of `ref` for `platform`; a registry lookup is reported on
    `bus` as `[internal] load metadata for REF`. RuntimeError (its message says why) when it cannot be had.
    Only the manifest and config are fetched, as BuildKit's frontend resolves an image: the layers are the
    FROM step's, downloaded while it extracts them (or, remotely, the daemon's)."""
    from workbench.image.pull import pull
    from workbench.image.reference import InvalidReference, parse_reference
    from workbench.image.registry_errors import RegistryError

    try:
        parsed = parse_reference(ref)
    except InvalidReference as e:
        raise RuntimeError(str(e)) from None
    found = local_image(parsed, content, platform)
    if found is not None:
        return str(parsed), found[0], found[1]
    name = f"[internal] load metadata for {parsed}"
    vid = "internal:" + name
    t0 = time.time()
    bus.emit(VertexStarted(vid, name, ts=t0))
    try:
        image = pull(parsed, content, platform, layers=False)
    except RegistryError as e:
        bus.emit(VertexFailed(vid, name, error=str(e)))
        raise RuntimeError(str(e)) from None
    bus.emit(VertexCompleted(vid, name, duration=time.time() - t0))
    return str(parsed), image.manifest_digest, image.config
