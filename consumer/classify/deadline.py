"""The per-ticket deadline, visible to the tiers so they do not start work that cannot finish.

``Pipeline`` wraps each ticket in ``asyncio.timeout``, which cancels whatever is running when time
is up; a tier cancelled mid-retry loses the count of attempts it made. Publishing the deadline in a
context variable lets a tier stop early instead (a retry whose wait ends past the deadline is not
started, a request's timeout is cut to the time left) and report ``TierUnavailable`` with its
attempts, which is what the triage record should carry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("ticket_deadline", default=None)


@contextmanager
def ticket_deadline(seconds: float) -> Iterator[None]:
    """Publishes ``now + seconds`` (event-loop time) as the deadline for the code inside."""
    token = _deadline.set(asyncio.get_running_loop().time() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining_s() -> float | None:
    """Seconds left before the current ticket's deadline, or None when no deadline is set."""
    deadline = _deadline.get()
    if deadline is None:
        return None
    return deadline - asyncio.get_running_loop().time()
