"""The content store: blobs by digest under root/blobs/sha256/<hex>.

A blob is written to a private temp file under root/ingest, verified, then renamed into place with os.replace,
so a blob that is present is always complete, and several processes may write the same blob at once.
Reads verify too, as the bytes go by (`read`, `open`): a blob that no longer hashes to its name (disk fault,
a hand edit) is removed from the store and reported as CorruptBlob, naming the blob, the image when the
caller knows it, and how to get a good copy again. A note under root/corrupt keeps the finding (later reads
of the missing blob say it was corrupt, not just absent) until a good copy is stored again.
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


class CorruptBlob(DigestMismatch):
    """A blob of the content store does not hash to its digest; it has been removed from the store.

    `image` (set by a caller that knows it, see `for_image`) is the image reference the blob belongs to.
    """

    def __init__(self, digest: str, actual: str, store: Path, image: str = "") -> None:
        super().__init__(digest)
        self.digest, self.actual, self.store, self.image = digest, actual, store, image

    def for_image(self, image: str) -> CorruptBlob:
        """This error, naming `image` (unless it already names one)."""
        self.image = self.image or image
        return self

    def __str__(self) -> str:
        if self.image:
            what = f"blob {self.digest} of image {self.image}"
            fix = (f"pull or rebuild the image (`workbench image pull {self.image}`), or drop it "
                   f"(`workbench image rm {self.image}`, then `workbench prune`)")
        else:
            what, fix = f"blob {self.digest}", "pull or rebuild its image (`workbench image pull REF`)"
        return (f"{what} is corrupt in the local content store {self.store} (it hashes to {self.actual}) and was "
                f"removed: {fix}")


def check_digest(digest: str) -> str:
    """Return `digest` if it is a well-formed "sha256:<64 hex>" digest, else raise ValueError."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ValueError(f"unsupported or malformed digest {digest!r} (want sha256:<64 hex>)")
    return digest


def _private(path: str, flags: int) -> int:
    """An `open` opener: files of the store are the root user's alone (0600)."""
    return os.open(path, flags | os.O_CLOEXEC, 0o600)


class BlobWriter(io.BufferedWriter):
    """A streaming blob write (a binary file): hashes what is written; `digest` is set once the `with` ends."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(io.FileIO(tmp, "wb", opener=_private), buffer_size=1 << 20)
        self.tmp = tmp
        self.sha = hashlib.sha256()
        self.size = 0
        self.digest = ""

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.sha.update(data)
        n = super().write(data)
        self.size += n
        return n


class BlobReader(io.RawIOBase):
    """A blob open for reading that hashes the bytes as they are read.

    Once the last byte has been read the digest is checked (CorruptBlob, and the blob leaves the store). Used
    as a context manager, the exit reads whatever the consumer left (a tar's padding; the rest of a layer a
    decompressor gave up on) so the check always runs, and an error the consumer raised over damaged data
    becomes the CorruptBlob that explains it.
    """

    def __init__(self, fd: int, digest: str, store: ContentStore) -> None:
        super().__init__()
        self.fd, self.digest, self.store = fd, digest, store
        self.size = os.fstat(fd).st_size
        self.sha = hashlib.sha256()
        self.pos = 0
        self.verified = False

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = os.readv(self.fd, [buffer])
        self.sha.update(memoryview(buffer)[:n])
        self.pos += n
        if n == 0 or self.pos >= self.size:
            self._check()
        return n

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(min(max(self.size - self.pos, 1 << 16), 1 << 24)):
            chunks.append(chunk)
        return b"".join(chunks)

    def _check(self) -> None:
        if self.verified:
            return
        actual = "sha256:" + self.sha.hexdigest()
        if actual != self.digest:
            self.store.discard_corrupt(self.digest, actual, self.fd)
            raise CorruptBlob(self.digest, actual, self.store.root)
        self.verified = True

    def finish(self) -> None:
        """Read the rest of the blob and check its digest (CorruptBlob)."""
        buf = bytearray(1 << 20)
        while not self.verified and self.readinto(buf):
            pass
        self._check()

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        try:
            if kind is None or (isinstance(error, Exception) and not isinstance(error, CorruptBlob)):
                try:
                    self.finish()
                except CorruptBlob as corrupt:
                    raise corrupt from error
                except OSError:
                    if kind is None:
                        raise
        finally:
            self.close()


class ContentStore:
    """Blobs addressed by sha256 digest."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.ingest = self.root / "ingest"
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in (self.blobs.parent, self.blobs, self.ingest):
            d.mkdir(mode=0o700, exist_ok=True)
        self._written: dict[str, tuple[int, int, int, int]] = {}  # digest → (dev, inode, size, mtime) as written

    def path(self, digest: str) -> Path:
        """Where the blob `digest` lives (whether or not it is present)."""
        return self.blobs / check_digest(digest).split(":", 1)[1]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        """The blob's bytes, verified; FileNotFoundError if it is not in the store, CorruptBlob if damaged."""
        with self.open(digest) as f:
            return f.read()

    def open(self, digest: str) -> BlobReader:
        """A reader of the blob that verifies its digest as the bytes are read (see BlobReader);
        FileNotFoundError if it is not in the store."""
        path = self.path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            if (corrupt := self.corrupt(digest)) is not None:
                raise corrupt from None
            raise FileNotFoundError(f"blob {digest} is not in the content store {self.root}") from None
        return BlobReader(fd, digest, self)

    def written_here(self, digest: str, fd: int) -> bool:
        """Whether `fd`, open on the blob `digest`, is the very file this store object hashed as it wrote it,
        unchanged since (inode, size, modification time): its bytes need not be hashed again to be trusted."""
        st = os.fstat(fd)
        return self._written.get(digest) == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def corrupt(self, digest: str) -> CorruptBlob | None:
        """The error for a blob that was found corrupt and removed, while no good copy is stored; else None."""
        try:
            actual = self._note(digest).read_text().strip()
        except OSError:
            return None
        return CorruptBlob(digest, actual, self.root) if not self.has(digest) else None

    def discard_corrupt(self, digest: str, actual: str, fd: int) -> None:
        """Remove the blob file open as `fd` (it hashes to `actual`), unless a good copy has replaced it since,
        and note the finding."""
        path = self.path(digest)
        try:
            here, mine = os.stat(path, follow_symlinks=False), os.fstat(fd)
            if (here.st_dev, here.st_ino) != (mine.st_dev, mine.st_ino):
                return
            note = self._note(digest)
            note.parent.mkdir(mode=0o700, exist_ok=True)
            with open(note, "w", opener=_private) as f:
                f.write(actual + "\n")
            path.unlink()
        except OSError:
            pass  # the error is raised all the same; the note only makes it outlive this read

    def _note(self, digest: str) -> Path:
        return self.root / "corrupt" / check_digest(digest).split(":", 1)[1]

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
            st = os.fstat(w.fileno())
            w.close()
            w.digest = "sha256:" + w.sha.hexdigest()
            if expected is not None and expected != w.digest:
                raise DigestMismatch(f"content digest {w.digest} does not match the expected {expected}")
            os.replace(w.tmp, self.path(w.digest))
            self._written[w.digest] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            self._note(w.digest).unlink(missing_ok=True)  # a good copy again
        finally:
            try:
                if not w.closed:
                    w.close()  # flushes: on a full disk that fails again, and the temp file must still go
            except OSError:
                pass
            w.tmp.unlink(missing_ok=True)
