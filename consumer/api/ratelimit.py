"""Per-client token buckets for the ingestion API. Pure (the clock is an argument), for tests.

A bucket holds up to ``burst`` tokens and refills at ``rate_per_s``; each request takes one. A
client that sends faster than its rate gets ``429`` with how long until a token is there, so a
well-behaved client waits exactly that long instead of hammering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate_per_s: float
    burst: float
    tokens: float = -1.0
    updated_at: float | None = None

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float) -> float:
        """0.0 when a token was taken; else the seconds until one will be there (nothing taken)."""
        if self.updated_at is not None and now > self.updated_at:
            self.tokens = min(self.burst, self.tokens + (now - self.updated_at) * self.rate_per_s)
        self.updated_at = now if self.updated_at is None else max(now, self.updated_at)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s


def retry_after_header(wait_s: float) -> str:
    """``Retry-After`` takes whole seconds: rounded up, at least 1, so a retry never comes early."""
    return str(max(1, math.ceil(wait_s)))


@dataclass
class RateLimiter:
    """One bucket per authenticated client (a configured name, so the map is bounded)."""

    rate_per_s: float
    burst: int
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def take(self, client: str, now: float) -> float:
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(self.rate_per_s, float(self.burst))
        return bucket.take(now)
