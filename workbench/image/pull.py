"""Pull an image from a registry into the content store.

Every blob is verified against its digest; blobs already in the content store are not fetched again, and a
pull by digest whose blobs are all present does not touch the network. Layers download in parallel, and a
download cut short resumes with a Range request. A pull may also leave the layers to be streamed by whoever
unpacks them (`pull(..., layers=False)`, then `PulledImage.open_layer`): each blob is then stored, hashed and
read by the extractor in one pass, and counts as present only once its digest matched.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

from workbench.fsutil.chunks import ChunkReader
from workbench.http.client import Response, resumable
from workbench.http.errors import BrokenDownload
from workbench.image.blob_sources import record_source
from workbench.image.content import ContentStore, DigestMismatch
from workbench.image.manifests import resolve_platform
from workbench.image.reference import Reference
from workbench.image.registry_client import Progress, RegistryClient
from workbench.image.registry_config import PARALLEL_PULLS
from workbench.image.registry_errors import RegistryError, reason

CHUNK = 1 << 20
RESUME_ATTEMPTS = 3
STREAM_AHEAD = 8  # chunks a streamed layer's download may run ahead of its reader: bounds its memory (8 MiB)


@dataclass
class PulledImage:
    """An image whose manifest, config and layer blobs are all in the content store."""

    reference: Reference
    manifest_digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    config_digest: str
    layers: list[dict[str, Any]]
    client: RegistryClient | None = field(default=None, repr=False, compare=False)

    @contextmanager
    def open_layer(self, store: ContentStore, digest: str, progress: Progress | None = None,
                   stop: threading.Event | None = None) -> Iterator[BinaryIO]:
        """The layer blob `digest` as a stream that is verified by the time the `with` closes cleanly: read from
        `store` if there (CorruptBlob if damaged), else downloaded as it is read and stored once its digest
        matched (see `LayerDownload`; RegistryError when it does not). Once `stop` is set a download waiting
        for bytes gives up (`DownloadStopped`)."""
        if store.has(digest) or self.client is None:
            with store.open(digest) as blob:
                yield cast(BinaryIO, blob)
            return
        desc = next(layer for layer in self.layers if layer.get("digest") == digest)
        with LayerDownload(self.client, desc, store, progress, stop) as stream:
            yield cast(BinaryIO, stream)


class BlobDigestMismatch(RegistryError):
    """A blob from the registry did not hash to its digest; nothing was stored."""


class _Canceled(Exception):
    """The reader of a streamed layer went away: its download stops and stores nothing."""


class DownloadStopped(Exception):
    """A streamed layer's reader was told to stop (another layer failed, or the build was interrupted)."""


class LayerDownload(ChunkReader):
    """A layer blob read from the registry while it is stored, in one pass: each chunk goes to the content
    store's writer (hashed, written to an ingest file) and then to the reader.

    A pump thread downloads up to STREAM_AHEAD chunks ahead, so the network, the hash and the blob file work
    while the reader decompresses and extracts. The end of the stream comes only once the blob's size and
    digest matched and it was renamed into the store. As a context manager: a clean exit reads what the reader
    left (a tar's padding) so the check always runs; an error the reader raised over damaged bytes becomes
    the RegistryError (digest mismatch) that explains it; nothing is stored unless the digest matched.
    """

    def __init__(self, client: RegistryClient, desc: dict[str, Any], store: ContentStore,
                 progress: Progress | None = None, stop: threading.Event | None = None) -> None:
        super().__init__(STREAM_AHEAD)
        self.desc, self.store, self.stop = desc, store, stop
        self.pump = threading.Thread(target=self._pump, args=(client, progress), daemon=True,
                                     name=f"layer {str(desc.get('digest'))[7:19]}")
        self.pump.start()

    def _pump(self, client: RegistryClient, progress: Progress | None) -> None:
        try:
            _fetch_blob(client, self.desc, self.store, progress, sink=self._sink)
            record_source(self.store, [str(self.desc["digest"])], client.ref)
            self._put(None)
        except _Canceled:
            pass
        except BaseException as e:  # handed to the reader, raised there
            self._put(e)

    def _sink(self, chunk: bytes) -> None:
        """A downloaded chunk for the reader; _Canceled (the download stops) once the reader went away."""
        if not self._put(chunk):
            raise _Canceled

    def _next(self) -> bytes | BaseException | None:
        while True:
            try:
                return self.chunks.get(timeout=0.2)
            except queue.Empty:
                if self.stop is not None and self.stop.is_set():
                    raise DownloadStopped("stopped") from None

    def finish(self) -> None:
        """Read the rest of the blob: returns once it is verified and stored (RegistryError if not)."""
        self.rest = memoryview(b"")
        while not self.ended:
            item = self._next()
            self.ended = not isinstance(item, bytes)
            if isinstance(item, BaseException):
                self.failure = item
        if self.failure is not None:
            raise self.failure

    def close(self) -> None:
        if not self.ended:
            self.canceled.set()  # the pump stops at its next chunk; its ingest file goes
        super().close()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        try:
            if kind is None:
                self.finish()
            elif isinstance(error, Exception) and error is not self.failure:
                try:
                    self.finish()
                except BlobDigestMismatch as bad:
                    raise bad from error
                except Exception:  # the reader's own error stands
                    pass
        finally:
            self.close()


