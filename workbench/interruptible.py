"""Waits on other threads that a Ctrl-C still ends at once.

The kernel hands a signal sent to the process to any of its threads. Python runs the handler (KeyboardInterrupt)
in the main thread, but only once that thread runs again: one blocked in a wait without a timeout, for a
future, sleeps on until what it waits for is done (a step's 30 s command, a whole export). These
waits wake every `POLL_S` seconds, so a pending signal's handler runs within that time.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

POLL_S = 0.1
_T = TypeVar("_T")


def wait_futures(futures: Iterable[Future[_T]], return_when: str = ALL_COMPLETED
                 ) -> tuple[set[Future[_T]], set[Future[_T]]]:
    """`concurrent.futures.wait(futures, return_when=...)`, waking every POLL_S seconds."""
    pending = list(futures)
    while True:
        done, not_done = wait(pending, timeout=POLL_S, return_when=return_when)
        if not not_done:
            return done, not_done
        if return_when == FIRST_COMPLETED and done:
            return done, not_done
        if return_when == FIRST_EXCEPTION and any(f.exception() is not None for f in done if not f.cancelled()):
            return done, not_done


def result(future: Future[_T]) -> _T:
    """`future.result()`, waking every POLL_S seconds."""
    while True:
        try:
            return future.result(timeout=POLL_S)
        except FutureTimeout:
            if future.done():  # the future itself raised a TimeoutError
                raise
