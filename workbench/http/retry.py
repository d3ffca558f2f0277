"""When a request is sent again: which answers, which methods, how often, how long apart."""

from __future__ import annotations

import time
from dataclasses import dataclass

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def retry_after(value: str | None, default: float) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), else `default`."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RetryPolicy:
    """Answers with one of `statuses` to one of `methods` are asked again after Retry-After, else after a
    backoff that starts at `backoff` seconds and doubles up to `max_backoff`. Only requests whose body can be
    sent again (bytes or none) are retried."""

    statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    methods: frozenset[str] | None = IDEMPOTENT
    """None: every method (for services whose throttling answers say nothing was done)."""
    retries: int | None = 3
    """None: until the request's deadline (give one)."""
    backoff: float = 1.0
    max_backoff: float = 90.0

    def applies(self, method: str, status: int, done: int) -> bool:
        """Whether an answer `status` to `method`, after `done` retries, is asked again."""
        return (status in self.statuses and (self.methods is None or method in self.methods)
                and (self.retries is None or done < self.retries))


DEFAULT = RetryPolicy()
NO_RETRY = RetryPolicy(statuses=frozenset(), retries=0)
