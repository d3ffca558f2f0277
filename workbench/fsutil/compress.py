"""Streaming layer compressors that use every core, with output independent of the thread count.

gzip is written as independent members, as bgzip and eStargz write it and as RFC 1952 allows (every gzip
reader, Go's and containerd's included, reads the members as one stream): the input is cut into fixed
`CHUNK`s and each is deflated whole by libdeflate in a thread (it releases the GIL) into a member of its own.
No piece depends on another, so the bytes depend only on the input and the level. zstd is libzstd's own
multi-threaded mode with a fixed job size (`ZSTD_JOB`), whose frames then do not depend on the number of
workers (as long as there is at least one): each job is compressed with the level's parameters for a
job-sized input, so memory stays bounded at every level (the level's own window at level 22 is 128 MiB, its
tables over 600 MiB a worker), and the workers are as many as `ZSTD_MEMORY` holds.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, BinaryIO, cast

from workbench.fsutil.deflate import deflate_whole, zlib

CHUNK = 1 << 20
"""Input bytes per gzip member: fixed, so the output never depends on the thread count."""

GZIP_DEFAULT_LEVEL = 6
"""BuildKit's: Go's `gzip.NewWriter`, DefaultCompression, which compress/flate runs as level 6."""
ZSTD_DEFAULT_LEVEL = 3
"""BuildKit's: klauspost/compress `SpeedDefault`, zstd's level 3."""
LEVELS = {"gzip": range(0, 10), "zstd": range(1, 23)}

ZSTD_JOB = 4 << 20
"""Input bytes per zstd job: fixed, so the frames never depend on the thread count (libzstd's default grows
with the level's window, to 512 MiB at level 22, and each job in flight holds its input and output)."""
ZSTD_MEMORY = 48 << 20
"""About what one zstd writer may hold: its workers are as many as fit (at least one), each with its
compression context and a job's input and output (the bytes are the same for any number of workers)."""


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_PROBES = 8
_PROBE = 4096
_STORED_ABOVE = 0.97


def incompressible(data: bytes | bytearray) -> bool:
    """Whether every one of `_PROBES` evenly spaced 4 KiB samples of `data` deflates (fastest level) to more
    than 97 % of its size: random or already compressed bytes, which a higher level only spends time on.
    One compressible sample is enough to say no, so a piece that mixes kinds is deflated as usual."""
    if len(data) < _PROBES * _PROBE * 4:
        return False
    step = (len(data) - _PROBE) // (_PROBES - 1)
    for i in range(_PROBES):
        sample = data[i * step: i * step + _PROBE]
        c = zlib.compressobj(1, zlib.DEFLATED, -15)
        if len(c.compress(sample)) + len(c.flush()) <= _STORED_ABOVE * _PROBE:
            return False
    return True


def _member(data: bytes | bytearray, level: int) -> list[bytes | bytearray]:
    """`data` as one gzip member (header, deflate, trailer). Stored as is (deflate's level 0) when it is
    `incompressible`, as zstd and klauspost/compress skip what does not compress: the ratio is the same, the
    time a fraction. The header's XFL is the asked level's in every member."""
    body = deflate_whole(data, 0 if level > 0 and incompressible(data) else level)
    return [_header(level), body, struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)]


def _header(level: int) -> bytes:
    xfl = 2 if level == 9 else 4 if level == 1 else 0  # as gzip and Go write it
    return b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + bytes((xfl, 255))  # mtime 0, OS unknown as Go


class ParallelGzipWriter(io.RawIOBase):
    """A write-only gzip stream onto `out` (left open by `close`), one member per `CHUNK` of input, deflated by
    `threads` threads.

    At most `threads + 2` pieces are in flight (a MiB of input and its member each), so memory is bounded by
    the thread count, not the input size.
    """

    def __init__(self, out: IO[bytes], level: int = GZIP_DEFAULT_LEVEL, threads: int | None = None) -> None:
        super().__init__()
        self.out, self.level = out, level
        self.threads = max(1, threads or default_threads())
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="gzip")
        self.pending: deque[Future[list[bytes | bytearray]]] = deque()
        self.buf = bytearray()
        self.members = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        n = memoryview(b).nbytes
        self.buf += b
        while len(self.buf) >= CHUNK:
            self._submit(self.buf[:CHUNK])  # a copy of its own, not made into bytes again
            del self.buf[:CHUNK]
        return n

    def _submit(self, data: bytes | bytearray) -> None:
        self.pending.append(self.pool.submit(_member, data, self.level))
        self.members += 1
        while len(self.pending) > self.threads + 2:
            self._drain_one()

    def _drain_one(self) -> None:
        for part in self.pending.popleft().result():
            self.out.write(part)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.buf or not self.members:  # an empty input is still one (empty) member
                self._submit(bytes(self.buf))
            while self.pending:
                self._drain_one()
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop without finishing the stream (the caller failed); the threads are released."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()
        super().close()


