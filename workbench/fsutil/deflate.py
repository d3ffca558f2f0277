"""The deflate implementations the engine compresses and decompresses layers with.

Compressing: libdeflate (the `deflate` package, a dependency), which deflates whole buffers; at level 6 it is
about 1.6 times as fast as zlib-ng and writes about 1 % less on layer tars (zlib-ng: twice zlib's speed).
Decompressing and CRC-32: zlib-ng's zlib, where installed (a dependency), twice zlib's inflate speed and three
times its CRC-32. Each deflate's output is its own and stable for a given version (both are pinned), so a
layer's digest never depends on thread counts but may differ from one written with plain zlib. All of them
release the GIL on large buffers.
"""

from __future__ import annotations

try:
    from zlib_ng import zlib_ng as zlib
except ImportError:  # pragma: no cover - zlib-ng is a dependency; plain zlib keeps every format working
    import zlib  # type: ignore[no-redef]

import zlib as _stdlib_zlib
from typing import cast

try:
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - a dependency; zlib keeps every format working
    _libdeflate = None  # type: ignore[assignment]

ERRORS: tuple[type[Exception], ...] = (_stdlib_zlib.error, cast("type[Exception]", zlib.error))
"""What a damaged deflate stream raises, from either zlib."""


def deflate_whole(data: bytes | bytearray, level: int) -> bytes | bytearray:
    """`data` as one complete raw deflate stream (its last block final) at zlib's `level` 0-9 (0: stored)."""
    if _libdeflate is not None:
        return cast("bytearray", _libdeflate.deflate_compress(data, level))
    c = zlib.compressobj(level, zlib.DEFLATED, -15)  # pragma: no cover
    return c.compress(data) + c.flush()  # pragma: no cover


__all__ = ["ERRORS", "deflate_whole", "zlib"]