def _fetch_blob(client: RegistryClient, desc: dict[str, Any], store: ContentStore, progress: Progress | None,
                sink: Callable[[bytes], None] | None = None) -> None:
    """Download one blob into the store, verifying size and digest (skipped if present, unless `sink` is given:
    then every chunk also goes to `sink` once written, and the blob is fetched even if present).

    A download cut short (connection reset, early end) resumes where it stopped with a Range request, up to
    RESUME_ATTEMPTS times, when the registry answers ranges (206); the digest covers the joined bytes.
    """
    ref, digest = client.ref, str(desc.get("digest", ""))
    if sink is None and store.has(digest):
        return
    size = int(desc.get("size", -1))
    what = f"blob {digest} of {ref} from registry {ref.registry}"
    path, doing = f"/blobs/{digest}", f"pulling blob {digest}"
    if progress:
        progress(digest, 0, max(size, 0))

    def reopen(offset: int) -> Response:
        return client.request("GET", path, doing, headers={"Range": f"bytes={offset}-"})

    body = resumable(client.open(path, doing), reopen, size=size, attempts=RESUME_ATTEMPTS, chunk=CHUNK)
    try:
        with store.writer(digest) as w:
            for chunk in body:
                w.write(chunk)
                if 0 <= size < w.size:
                    raise RegistryError(f"{what}: more than the {size} bytes its descriptor says")
                if progress:
                    progress(digest, w.size, max(size, 0))
                if sink is not None:
                    sink(chunk)
            if 0 <= size != w.size:
                raise RegistryError(f"{what}: got {w.size} bytes, its descriptor says {size}")
    except BrokenDownload as e:
        if e.unresumable:
            raise RegistryError(f"{what}: download broke off ({reason(e)}) and the registry "
                                "cannot resume it (no range support)") from None
        raise RegistryError(f"{what}: download failed after {e.resumptions} resumptions: {reason(e)}") from None
    except DigestMismatch as e:
        raise BlobDigestMismatch(f"{what} failed verification (digest mismatch): {e}; nothing was stored") from None
    except OSError as e:
        raise RegistryError(f"{what}: download failed: {reason(e)}") from None
    finally:
        body.close()


def fetch_blob(client: RegistryClient, digest: str, size: int, store: ContentStore,
               progress: Progress | None = None) -> None:
    """Download the blob `digest` (`size` bytes, -1 if unknown) into `store`, verified, resumed if cut short."""
    _fetch_blob(client, {"digest": digest, "size": size}, store, progress)


def pull(ref: Reference, store: ContentStore, platform: str = "linux/amd64",
         progress: Progress | None = None, layers: bool = True) -> PulledImage:
    """Resolve `ref` for `platform` and fetch its manifest, config and (unless `layers` is False: see
    `PulledImage.open_layer`) layers into `store`.

    progress(blob digest, bytes so far, total) is called while blobs download; present blobs are skipped.
    """
    if ref.digest is not None:
        try:
            store.path(ref.digest)
        except ValueError as e:
            raise RegistryError(f"{ref}: {e}") from None
    client = RegistryClient(ref)
    digest, manifest, _raw = resolve_platform(client, platform, store)
    config_desc = manifest["config"]
    descs = [dict(layer) for layer in manifest.get("layers") or []]
    for desc in [config_desc, *descs]:
        try:
            store.path(str(desc.get("digest")))
        except ValueError as e:
            raise RegistryError(f"{ref}: manifest {digest}: {e}") from None
    _fetch_blob(client, config_desc, store, None)
    missing = [layer for layer in descs if layers and not store.has(str(layer["digest"]))]
    if len(missing) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(PARALLEL_PULLS, len(missing)), thread_name_prefix="pull") as pool:
            for future in [pool.submit(_fetch_blob, client, layer, store, progress) for layer in missing]:
                future.result()  # the first failure, in layer order
    else:
        for layer in missing:
            _fetch_blob(client, layer, store, progress)
    record_source(store, [str(d["digest"]) for d in missing], ref)
    config_digest = str(config_desc["digest"])
    try:
        config = json.loads(store.read(config_digest))
    except ValueError:
        raise RegistryError(f"{ref}: image config {config_digest} is not JSON") from None
    if not isinstance(config, dict):
        raise RegistryError(f"{ref}: image config {config_digest} is not a JSON object")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(descs):
        raise RegistryError(f"{ref}: image config lists {len(diff_ids)} layer diff_ids, "
                            f"the manifest {len(descs)} layers")
    return PulledImage(ref, digest, manifest, config, config_digest, descs, client)
