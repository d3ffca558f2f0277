"""Waiting on a Textual app driven by Pilot (shared by the TUI tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


async def until(pilot: Any, cond: Callable[[], object], timeout: float = 60.0) -> None:
    """Let the app run until `cond()` holds; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)
