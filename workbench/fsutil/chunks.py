"""A readable stream over chunks another thread produces (a download, a read-ahead)."""

from __future__ import annotations

import io
import queue
import threading

_PUT_WAIT = 0.1
"""Seconds between looks at `canceled` while the queue is full."""


class ChunkReader(io.RawIOBase):
    """Reads the chunks a producer thread `_put`s, at most `ahead` of the reader, in order: bytes; an exception,
    raised to the reader at that point of the stream (and kept as `failure`); or None, the end. `ended` once
    either has come. Setting `canceled` releases a producer waiting for room (its `_put` returns False)."""

    def __init__(self, ahead: int) -> None:
        super().__init__()
        self.chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(ahead)
        self.canceled = threading.Event()
        self.rest = memoryview(b"")
        self.ended = False
        self.failure: BaseException | None = None

    def _put(self, item: bytes | BaseException | None) -> bool:
        """Queue `item` for the reader; False, having queued nothing, once `canceled` is set."""
        while True:
            try:
                self.chunks.put(item, timeout=_PUT_WAIT)
                return True
            except queue.Full:
                if self.canceled.is_set():
                    return False

    def _next(self) -> bytes | BaseException | None:
        return self.chunks.get()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._fill():
            return 0
        n = min(len(buffer), len(self.rest))
        buffer[:n] = self.rest[:n]
        self.rest = self.rest[n:]
        return n

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes; a whole chunk that fits is handed over as it came, not copied."""
        if size is None or size < 0:
            return self.readall()
        if not size or not self._fill():
            return b""
        rest = self.rest
        if len(rest) <= size and isinstance(rest.obj, bytes) and len(rest) == len(rest.obj):
            self.rest = memoryview(b"")
            return rest.obj
        self.rest = rest[size:]
        return bytes(rest[:size])

    def _fill(self) -> bool:
        """Bytes in `rest`, from the next chunk if it is empty; False at the end."""
        while not self.rest:
            if self.ended:
                return False
            item = self._next()
            if item is None:
                self.ended = True
                return False
            if isinstance(item, BaseException):
                self.ended, self.failure = True, item
                raise item
            self.rest = memoryview(item)
        return True
