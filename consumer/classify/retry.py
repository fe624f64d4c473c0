"""Pure retry decisions for Messages API calls: is a failure worth retrying, and how long to wait.

Kept apart from the HTTP code so every rule is a unit-tested function of plain values:

* retried: 429 rate limits, 529 overloaded, 408 and every 5xx, connection errors and timeouts,
  because they clear up on their own;
* never retried: other 4xx (400 bad request, 401/403 key problems, 404 unknown model, 413 too
  large), a response whose ``x-should-retry: false`` header says so, and a *spend-limit* 429.
  A spend limit lasts until the billing period or the limit changes, so retrying only burns the
  ticket's deadline. Heuristic: a 429 whose ``error.details.error_code`` mentions "spend_limit",
  or whose message mentions a usage/spend/credit limit or balance ("You have reached your
  specified workspace API usage limits"); ordinary rate limits say "rate limit" instead.
* the wait is exponential backoff with jitter, but at least the server's ``retry-after``; a retry
  whose wait would end past the ticket's deadline is not started.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

FailureKind = Literal["status", "timeout", "connection"]

SPEND_LIMIT_MESSAGE = re.compile(
    r"(usage|spend(ing)?|credit|billing)\s+(limit|balance)|credit balance|spend_limit", re.IGNORECASE
)
# Time a request needs at the very least; a retry that would leave less than this is not started.
MIN_REQUEST_S = 0.05


@dataclass(frozen=True)
class CallFailure:
    """One failed Messages API call, reduced to what the retry decision needs (no secrets)."""

    kind: FailureKind
    status: int | None = None
    error_type: str | None = None
    error_code: str | None = None
    message: str = ""
    retry_after_s: float | None = None
    should_retry: bool | None = None

    def describe(self) -> str:
        """One line for logs and triage records, e.g. ``429 rate_limit_error: ...``."""
        if self.kind != "status":
            return f"{self.kind}: {self.message}" if self.message else self.kind
        head = f"{self.status} {self.error_type}" if self.error_type else str(self.status)
        return f"{head}: {self.message[:300]}" if self.message else head


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    initial_s: float
    max_s: float


def is_spend_limit(failure: CallFailure) -> bool:
    """A 429 that will not clear by waiting (see the module docstring for the heuristic)."""
    if failure.status != 429:
        return False
    if failure.error_code and "spend_limit" in failure.error_code:
        return True
    return bool(SPEND_LIMIT_MESSAGE.search(failure.message))


RETRY_REASONS = ("rate_limit", "overloaded", "timeout", "server_error", "connection")
"""Every ``reason`` label of ``llm_retries`` (what ``retry_reason`` returns)."""


def retry_reason(failure: CallFailure) -> str | None:
    """The metric label for a retryable failure, or None when it must fail fast."""
    if failure.kind == "timeout":
        return "timeout"
    if failure.kind == "connection":
        return "connection"
    status = failure.status or 0
    if failure.should_retry is False or is_spend_limit(failure):
        return None
    if status == 429:
        return "rate_limit"
    if status == 529:
        return "overloaded"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server_error"
    return None  # any other 4xx: the request itself is wrong and will fail the same way again


def failure_status_label(failure: CallFailure) -> str:
    """The ``status`` label of ``llm_requests`` for a failed call: the HTTP code or the failure kind."""
    if failure.kind == "status" and failure.status is not None:
        return "spend_limit" if is_spend_limit(failure) else str(failure.status)
    return failure.kind


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, ``retry-after`` seconds or HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return _seconds_until(raw, now or datetime.now(UTC))
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _seconds_until(http_date: str, now: datetime) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_s(attempt: int, policy: RetryPolicy, jitter: float) -> float:
    """Exponential backoff after failed attempt ``attempt`` (1-based), with "equal jitter".

    Half the exponential step is kept and half is random (``jitter`` in [0, 1)), so concurrent
    tickets hitting the same 429 spread out, yet no retry fires immediately.
    """
    step = min(policy.max_s, policy.initial_s * 2.0 ** max(0, attempt - 1))
    return step / 2 + step / 2 * min(max(jitter, 0.0), 1.0)


def retry_wait_s(attempt: int, failure: CallFailure, policy: RetryPolicy, jitter: float) -> float:
    """The wait before the next attempt: the backoff, or longer when the server said so."""
    return max(backoff_s(attempt, policy, jitter), failure.retry_after_s or 0.0)


def stop_reason(attempt: int, wait_s: float, policy: RetryPolicy, remaining_s: float | None) -> str | None:
    """Why no further attempt may start after attempt ``attempt`` failed, or None to retry."""
    if attempt >= policy.max_attempts:
        return f"gave up after {attempt} attempts"
    if remaining_s is not None and wait_s + MIN_REQUEST_S > remaining_s:
        return (
            f"stopped after {attempt} attempts: the next retry would wait {wait_s:.2f}s but only "
            f"{max(remaining_s, 0.0):.2f}s are left of the ticket deadline"
        )
    return None
