"""containerd.services.content.v1.Content over the session: `type=local` caches on a BuildKit daemon.

As buildctl does, the client serves each `--cache-to type=local,dest=DIR` / `--cache-from type=local,src=DIR`
directory as a content store named "local:DIR" (the call's `buildkit-attachable-store-id` header; DIR is
the `dest`/`src` attribute the daemon was sent). DIR is an OCI layout: blobs/sha256/<hex>, oci-layout and
index.json, whose entry tagged TAG ("latest") names the cache's index. The daemon calls Info and Read to
import, Write (STAT, WRITE…, COMMIT) to export; after the build the client tags the exported index
(ExporterResponse["cache.manifest"]) in index.json.

The daemon is not trusted with our files: it names blobs by digest only (sha256:<64 hex>), never a path; the
directories below DIR are reached without following a symlink; a blob is written to a locked temp file
beside its final name and renamed there only once its size and digest are checked; import stores are read-only.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.fsutil.destination import atomic_file, create_temp, reason, remove_stale_temps, write_all
from workbench.fsutil.paths import open_beneath
from workbench.image.content import check_digest
from workbench.remote.session.h2server import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    UNIMPLEMENTED,
    Call,
    GrpcError,
    Handler,
    unary,
)
from workbench.remote.session.proto import content_pb2 as pb

PREFIX = "/containerd.services.content.v1.Content/"
STORE_HEADER = "buildkit-attachable-store-id"
STORE_PREFIX = "local:"  # BuildKit's cache/remotecache/local contentStoreIDPrefix
MANIFEST_KEY = "cache.manifest"  # the exporter response holding the exported cache's index descriptor
REF_NAME = "org.opencontainers.image.ref.name"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
READ_CHUNK = 1 << 20  # bytes per ReadContentResponse (the daemon takes messages of up to 16 MiB)
ALREADY_EXISTS = 6
PERMISSION_DENIED = 7
FAILED_PRECONDITION = 9
OUT_OF_RANGE = 11


class CacheStoreError(Exception):
    """A local cache directory that cannot be used; the message names it and says why."""


class LocalCacheStore:
    """The OCI layout at `directory`, served to the daemon; `writable` for a `--cache-to` destination."""

    def __init__(self, directory: Path, writable: bool) -> None:
        self.dir = Path(directory)
        self.writable = writable

    @property
    def store_id(self) -> str:
        return STORE_PREFIX + str(self.dir)

    # -- before the build ----------------------------------------------------------------------------------

    def create(self, what: str) -> None:
        """Make DIR (a `--cache-to` destination), as buildctl does; CacheStoreError naming `what` if it cannot be."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheStoreError(f"{what}: cannot create {self.dir}: {reason(e)}") from None
        if not self.dir.is_dir():
            raise CacheStoreError(f"{what}: {self.dir} is not a directory")

    def tagged(self, tag: str) -> str | None:
        """The digest index.json tags `tag` (its last entry so tagged), None when DIR, index.json or the tag is
        missing. CacheStoreError for
        an index.json that is not an OCI index."""
        try:
            with open(self.dir / "index.json", "rb") as f:
                index = json.loads(f.read(16 << 20))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise CacheStoreError(f"{self.dir / 'index.json'}: {reason(e) if isinstance(e, OSError) else e}") \
                from None
        manifests = index.get("manifests") if isinstance(index, dict) else None
        for m in reversed(manifests) if isinstance(manifests, list) else []:  # the last tagging wins
            annotations = m.get("annotations") if isinstance(m, dict) else None
            if isinstance(annotations, dict) and tag in (annotations.get("io.containerd.image.name"),
                                                         annotations.get(REF_NAME)):
                try:
                    return check_digest(m.get("digest"))
                except ValueError as e:
                    raise CacheStoreError(f"{self.dir / 'index.json'}: tag {tag}: {e}") from None
        return None

    # -- blobs ---------------------------------------------------------------------------------------------

    @contextmanager
    def _blobs(self, create: bool) -> Iterator[int]:
        """An fd on DIR/blobs/sha256, reached without following a symlink below DIR (made when `create`)."""
        top = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = open_beneath(top, ["blobs", "sha256"], 0o755 if create else None)
        finally:
            os.close(top)
        try:
            yield fd
        finally:
            os.close(fd)

    def size(self, digest: str) -> int:
        """The size of blob `digest`; FileNotFoundError when it is not in DIR as a regular file."""
        hex_ = check_digest(digest).split(":", 1)[1]
        with self._blobs(create=False) as fd:
            st = os.stat(hex_, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(errno.ENOENT, "not a regular file", digest)
        return st.st_size

    def open_blob(self, digest: str) -> int:
        """A read-only fd on blob `digest` (a regular file, not a symlink)."""
        hex_ = check_digest(digest).split(":", 1)[1]
        with self._blobs(create=False) as fd:
            blob = os.open(hex_, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
        if not stat.S_ISREG(os.fstat(blob).st_mode):
            os.close(blob)
            raise FileNotFoundError(errno.ENOENT, "not a regular file", digest)
        return blob

    # -- after the build -----------------------------------------------------------------------------------

    def tag(self, descriptor: dict[str, Any], tag: str) -> None:
        """Name the exported cache index `descriptor` `tag` in index.json (other tags kept), written atomically,
        under a lock on DIR against another build doing the same; CacheStoreError if it cannot be."""
        entry = self._entry(descriptor, tag)
        what = f"--cache-to type=local,dest={self.dir}"
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                with open(self.dir / "index.json", "rb") as f:
                    index = json.loads(f.read(16 << 20))
            except (OSError, ValueError):
                index = {}
            if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
                index = {}
            kept = [m for m in index.get("manifests", [])
                    if not (isinstance(m, dict) and (m.get("annotations") or {}).get(REF_NAME) == tag
                            and "io.containerd.image.name" not in (m.get("annotations") or {}))]
            index = {**index, "schemaVersion": index.get("schemaVersion") or 2,
                     "mediaType": index.get("mediaType") or INDEX_MEDIA_TYPE, "manifests": [*kept, entry]}
            with atomic_file(self.dir / "oci-layout", what) as f:
                f.write(b'{"imageLayoutVersion":"1.0.0"}')
            with atomic_file(self.dir / "index.json", what) as f:
                f.write(json.dumps(index, separators=(",", ":")).encode())
        except OSError as e:
            raise CacheStoreError(f"{what}: cannot write index.json: {reason(e)}") from None
        finally:
            os.close(fd)  # releases the lock


    def _entry(self, descriptor: dict[str, Any], tag: str) -> dict[str, Any]:
        """index.json's entry for the daemon's `descriptor`, from checked fields only: an index media type, the
        digest of a blob in DIR, that blob's size, and our tag as the one annotation (the daemon's own, such as
        io.containerd.image.name, would pin the tag). CacheStoreError (one line) for a malformed one."""
        from workbench.image.manifests import INDEX_TYPES

        what = f"--cache-to type=local,dest={self.dir}: the daemon's cache index"
        media = descriptor.get("mediaType", INDEX_MEDIA_TYPE)
        if media not in INDEX_TYPES:
            raise CacheStoreError(f"{what}: media type {str(media)[:100]!r} is not an image index")
        try:
            digest = check_digest(descriptor.get("digest", ""))
        except ValueError as e:
            raise CacheStoreError(f"{what}: {str(e)[:200]}") from None
        try:
            size = self.size(digest)
        except OSError:
            raise CacheStoreError(f"{what} is {digest}, which it did not write there") from None
        said = descriptor.get("size", size)
        if type(said) is not int or said != size:
            raise CacheStoreError(f"{what}: size {str(said)[:40]!r} is not the {size} bytes of {digest} it wrote")
        return {"mediaType": media, "digest": digest, "size": size, "annotations": {REF_NAME: tag}}


def tag_exported(stores: Mapping[str, LocalCacheStore], tags: Mapping[str, str], response: Mapping[str, str]
                 ) -> None:
    """After the build, as buildctl: tag the exported cache index in each `--cache-to` store (`tags`: store id
    → tag). CacheStoreError when the daemon's answer lacks it or index.json cannot be written."""
    if not tags:
        return
    text = response.get(MANIFEST_KEY, "")
    try:
        descriptor = json.loads(text) if text else None
    except ValueError:
        descriptor = None
    if not isinstance(descriptor, dict):
        raise CacheStoreError(f"--cache-to type=local: the daemon did not say which cache index it exported "
                              f"({MANIFEST_KEY} is {'missing' if not text else 'not a descriptor'})")
    for store_id, tag in tags.items():
        stores[store_id].tag(descriptor, tag)


# -- the gRPC service ----------------------------------------------------------------------------------------

def content_handlers(stores: Mapping[str, LocalCacheStore]) -> dict[str, Handler]:
    """The Content methods BuildKit's session content store calls, over `stores` (store id → store)."""

    def choose(call: Call, write: bool = False) -> LocalCacheStore:
        store_id = call.first(STORE_HEADER)
        store = stores.get(store_id)
        if store is None:
            raise GrpcError(NOT_FOUND, f"unknown store {store_id[:200]!r}")
        if write and not store.writable:
            raise GrpcError(PERMISSION_DENIED, f"store {store.store_id} is a --cache-from source: read-only")
        return store

    def digest_of(text: str) -> str:
        try:
            return check_digest(text)
        except ValueError as e:
            raise GrpcError(INVALID_ARGUMENT, str(e)) from None

    def info(request: bytes, call: Call) -> bytes:
        store = choose(call)
        digest = digest_of(pb.InfoRequest.FromString(request).digest)
        try:
            size = store.size(digest)
        except OSError:
            raise GrpcError(NOT_FOUND, f"content digest {digest}: not found") from None
        return pb.InfoResponse(info=pb.Info(digest=digest, size=size)).SerializeToString()

    def read(call: Call) -> None:
        store = choose(call)
        raw = call.recv()
        if raw is None:
            raise GrpcError(INVALID_ARGUMENT, "no request message")
        req = pb.ReadContentRequest.FromString(raw)
        digest = digest_of(req.digest)
        try:
            fd = store.open_blob(digest)
        except OSError:
            raise GrpcError(NOT_FOUND, f"content digest {digest}: not found") from None
        with os.fdopen(fd, "rb") as f:
            total = os.fstat(f.fileno()).st_size
            offset = max(req.offset, 0)
            if offset > total:
                raise GrpcError(OUT_OF_RANGE, f"read past object length {total} bytes")
            end = total if req.size <= 0 or offset + req.size > total else offset + req.size
            f.seek(offset)
            while offset < end:
                data = f.read(min(READ_CHUNK, end - offset))
                if not data:
                    break  # shrunk under us: the daemon sees a short read
                call.send(pb.ReadContentResponse(offset=offset, data=data).SerializeToString())
                offset += len(data)

    def status(request: bytes, call: Call) -> bytes:
        choose(call)
        ref = pb.StatusRequest.FromString(request).ref
        raise GrpcError(NOT_FOUND, f"no write in progress for ref {ref[:200]!r}")  # each Write stream is its own

    def abort(request: bytes, call: Call) -> bytes:
        choose(call)
        return b""  # google.protobuf.Empty: a Write stream that ends uncommitted leaves nothing behind

    def write(call: Call) -> None:
        _Ingest(choose(call, write=True), call).run()

    def unimplemented(call: Call) -> None:
        raise GrpcError(UNIMPLEMENTED, f"{call.path} is not served by this client")

    return {
        PREFIX + "Info": unary(info),
        PREFIX + "Read": read,
        PREFIX + "Status": unary(status),
        PREFIX + "Write": write,
        PREFIX + "Abort": unary(abort),
        PREFIX + "Update": unimplemented,
        PREFIX + "List": unimplemented,
        PREFIX + "Delete": unimplemented,
        PREFIX + "ListStatuses": unimplemented,
    }


class _Ingest:
    """One Write stream (containerd's contentserver.Write): STAT, WRITE at the current offset, COMMIT with the
    size and digest checked; the blob appears under its digest only at a good COMMIT."""

    def __init__(self, store: LocalCacheStore, call: Call) -> None:
        self.store = store
        self.call = call
        self.ref = ""
        self.total = 0
        self.expected = ""
        self.offset = 0
        self.hash = hashlib.sha256()
        self.temp: tuple[int, int, str] | None = None  # (dir fd, file fd, name)

    def run(self) -> None:
        try:
            first = True
            while (raw := self.call.recv()) is not None:
                req = pb.WriteContentRequest.FromString(raw)
                if first:
                    if not req.ref:
                        raise GrpcError(INVALID_ARGUMENT, "first message must have a reference")
                    self.ref = req.ref
                    first = False
                if self._step(req):
                    return
        finally:
            self._discard()

    def _step(self, req: Any) -> bool:
        """Answers one message; True after a COMMIT (the stream is done)."""
        if req.expected:
            self.expected = self._digest(req.expected)
            if self._exists(self.expected):
                raise GrpcError(ALREADY_EXISTS, f"blob with expected digest {self.expected} exists")
        if req.total > 0:
            self.total = req.total
        answer = pb.WriteContentResponse(action=req.action, offset=self.offset, total=self.total)
        if req.action in (pb.WRITE, pb.COMMIT):
            if req.offset > 0 and req.offset != self.offset:
                raise GrpcError(OUT_OF_RANGE, f"write @{req.offset} must occur at current offset {self.offset}")
            if req.offset == 0 and self.offset > 0:
                self._restart()
            if req.data:
                self._write(req.data)
            answer.offset = self.offset
            if req.action == pb.COMMIT:
                self._commit()
        elif req.action != pb.STAT:
            raise GrpcError(INVALID_ARGUMENT, f"unknown write action {req.action}")
        answer.digest = "sha256:" + self.hash.hexdigest()
        self.call.send(answer.SerializeToString())
        return req.action == pb.COMMIT

    @staticmethod
    def _digest(text: str) -> str:
        try:
            return check_digest(text)
        except ValueError as e:
            raise GrpcError(INVALID_ARGUMENT, str(e)) from None

    def _exists(self, digest: str) -> bool:
        try:
            self.store.size(digest)
        except OSError:
            return False
        return True

    def _open(self) -> tuple[int, int, str]:
        if self.temp is None:
            try:
                with self.store._blobs(create=True) as fd:
                    dir_fd = os.dup(fd)
                remove_stale_temps(dir_fd)
                file_fd, name = create_temp(dir_fd, "ingest")
            except OSError as e:
                raise GrpcError(PERMISSION_DENIED if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
                                else FAILED_PRECONDITION, f"{self.store.dir}: {reason(e)}") from None
            self.temp = (dir_fd, file_fd, name)
        return self.temp

    def _write(self, data: bytes) -> None:
        _, fd, _ = self._open()
        try:
            write_all(fd, data)
        except OSError as e:
            raise GrpcError(FAILED_PRECONDITION, f"{self.store.dir}: {reason(e)}") from None
        self.hash.update(data)
        self.offset += len(data)

    def _restart(self) -> None:
        if self.temp is not None:
            os.ftruncate(self.temp[1], 0)
            os.lseek(self.temp[1], 0, os.SEEK_SET)
        self.hash = hashlib.sha256()
        self.offset = 0

    def _commit(self) -> None:
        actual = "sha256:" + self.hash.hexdigest()
        if self.total and self.offset != self.total:
            raise GrpcError(FAILED_PRECONDITION, f"unexpected commit size {self.offset}, expected {self.total}")
        if self.expected and actual != self.expected:
            raise GrpcError(FAILED_PRECONDITION, f"unexpected commit digest {actual}, expected {self.expected}")
        dir_fd, fd, name = self._open()
        try:
            os.fsync(fd)
            os.rename(name, actual.split(":", 1)[1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as e:
            raise GrpcError(FAILED_PRECONDITION, f"{self.store.dir}: {reason(e)}") from None
        os.close(fd)
        os.close(dir_fd)
        self.temp = None

    def _discard(self) -> None:
        if self.temp is None:
            return
        dir_fd, fd, name = self.temp
        self.temp = None
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass
        os.close(fd)
        os.close(dir_fd)
