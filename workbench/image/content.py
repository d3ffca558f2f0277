"""The content store: blobs by digest under root/blobs/sha256/<hex>.

A blob is written to a private temp file under root/ingest, verified, then renamed into place with os.replace,
so a blob that is present is always complete, and several processes may write the same blob at once.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


class DigestMismatch(ValueError):
    """Content did not hash to the digest it was expected to have."""


def check_digest(digest: str) -> str:
    """Return `digest` if it is a well-formed "sha256:<64 hex>" digest, else raise ValueError."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ValueError(f"unsupported or malformed digest {digest!r} (want sha256:<64 hex>)")
    return digest


class BlobWriter(io.BufferedWriter):
    """A streaming blob write (a binary file): hashes what is written; `digest` is set once the `with` ends."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(io.FileIO(tmp, "wb"), buffer_size=1 << 20)
        self.tmp = tmp
        self.sha = hashlib.sha256()
        self.size = 0
        self.digest = ""

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.sha.update(data)
        n = super().write(data)
        self.size += n
        return n


class ContentStore:
    """Blobs addressed by sha256 digest."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.ingest = self.root / "ingest"
        self.ingest.mkdir(exist_ok=True)

    def path(self, digest: str) -> Path:
        """Where the blob `digest` lives (whether or not it is present)."""
        return self.blobs / check_digest(digest).split(":", 1)[1]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        """The blob's bytes; FileNotFoundError if it is not in the store."""
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"blob {digest} is not in the content store {self.root}") from None

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def write(self, data: bytes, expected: str | None = None) -> str:
        """Store `data`; returns its digest. DigestMismatch if `expected` is given and differs."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected is not None and expected != digest:
            raise DigestMismatch(f"content digest {digest} does not match the expected {expected}")
        if not self.has(digest):
            with self.writer(digest) as w:
                w.write(data)
        return digest

    @contextmanager
    def writer(self, expected: str | None = None) -> Iterator[BlobWriter]:
        """Stream a blob in: `with store.writer() as w: w.write(...)`; then `w.digest`, `w.size`.

        On a clean exit the content is fsynced, verified against `expected` (DigestMismatch) and renamed into
        place; on an exception nothing is stored.
        """
        if expected is not None:
            check_digest(expected)
        w = BlobWriter(self.ingest / f"{os.getpid()}-{secrets.token_hex(8)}")
        try:
            yield w
            w.flush()
            os.fsync(w.fileno())
            w.close()
            w.digest = "sha256:" + w.sha.hexdigest()
            if expected is not None and expected != w.digest:
                raise DigestMismatch(f"content digest {w.digest} does not match the expected {expected}")
            os.replace(w.tmp, self.path(w.digest))
        finally:
            if not w.closed:
                w.close()
            w.tmp.unlink(missing_ok=True)
