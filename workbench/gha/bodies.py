"""Request bodies the emulator stores: streamed to a file piece by piece, never more than the caller allows
(no unbounded buffering in memory, no file grown past an entry's reserved size)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from workbench.gha.params import BadParam

MAX_JSON = 1 << 20
_PIECE = 1 << 20


class TooLarge(Exception):
    """A body over its limit (answered 413)."""


async def read_small(request: web.Request, limit: int) -> bytes:
    """The whole body of a request that must be small (at most `limit` bytes)."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"the request body is over {limit} bytes")
    data = bytearray()
    while piece := await request.content.read(_PIECE):
        data += piece
        if len(data) > limit:
            raise TooLarge(f"the request body is over {limit} bytes")
    return bytes(data)


async def read_json(request: web.Request) -> Any:
    """The JSON body of an API call (at most 1 MiB)."""
    data = await read_small(request, MAX_JSON)
    try:
        return json.loads(data)
    except ValueError:
        raise BadParam("body", "not valid JSON") from None


async def receive(request: web.Request, path: Path, *, offset: int, limit: int, exact: int | None = None,
                  truncate: bool = False, touch: Callable[[], bool] = lambda: True) -> int:
    """Write the body into `path` at `offset`; the number of bytes written.

    `exact`: the body must be exactly this long (a Content-Range); `limit`: the most it may be. `touch` is
    called for every piece written and stops the upload (BadParam) when it answers False (the entry is gone).
    """
    declared = request.content_length
    if exact is not None and declared is not None and declared != exact:
        raise BadParam("Content-Length", f"{declared} does not match the {exact} bytes of the Content-Range")
    if declared is not None and declared > limit:
        raise TooLarge(f"the body ({declared} bytes) is over the {limit} bytes allowed here")
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
    fd = os.open(path, flags, 0o600)
    written = 0
    try:
        while piece := await request.content.read(_PIECE):
            if written + len(piece) > limit or (exact is not None and written + len(piece) > exact):
                raise TooLarge(f"the body is over the {exact if exact is not None else limit} bytes allowed")
            if not touch():
                raise BadParam("upload", "the cache entry was taken over or committed meanwhile")
            os.pwrite(fd, piece, offset + written)
            written += len(piece)
    finally:
        os.close(fd)
    if exact is not None and written != exact:
        raise BadParam("Content-Range", f"the body has {written} bytes, the range {exact}")
    return written
