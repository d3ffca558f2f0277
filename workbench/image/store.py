"""The local image store: image names → manifest digests, under ROOT/images.json, blobs in ROOT/content.

Images get here from `--output type=image`, `workbench image load|import|tag`; `FROM name` looks here before
asking a registry. Names are kept normalised ("docker.io/library/busybox:latest"). The file is rewritten
whole (temp file + rename) under an flock on ROOT/images.lock, so concurrent writers never lose an update.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.image.content import ContentStore, check_digest
from workbench.image.reference import InvalidReference, Reference, parse_reference
from workbench.state_root import prepare_root, write_private

_INDEX_KEYS = ("manifests",)


class ImageStoreError(Exception):
    """A bad name, or an image that is not in the store."""


@dataclass(frozen=True)
class StoredImage:
    name: str  # normalised, with a tag ("docker.io/library/busybox:latest") or a digest
    digest: str  # manifest (or index) digest
    created: float

    @property
    def familiar(self) -> tuple[str, str]:
        """(repository, tag) as docker shows them: "busybox", "latest"; "localhost:5000/app", "1.0"."""
        ref = parse_reference(self.name)
        repo = ref.name
        for prefix in ("docker.io/library/", "docker.io/"):
            if repo.startswith(prefix):
                repo = repo[len(prefix):]
                break
        return repo, ref.tag or "<none>"


def normalise(name: str) -> Reference:
    """The reference for a user-given image name; ImageStoreError if it is not one."""
    try:
        return parse_reference(name)
    except InvalidReference as e:
        raise ImageStoreError(str(e)) from None


class ImageStore:
    """Named images in a build root."""

    def __init__(self, root: Path) -> None:
        self.root = prepare_root(Path(root))
        self.content = ContentStore(self.root / "content")
        self.file = self.root / "images.json"

    @classmethod
    def for_content(cls, content: ContentStore) -> ImageStore:
        """The image store of the root whose content store is `content` (ROOT/content)."""
        return cls(content.root.parent)

    # -- reading and writing the index -----------------------------------------------------------------------

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            doc = json.loads(self.file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise ImageStoreError(f"the image store {self.file} is unreadable: {e}") from None
        images = doc.get("images") if isinstance(doc, dict) else None
        return images if isinstance(images, dict) else {}

    @contextmanager
    def _update(self) -> Iterator[dict[str, dict[str, Any]]]:
        with open(os.open(self.root / "images.lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            images = self._read()
            yield images
            write_private(self.file, json.dumps({"images": images}, indent=1, sort_keys=True) + "\n")

    # -- the public operations ------------------------------------------------------------------------------

    def entries(self) -> list[StoredImage]:
        """Every named image, newest first."""
        out = [StoredImage(name, str(e["digest"]), float(e.get("created", 0))) for name, e in self._read().items()]
        return sorted(out, key=lambda i: (-i.created, i.name))

    def get(self, name: str) -> StoredImage | None:
        """The image called `name` (any spelling docker accepts), if stored."""
        key = str(normalise(name))
        entry = self._read().get(key)
        return StoredImage(key, str(entry["digest"]), float(entry.get("created", 0))) if entry else None

    def tag(self, name: str, digest: str) -> StoredImage:
        """Name the image `digest` (which must be in the content store) `name`, replacing an older one."""
        check_digest(digest)
        if not self.content.has(digest):
            raise ImageStoreError(f"image {digest} is not in the content store {self.content.root}")
        key = str(normalise(name))
        now = time.time()
        with self._update() as images:
            images[key] = {"digest": digest, "created": now}
        return StoredImage(key, digest, now)

    def remove(self, name: str) -> StoredImage:
        """Forget the name (its blobs become garbage for `prune` once nothing else refers to them)."""
        key = str(normalise(name))
        with self._update() as images:
            entry = images.pop(key, None)
        if entry is None:
            raise ImageStoreError(f"no such image: {name}")
        return StoredImage(key, str(entry["digest"]), float(entry.get("created", 0)))

    def resolve(self, name: str) -> StoredImage:
        """`get`, or a digest / unique digest prefix of a stored image; ImageStoreError if none."""
        try:
            found = self.get(name)
        except ImageStoreError:
            found = None
        if found:
            return found
        want = name if name.startswith("sha256:") else "sha256:" + name
        matches = {i.digest: i for i in self.entries() if i.digest.startswith(want)} if len(want) > 10 else {}
        if len(matches) == 1:
            return next(iter(matches.values()))
        raise ImageStoreError(f"no such image: {name}")

    def manifest_for(self, digest: str, platform: str) -> str | None:
        """The platform manifest of image `digest` (itself if not an index) if its config matches `platform`."""
        from workbench.image.manifests import select_platform
        from workbench.image.registry_errors import RegistryError

        doc = json.loads(self.content.read(digest))
        if "manifests" in doc:
            try:
                digest = str(select_platform(doc, platform)["digest"])
            except RegistryError:
                return None
            if not self.content.has(digest):
                return None
            doc = json.loads(self.content.read(digest))
        config = json.loads(self.content.read(doc["config"]["digest"]))
        want_os, _, rest = platform.partition("/")
        want_arch = rest.split("/")[0]
        if config.get("os", want_os) != want_os or config.get("architecture", want_arch) != want_arch:
            return None
        return digest

    def blobs(self, digest: str) -> list[str]:
        """`digest` and every blob under it that is present (configs, layers, children of an index)."""
        out: list[str] = []

        def walk(d: str) -> None:
            if d in out or not self.content.has(d):
                return
            out.append(d)
            try:
                doc = json.loads(self.content.read(d))
            except ValueError:
                return
            for child in doc.get("manifests") or []:
                walk(str(child.get("digest")))
            if isinstance(doc.get("config"), dict):
                out.extend(str(x.get("digest")) for x in [doc["config"], *(doc.get("layers") or [])])

        walk(digest)
        return out

    def referenced_blobs(self) -> set[str]:
        """Every blob a named image needs: garbage collection keeps these."""
        out: set[str] = set()
        for image in self.entries():
            out.update(self.blobs(image.digest))
        return out

    def size(self, digest: str) -> int:
        """Bytes of the image's blobs in the content store."""
        return sum(self.content.size(d) for d in set(self.blobs(digest)) if self.content.has(d))


def referenced_blobs(root: Path) -> set[str]:
    """The blobs the named images of `root` need (empty if it has no image store); for the garbage collector."""
    if not (Path(root) / "images.json").exists():
        return set()
    try:
        return ImageStore(root).referenced_blobs()
    except (ImageStoreError, OSError, ValueError):
        return set()
