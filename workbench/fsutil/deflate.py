"""The zlib the engine deflates and inflates layers with.

zlib-ng's, where installed (a dependency): at the same levels, same formats and a compression ratio within
about 1 % of zlib's, it deflates about twice as fast and inflates twice as fast; its CRC-32 is three times as
fast. Its deflate output is its own, stable for a given zlib-ng, so a layer's digest never depends on thread
counts but may differ from one written with plain zlib. Both release the GIL on large buffers.
"""

from __future__ import annotations

try:
    from zlib_ng import zlib_ng as zlib
except ImportError:  # pragma: no cover - zlib-ng is a dependency; plain zlib keeps every format working
    import zlib  # type: ignore[no-redef]

import zlib as _stdlib_zlib
from typing import cast

ERRORS: tuple[type[Exception], ...] = (_stdlib_zlib.error, cast("type[Exception]", zlib.error))
"""What a damaged deflate stream raises, from either zlib."""

__all__ = ["ERRORS", "zlib"]
