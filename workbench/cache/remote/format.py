"""The cache config: layers and the records that link cache keys to chains of those layers.

    {"mediaType": "application/vnd.workbench.cacheconfig.v0+json",
     "layers":  [{"digest", "size", "mediaType", "diffID", "createdAt"}, ...],
     "records": [{"key": "sha256:…", "name": "[2/3] RUN …", "layers": [0, 1, 2]}, ...]}

`layers` of a record are indexes into the top-level list, bottom layer first (an empty list is an empty
result, e.g. `FROM scratch`). Parsing checks every field, so a corrupt or hostile config is refused whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from workbench.cache.remote import RemoteCacheError
from workbench.image.content import check_digest

MEDIA_TYPE = "application/vnd.workbench.cacheconfig.v0+json"


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    media_type: str
    diff_id: str
    created_at: str = ""

    def descriptor(self) -> dict[str, object]:
        """The OCI descriptor of the blob, with the diff id as an annotation (as BuildKit's cache manifests)."""
        ann = {"containerd.io/uncompressed": self.diff_id}
        if self.created_at:
            ann["buildkit/createdat"] = self.created_at
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, "annotations": ann}


@dataclass(frozen=True)
class Record:
    key: str
    name: str
    layers: tuple[int, ...]


@dataclass
class CacheConfig:
    layers: list[Layer] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)

    def add_layer(self, layer: Layer) -> int:
        for n, known in enumerate(self.layers):
            if known.digest == layer.digest:
                return n
        self.layers.append(layer)
        return len(self.layers) - 1

    def dumps(self) -> bytes:
        doc = {
            "mediaType": MEDIA_TYPE,
            "layers": [{"digest": x.digest, "size": x.size, "mediaType": x.media_type, "diffID": x.diff_id,
                        "createdAt": x.created_at} for x in self.layers],
            "records": [{"key": r.key, "name": r.name, "layers": list(r.layers)} for r in self.records],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def loads(data: bytes) -> CacheConfig:
    """Parse and validate a cache config; RemoteCacheError says what is wrong."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise RemoteCacheError(f"cache config is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("mediaType") != MEDIA_TYPE:
        media = doc.get("mediaType") if isinstance(doc, dict) else None
        raise RemoteCacheError(f"not a workbench cache config (mediaType {media!r})")
    config = CacheConfig()
    try:
        for x in doc.get("layers") or []:
            size = x["size"]
            if not isinstance(size, int) or size < 0 or not isinstance(x["mediaType"], str):
                raise ValueError(f"bad layer {x!r}")
            config.layers.append(Layer(check_digest(x["digest"]), size, x["mediaType"], check_digest(x["diffID"]),
                                       str(x.get("createdAt") or "")))
        for r in doc.get("records") or []:
            idx = tuple(r["layers"])
            if not all(isinstance(i, int) and 0 <= i < len(config.layers) for i in idx):
                raise ValueError(f"record {r.get('key')!r} names a layer that is not in the config")
            if not isinstance(r["key"], str) or not isinstance(r.get("name", ""), str):
                raise ValueError(f"bad record {r!r}")
            config.records.append(Record(r["key"], r.get("name", ""), idx))
    except (KeyError, TypeError, ValueError) as e:
        raise RemoteCacheError(f"invalid cache config: {e}") from None
    return config
