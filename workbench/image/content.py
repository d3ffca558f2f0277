"""The content store: blobs by digest, written to a temp file and renamed so a present blob is complete."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class DigestMismatch(ValueError):
    pass


class BlobWriter:
    """A streaming blob write; `digest` is known once the `with` block ends."""

    def __init__(self, path: Path) -> None:
        self.tmp = path
        self.file = open(path, "wb")  # noqa: SIM115 - closed by ContentStore.writer
        self.sha = hashlib.sha256()
        self.size = 0
        self.digest = ""

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.ingest = root / "ingest"
        self.ingest.mkdir(exist_ok=True)

    def path(self, digest: str) -> Path:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64:
            raise ValueError(f"unsupported digest {digest!r}")
        return self.blobs / hexd

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def write(self, data: bytes, expected: str | None = None) -> str:
        with self.writer(expected) as w:
            w.write(data)
        return w.digest

    @contextmanager
    def writer(self, expected: str | None = None) -> Iterator[BlobWriter]:
        w = BlobWriter(self.ingest / f"{os.getpid()}-{secrets.token_hex(6)}")
        try:
            yield w
            w.file.flush()
            os.fsync(w.file.fileno())
            w.file.close()
            w.digest = "sha256:" + w.sha.hexdigest()
            if expected is not None and expected != w.digest:
                raise DigestMismatch(f"content digest {w.digest} does not match the expected {expected}")
            os.replace(w.tmp, self.path(w.digest))
        finally:
            if not w.file.closed:
                w.file.close()
            if w.tmp.exists():
                w.tmp.unlink()
