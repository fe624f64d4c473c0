"""One draft per call of ``DraftWriter.write``: a free-text Messages API request with bounded retries.

The retry rules are the router's (``consumer.classify.retry``): 429, 529, 5xx, timeouts and broken
connections are retried with backoff and jitter, at least ``retry-after`` apart; other 4xx and a
spend-limit 429 are not; no retry starts that could not finish before the draft's deadline. The
reply is read with the classifier's reply model, usage and pricing (``consumer.classify.claude``),
so a draft costs what the same tokens cost the router. A refusal, a reply cut off at ``max_tokens``
or one with no text is not retried: it would most likely fail the same way, and a person writes the
reply instead (the ticket goes to triage with the reason).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import anthropic
import httpx2
from pydantic import ValidationError

from consumer.classify.claude import (
    CUT_OFF_REASONS,
    Price,
    Reply,
    cost_usd,
    failure_from_exception,
    usage_from,
)
from consumer.classify.retry import (
    MIN_REQUEST_S,
    CallFailure,
    RetryPolicy,
    failure_status_label,
    retry_reason,
    retry_wait_s,
    stop_reason,
)
from consumer.draft.prompt import draft_user_turn
from consumer.taxonomy import DraftTier, Handler
from schemas.events import RoutedTicket, TokenUsage

OnCall = Callable[[str, str], None]
"""Called as ``hook(model, label)``: after each call (its status) and before each retry (its reason)."""

FailureKind = Literal["unavailable", "invalid_output"]


@dataclass(frozen=True)
class DraftPlan:
    """Everything fixed about one handler's requests, built once at start-up."""

    handler: Handler
    tier: DraftTier
    model: str
    system: list[dict[str, Any]]
    params: dict[str, Any]
    price: Price
    version: str


@dataclass(frozen=True)
class Draft:
    text: str
    attempts: int
    usage: TokenUsage
    cost_usd: float
    latency_ms: float


class DraftFailed(Exception):
    """No usable draft: ``kind`` says whether the API did not answer or answered unusably. ``usage``
    and ``cost_usd`` are what the calls were still billed (an unusable answer costs as much)."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        attempts: int,
        latency_ms: float,
        usage: TokenUsage | None = None,
        cost_usd: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.attempts = attempts
        self.latency_ms = latency_ms
        self.usage = usage or TokenUsage()
        self.cost_usd = cost_usd


class _CallFailed(Exception):
    def __init__(self, failure: CallFailure) -> None:
        super().__init__(failure.describe())
        self.failure = failure


def reply_text(reply: Reply) -> str:
    """The draft in a reply: its text blocks (thinking blocks are not part of it), or an
    ``invalid_output`` reason when there is no complete draft to show an agent."""
    if reply.stop_reason == "refusal":
        raise ValueError("the model refused to draft a reply (stop_reason refusal)")
    if reply.stop_reason in CUT_OFF_REASONS:
        raise ValueError(
            f"the draft was cut off ({reply.stop_reason}): raise the handler's max_tokens or DRAFT_MAX_TOKENS"
        )
    text = "".join(block.text or "" for block in reply.content if block.type == "text").strip()
    if not text:
        raise ValueError(f"the reply has no text (stop_reason={reply.stop_reason})")
    return text


class DraftWriter:
    """Writes drafts with one shared SDK client; safe for any number of concurrent drafts."""

    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        retry_policy: RetryPolicy,
        *,
        deadline_s: float,
        body_char_limit: int,
        on_request: OnCall | None = None,
        on_retry: OnCall | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self.retry_policy = retry_policy
        self.deadline_s = deadline_s
        self.body_char_limit = body_char_limit
        self._on_request = on_request
        self._on_retry = on_retry
        self._jitter = jitter

    async def write(self, plan: DraftPlan, routed: RoutedTicket) -> Draft:
        """The draft, or DraftFailed after at most ``max_attempts`` calls within ``deadline_s``."""
        content = draft_user_turn(routed, self.body_char_limit)
        clock = asyncio.get_running_loop()
        deadline = clock.time() + self.deadline_s
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - clock.time()
            if remaining < MIN_REQUEST_S:
                raise DraftFailed(
                    "unavailable",
                    f"{plan.model}: no time left before the draft deadline",
                    attempt - 1,
                    _ms(started),
                )
            try:
                body = await self._call(plan, content, remaining)
            except _CallFailed as exc:
                wait = await self._wait_before_retry(
                    plan, exc.failure, attempt, deadline - clock.time(), started
                )
                await asyncio.sleep(wait)
                continue
            return self._draft(plan, body, attempt, started)

    async def _wait_before_retry(
        self, plan: DraftPlan, failure: CallFailure, attempt: int, remaining: float, started: float
    ) -> float:
        """Seconds to wait before the next attempt, or DraftFailed when there must be none."""
        reason = retry_reason(failure)
        if reason is None:
            raise DraftFailed(
                "unavailable", f"{plan.model}: {failure.describe()} (not retried)", attempt, _ms(started)
            )
        wait = retry_wait_s(attempt, failure, self.retry_policy, self._jitter())
        stopped = stop_reason(attempt, wait, self.retry_policy, remaining)
        if stopped is not None:
            raise DraftFailed(
                "unavailable", f"{plan.model}: {failure.describe()} ({stopped})", attempt, _ms(started)
            )
        if self._on_retry is not None:
            self._on_retry(plan.model, reason)
        return wait

    async def _call(self, plan: DraftPlan, content: str, remaining: float) -> bytes:
        try:
            raw = await self._client.messages.with_raw_response.create(
                model=plan.model,
                system=cast(Any, plan.system),
                messages=[{"role": "user", "content": content}],
                timeout=remaining,
                **plan.params,
            )
            body: bytes = await raw.read()  # streamed: reading can still time out or break
            return body
        except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
            failure = failure_from_exception(exc) or CallFailure(
                "status", message=f"unexpected SDK error {type(exc).__name__}"
            )
            self._record(plan.model, failure_status_label(failure))
            raise _CallFailed(failure) from None

    def _draft(self, plan: DraftPlan, body: bytes, attempts: int, started: float) -> Draft:
        try:
            reply = Reply.model_validate_json(body)
        except ValidationError:
            self._record(plan.model, "invalid_output")
            raise DraftFailed(
                "invalid_output",
                f"{plan.model}: the reply is not a Messages API message ({len(body)} bytes)",
                attempts,
                _ms(started),
            ) from None
        usage, one_hour_writes = usage_from(reply.usage)
        cost = cost_usd(usage, plan.price, one_hour_writes)
        try:
            text = reply_text(reply)
        except ValueError as exc:
            self._record(plan.model, "refusal" if reply.stop_reason == "refusal" else "invalid_output")
            raise DraftFailed(
                "invalid_output", f"{plan.model}: {exc}", attempts, _ms(started), usage, cost
            ) from None
        self._record(plan.model, "ok")
        return Draft(text=text, attempts=attempts, usage=usage, cost_usd=cost, latency_ms=_ms(started))

    def _record(self, model: str, status: str) -> None:
        if self._on_request is not None:
            self._on_request(model, status)

    async def close(self) -> None:
        await self._client.close()


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
