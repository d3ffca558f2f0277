"""BuildKit's step log size clip (`util/progress/logs`), applied in the views since there is no daemon."""

from __future__ import annotations

import os

from workbench.progress.units import format_binary_size

DEFAULT_LOG_LIMIT = 2 * 1024 * 1024
"""BUILDKIT_STEP_LOG_MAX_SIZE's default: a step's stdout (and, apart, its stderr) is clipped past 2 MiB."""


def log_limit() -> int:
    """The per-step, per-stream log size limit: BUILDKIT_STEP_LOG_MAX_SIZE, or 2 MiB; -1 turns clipping off."""
    try:
        return int(os.environ.get("BUILDKIT_STEP_LOG_MAX_SIZE", ""))
    except ValueError:
        return DEFAULT_LOG_LIMIT


class LogClipper:
    """Cuts each step's stream at the limit, once, with BuildKit's `[output clipped, ...]` line."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = log_limit() if limit is None else limit
        self.sizes: dict[tuple[str, int], int] = {}
        self.clipping: set[tuple[str, int]] = set()

    def __call__(self, vertex: str, stream: int, data: bytes) -> bytes:
        if self.limit < 0:
            return data
        key = (vertex, stream)
        old = self.sizes.get(key, 0)
        self.sizes[key] = old + len(data)
        keep = 0 if self.limit < old else min(len(data), self.limit - old)
        out = data[:keep]
        if key in self.clipping and keep == len(data):
            self.clipping.discard(key)
        if key not in self.clipping and keep != len(data):
            out += f"\n[output clipped, log limit {format_binary_size(self.limit)} reached]\n".encode()
            self.clipping.add(key)
        return out
