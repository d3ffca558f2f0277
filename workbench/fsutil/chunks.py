"""A readable stream over chunks another thread produces (a download, a read-ahead)."""

from __future__ import annotations

import io


class ChunkReader(io.RawIOBase):
    """Reads the chunks `_next()` gives, in order: bytes; an exception, raised to the reader at that point of the
    stream (and kept as `failure`); or None, the end. `ended` once either has come."""

    def __init__(self) -> None:
        super().__init__()
        self.rest = memoryview(b"")
        self.ended = False
        self.failure: BaseException | None = None

    def _next(self) -> bytes | BaseException | None:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.rest:
            if self.ended:
                return 0
            item = self._next()
            if item is None:
                self.ended = True
                return 0
            if isinstance(item, BaseException):
                self.ended, self.failure = True, item
                raise item
            self.rest = memoryview(item)
        n = min(len(buffer), len(self.rest))
        buffer[:n] = self.rest[:n]
        self.rest = self.rest[n:]
        return n
