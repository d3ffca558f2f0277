"""Waits on other threads end at once on a Ctrl-C, whichever thread the kernel gave the signal to."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, Future, ThreadPoolExecutor

import pytest

from workbench import interruptible

SLOW_S = 6.0


def _interrupt_through_another_thread(wait: Callable[[Future[int]], object]) -> float:
    """Seconds until `wait` raised KeyboardInterrupt, SIGINT having been sent to a pool thread (not the main
    one) that is busy for SLOW_S seconds."""
    assert threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    busy, release = threading.Event(), threading.Event()
    worker: list[int] = []

    def slow() -> int:
        worker.append(threading.get_ident())
        busy.set()
        release.wait(SLOW_S)  # goes on waiting after the signal's handler (in C) returns
        return 1

    try:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(slow)
            busy.wait()
            threading.Timer(0.3, signal.pthread_kill, (worker[0], signal.SIGINT)).start()
            start = time.monotonic()
            try:
                with pytest.raises(KeyboardInterrupt):
                    wait(future)
                took = time.monotonic() - start
            finally:
                release.set()
    finally:
        signal.signal(signal.SIGINT, previous)
    return took


@pytest.mark.parametrize("how", ["result", "first-completed", "first-exception", "all"])
def test_a_signal_another_thread_took_interrupts_the_wait(how: str) -> None:
    waits: dict[str, Callable[[Future[int]], object]] = {
        "result": interruptible.result,
        "first-completed": lambda f: interruptible.wait_futures([f], FIRST_COMPLETED),
        "first-exception": lambda f: interruptible.wait_futures([f], FIRST_EXCEPTION),
        "all": lambda f: interruptible.wait_futures([f]),
    }
    assert _interrupt_through_another_thread(waits[how]) < SLOW_S / 2


def test_the_waits_give_what_the_plain_ones_give() -> None:
    with ThreadPoolExecutor(2) as pool:
        fast, failing = pool.submit(lambda: 7), pool.submit(lambda: 1 / 0)
        done, not_done = interruptible.wait_futures([fast, failing], FIRST_EXCEPTION)
        assert failing in done and not not_done
        assert interruptible.result(fast) == 7
        with pytest.raises(ZeroDivisionError):
            interruptible.result(failing)
        slow = pool.submit(time.sleep, 0.5)
        done, not_done = interruptible.wait_futures([slow, fast], FIRST_COMPLETED)
        assert done == {fast} and not_done == {slow}
        done, not_done = interruptible.wait_futures([slow, fast])
        assert done == {slow, fast} and not not_done
