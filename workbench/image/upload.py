"""Upload a blob to a registry while it is being written (a layer while it is compressed).

As `docker push` does: one POST opens the upload, one PATCH streams the whole blob with chunked transfer
encoding (no Content-Range: the registry appends what arrives), and the closing PUT names the digest, which
the registry checks. A sender thread makes the PATCH, its body fed by the writer `PIECE` bytes at a time with
at most `AHEAD` waiting, so the network works while the layer is compressed and memory stays a few MiB per
layer. One request instead of one per piece: each PATCH cost a round trip and a registry-side commit (a 1 GiB
layer in 4 MiB PATCHes spent about 3 s on them).

Nothing here can fail the export: a registry that refuses the stream, or any error on the way, leaves the
upload `broken` (cancelled at the registry); the push after the export then finds the blob missing and uploads
it from the content store as before. The layer's progress row then ends with the reason ("not streamed: ..."),
with URLs cut to their host and no credentials.
"""

from __future__ import annotations

import io
import queue
import re
import threading
from collections.abc import Callable, Iterator

from workbench.image.push import upload_location, with_query
from workbench.image.registry_client import RegistryClient
from workbench.image.registry_errors import RegistryError, reason

PIECE = 1 << 20
"""Bytes handed to the sender at a time (each goes out as one HTTP chunk)."""
AHEAD = 4
"""Pieces that may wait for the sender."""

_OCTETS = {"Content-Type": "application/octet-stream"}


class _Abandoned(Exception):
    """Raised in the PATCH's body so that the connection breaks instead of ending a partial blob cleanly."""


class StreamingUpload(io.RawIOBase):
    """A write-only stream whose bytes go to the registry in one streamed PATCH; `finish(digest)` completes
    the upload.

    `progress(label, bytes sent, 0)` is told as pieces go out (the size is not known before the end).
    """

    def __init__(self, client: RegistryClient, label: str = "layer",
                 progress: Callable[[str, int, int], None] | None = None) -> None:
        super().__init__()
        self.client, self.label, self.progress = client, label, progress
        self.what = f"pushing {label} while it is compressed"
        self.buf = bytearray()
        self.sent = 0
        self.size = 0  # bytes written to the stream (sent or not)
        self.error: BaseException | None = None
        self.pieces: queue.Queue[bytes | None] = queue.Queue(AHEAD)
        self.location = ""
        self.reported = False  # whether `progress` was told of a piece
        try:
            with client.request("POST", "/blobs/uploads/", self.what, data=b"") as resp:
                self.location = upload_location(client, resp, self.what)
        except (RegistryError, OSError) as e:
            self.error = e
        self.sender = threading.Thread(target=self._send, daemon=True, name=f"upload {label}")
        if self.error is None:
            self.sender.start()

    @property
    def broken(self) -> bool:
        """Whether the upload failed (the blob must then be pushed from the content store)."""
        return self.error is not None

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        n = memoryview(b).nbytes
        self.size += n
        if self.error is not None:
            return n
        self.buf += b
        if len(self.buf) >= PIECE:
            self._hand(bytes(self.buf))
            self.buf.clear()
        return n

    def _hand(self, piece: bytes | None) -> None:
        while self.error is None:
            try:
                self.pieces.put(piece, timeout=0.2)
                return
            except queue.Full:
                continue

    def _body(self) -> Iterator[bytes]:
        while (piece := self.pieces.get()) is not None:
            if self.error is not None:
                raise _Abandoned
            yield piece
            self.sent += len(piece)
            if self.progress:
                self.reported = True
                self.progress(self.label, self.sent, 0)
        if self.error is not None:
            raise _Abandoned

    def _send(self) -> None:
        try:
            with self.client.request("PATCH", self.location, self.what, data=self._body(), headers=_OCTETS) as resp:
                self.location = upload_location(self.client, resp, self.what)
        except BaseException as e:  # kept: the blob is pushed from the content store instead
            if self.error is None:
                self.error = e
            self._drain()

    def _drain(self) -> None:
        """Empty the queue so that a writer blocked on it sees `error` (set before) at once."""
        try:
            while True:
                self.pieces.get_nowait()
        except queue.Empty:
            pass

    def finish(self, digest: str) -> bool:
        """Send the rest and complete the upload as `digest`; whether the registry now has the blob."""
        if self.error is None:
            if self.buf:
                self._hand(bytes(self.buf))
            self.buf.clear()
            self._hand(None)
            self.sender.join()
        if self.error is None:
            try:
                with self.client.request("PUT", with_query(self.location, digest=digest), self.what, data=b"",
                                         headers={**_OCTETS, "Content-Length": "0"}):
                    pass
                if self.progress:
                    self.progress(self.label, self.sent, self.sent)
                return True
            except (RegistryError, OSError) as e:
                self.error = e
        self.abort()
        self._report_fallback()
        return False

    def _report_fallback(self) -> None:
        """End the layer's progress row with why it was not streamed (the push uploads it instead)."""
        if not self.progress:
            return
        if self.reported:  # the row of the pieces sent ends; the reason follows
            self.progress(self.label, self.sent, self.sent)
        size = max(self.size, 1)  # the blob's size: the push sends it instead
        self.progress(f"{self.label} (not streamed: {self.why()})", size, size)

    def why(self) -> str:
        """The failure, short: without the message's "pushing ... from registry R: " and with no credentials."""
        return short_reason(self.error, self.client.ref.registry)

    def abort(self) -> None:
        """Give up: the sender stops (its PATCH broken off) and the registry is told to drop what it got (best
        effort)."""
        if self.error is None:
            self.error = RegistryError("upload abandoned")
        if self.sender.is_alive():
            self._unblock()
            self.sender.join(timeout=30)
        if self.location:
            try:
                with self.client.request("DELETE", self.location, self.what, not_found_ok=True):
                    pass
            except (RegistryError, OSError):
                pass
            self.location = ""
        super().close()

    def _unblock(self) -> None:
        try:
            self.pieces.put_nowait(None)
        except queue.Full:
            pass


_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/\s@]*@)?([^/\s?#]*)[^\s\"')]*")
_CREDENTIALS = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def short_reason(error: BaseException | None, registry: str, limit: int = 120) -> str:
    """A short reason for a failed stream, fit to show: URLs cut to scheme and host (no user info, path or
    signed query), Authorization values dropped."""
    text = (str(error) if isinstance(error, RegistryError) else reason(error)) if error is not None else "unknown"
    marker = f"from registry {registry}: "
    if marker in text:
        text = text.rsplit(marker, 1)[1]
    text = _URL.sub(lambda m: m.group(1) + m.group(2) + "/…", text)
    text = _CREDENTIALS.sub(lambda m: m.group(1) + " …", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