def open_compressor(kind: str, out: IO[bytes], level: int | None = None,
                    threads: int | None = None) -> IO[bytes] | None:
    """A writer compressing into `out` as `kind` ("gzip", "zstd"; None for "none"/"uncompressed"), at `level`
    (None: BuildKit's default). Its `close()` ends the stream and leaves `out` open."""
    if kind in ("none", "", "uncompressed"):
        return None
    if kind not in LEVELS:
        raise ValueError(f"unknown layer compression {kind!r}")
    if level is not None and level not in LEVELS[kind]:
        r = LEVELS[kind]
        raise ValueError(f"{kind} compression level {level} is out of range ({r.start}-{r.stop - 1})")
    if kind == "gzip":
        return cast(IO[bytes], ParallelGzipWriter(out, GZIP_DEFAULT_LEVEL if level is None else level, threads))
    return cast(IO[bytes], ZstdWriter(out, ZSTD_DEFAULT_LEVEL if level is None else level, threads))


def zstd_parameters(level: int, threads: int | None = None) -> object:
    """The `zstandard.ZstdCompressionParameters` of a layer at `level`: the level's parameters for one
    `ZSTD_JOB`-sized input (libzstd's own choice: the same as the level's up to level 18, a 4 MiB window and
    tables to match above), in multi-threaded mode with `ZSTD_JOB` jobs, on at most `threads` workers (≥ 1,
    fewer where `ZSTD_MEMORY` would not hold them)."""
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(level, source_size=ZSTD_JOB)
    per_worker = params.estimated_compression_context_size() + 3 * ZSTD_JOB  # context, job in (+ overlap), out
    workers = max(1, min(threads or default_threads(), ZSTD_MEMORY // per_worker))
    return zstandard.ZstdCompressionParameters.from_level(level, source_size=ZSTD_JOB, threads=workers,
                                                          job_size=ZSTD_JOB)


class ZstdWriter(io.RawIOBase):
    """A write-only zstd stream onto `out` (left open by `close`) in libzstd's multi-threaded mode, whose bytes
    do not depend on the thread count.

    libzstd hands a full job to a worker as soon as a slot is free; when the input ends exactly on a job
    boundary, whether that last full job went out before the end (then an empty last block follows it) or
    with it (then it is the last block) depends on the workers' timing. Flushing first in that case sends it
    out before the end every time.
    """

    def __init__(self, out: IO[bytes], level: int = ZSTD_DEFAULT_LEVEL, threads: int | None = None) -> None:
        import zstandard

        super().__init__()
        params = cast(zstandard.ZstdCompressionParameters, zstd_parameters(level, threads))
        self.writer = zstandard.ZstdCompressor(compression_params=params).stream_writer(out, closefd=False)
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        n = memoryview(b).nbytes
        if n:
            self.writer.write(b)
            self.size += n
        return n

    def close(self) -> None:
        if self.closed:
            return
        try:
            import zstandard

            if self.size and self.size % ZSTD_JOB == 0:
                self.writer.flush(zstandard.FLUSH_BLOCK)
            self.writer.close()
        finally:
            super().close()


class HashingWriter(io.RawIOBase):
    """Pass-through writer that hashes (unless `digest=False`) and counts what goes through it."""

    def __init__(self, out: IO[bytes] | None, digest: bool = True) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0
        self.digest = digest

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.digest:
            self.sha.update(b)
        n = memoryview(b).nbytes
        self.size += n
        if self.out is not None:
            self.out.write(b)
        return n


def write_compressed(fill: Callable[[IO[bytes]], None], out: BinaryIO, compress: str = "gzip",
                     compresslevel: int | None = None, threads: int | None = None,
                     digest_out: bool = True) -> tuple[str, str, int]:
    """Stream the bytes `fill` writes (a layer tar) through their digest (the diff ID) and the compressor
    into `out`, in one pass. Returns ("sha256:" diff ID, "sha256:" digest of the bytes written, their size);
    the digest is "" with `digest_out=False`, for an `out` that hashes what it is given itself."""
    blob = HashingWriter(out, digest_out)
    compressor = open_compressor(compress, cast(IO[bytes], blob), compresslevel, threads)
    raw = HashingWriter(compressor if compressor is not None else cast(IO[bytes], blob))
    try:
        fill(cast(IO[bytes], raw))
    except BaseException:
        if isinstance(compressor, ParallelGzipWriter):
            compressor.abort()
        raise
    if compressor is not None:
        compressor.close()  # writes the gzip trailer / zstd frame end; `out` stays open
    return "sha256:" + raw.sha.hexdigest(), "sha256:" + blob.sha.hexdigest() if digest_out else "", blob.size
