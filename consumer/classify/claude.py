"""Claude tiers (fast = Haiku, strong = Sonnet) over the Messages API with structured output.

One request per attempt: the cached system prompt (taxonomy, rubric, rules, examples), the fenced
ticket, and an output schema generated from the taxonomy. Retries are ours, not the SDK's
(``max_retries=0``), so the two never multiply: bounded attempts with backoff and jitter, honouring
``retry-after``, and never past the ticket's deadline (decisions in ``consumer.classify.retry``).

An answer outside the schema raises ``TierInvalidOutput`` at once and is not retried in this tier:
structured output makes it rare, and when it happens (a refusal, a cut-off answer) the same
prompt tends to fail the same way, while the next tier is a different, stronger model. The
pipeline moves on to that tier; when none is left the ticket goes to triage as
``llm_invalid_output``. Nothing is ever guessed from a bad answer.

The API key lives in the SDK client only: it is never formatted into a message, log or repr.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import anthropic
import httpx2
import orjson
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from consumer.classify.base import TierAnswer, TierInvalidOutput, TierUnavailable
from consumer.classify.deadline import remaining_s
from consumer.classify.models import TierRequest, facts_for, tokenizer_factor
from consumer.classify.prompt import (
    TEMPLATE_VERSION,
    AnswerError,
    Example,
    build_system_prompt,
    cache_prefix_warning,
    cacheable_prefix_tokens,
    examples_from_rows,
    output_schema,
    parse_answer_text,
    prompt_version,
    redaction_scope,
    target_prefix_chars,
    uncovered_labels,
    usable_examples,
    user_turn,
)
from consumer.classify.redact import RedactionPolicy
from consumer.classify.retry import (
    MIN_REQUEST_S,
    CallFailure,
    RetryPolicy,
    failure_status_label,
    parse_retry_after,
    retry_reason,
    retry_wait_s,
    stop_reason,
)
from consumer.classify.tokens import estimate_tokens
from consumer.config import ConfigError, Settings, price_key
from consumer.logs import redact
from consumer.taxonomy import Taxonomy
from schemas.events import Classification, TicketEvent, TierAttempt, TokenUsage

log = logging.getLogger("ticket_router.claude")

OnRetry = Callable[[str, str], None]
"""Called as ``on_retry(model, reason)`` before each retry (reason: rate_limit, overloaded, …)."""
OnRequest = Callable[[str, str], None]
"""Called as ``on_request(model, status)`` after each API call (status: ok, 429, timeout, …)."""
Retriever = Callable[[TicketEvent], Sequence[tuple[Example, float]]]
"""The labeled examples most similar to a ticket, with their similarity (the example store)."""
OnRedact = Callable[[Mapping[str, int]], None]
"""Called with the values replaced per kind in one user turn (``ticket_router_redactions_total``)."""

TRAINING_RESOURCE = "training.jsonl"
PER_MILLION = 1_000_000
COUNT_TOKENS_TIMEOUT_S = 5.0  # a start-up measurement must not hold the start-up for long
ONE_HOUR_WRITE_MULTIPLIER = 2.0  # 1-hour cache writes cost 2x input (5-minute ones 1.25x)


# -- pure helpers: usage, cost, reply ---------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    """USD per million tokens for one model; ``long`` rates apply above ``long_above`` prompt tokens."""

    input: float
    output: float
    cache_write: float
    cache_read: float
    cache_write_1h: float
    long: Price | None = None
    long_above: int = 0

    @classmethod
    def from_table(cls, row: Mapping[str, float]) -> Price:
        """From a MODEL_PRICES row; ``cache_write_1h`` defaults to 2x input as published.

        ``long_context_above`` with ``long_*`` rates describes a model (Haiku 5.5) that bills every
        token of a request at higher rates once its prompt exceeds that many tokens.
        """
        long = None
        if "long_context_above" in row:
            long = cls.from_table({key[5:]: value for key, value in row.items() if key.startswith("long_")})
        return cls(
            input=row["input"],
            output=row["output"],
            cache_write=row["cache_write"],
            cache_read=row["cache_read"],
            cache_write_1h=row.get("cache_write_1h", row["input"] * ONE_HOUR_WRITE_MULTIPLIER),
            long=long,
            long_above=int(row.get("long_context_above", 0)),
        )

    def for_prompt(self, prompt_tokens: int) -> Price:
        """The rates a request with ``prompt_tokens`` (input + cache reads + cache writes) is billed at."""
        if self.long is not None and prompt_tokens > self.long_above:
            return self.long
        return self


def price_for(model: str, prices: Mapping[str, Mapping[str, float]]) -> Price:
    """The model's price row: its own id, else the model-table id or priced id it is a dated form of."""
    key = price_key(model, prices)
    if key is None:
        raise ConfigError(f"MODEL_PRICES has no price for {model!r} (priced: {', '.join(prices)})")
    try:
        return Price.from_table(prices[key])
    except KeyError as exc:
        raise ConfigError(f"MODEL_PRICES[{model!r}] lacks {exc.args[0]!r}") from None


def cost_usd(usage: TokenUsage, price: Price, cache_write_1h_tokens: int = 0) -> float:
    """Spend for one call; cache writes split by TTL (``cache_write_1h_tokens`` of them are 1-hour)."""
    prompt = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    rates = price.for_prompt(prompt)
    write_1h = min(cache_write_1h_tokens, usage.cache_creation_input_tokens)
    write_5m = usage.cache_creation_input_tokens - write_1h
    total = (
        usage.input_tokens * rates.input
        + usage.output_tokens * rates.output
        + write_5m * rates.cache_write
        + write_1h * rates.cache_write_1h
        + usage.cache_read_input_tokens * rates.cache_read
    )
    return total / PER_MILLION


def without_retrieval(usage: TokenUsage) -> TokenUsage:
    """The same call's usage had no retrieved examples been sent: their tokens taken off the input."""
    return usage.model_copy(
        update={"input_tokens": usage.input_tokens - usage.retrieved_tokens, "retrieved_tokens": 0}
    )


def retrieval_cost_usd(usage: TokenUsage, price: Price) -> float:
    """What the retrieved examples added to one call's bill (0.0 when none were sent).

    Priced through ``cost_usd`` with and without them rather than as tokens x input rate, so a
    prompt the examples pushed past a long-context threshold (Haiku 5.5) is charged for the long
    rates it caused on every other token too. Cache writes are priced as 5-minute ones on both
    sides, which cancels out unless the threshold is crossed.
    """
    if not usage.retrieved_tokens:
        return 0.0
    return cost_usd(usage, price) - cost_usd(without_retrieval(usage), price)


class _ReplyModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ReplyBlock(_ReplyModel):
    type: str
    text: str | None = None


class ReplyCacheCreation(_ReplyModel):
    ephemeral_1h_input_tokens: int = 0


class ReplyOutputDetails(_ReplyModel):
    thinking_tokens: int = 0


class ReplyUsage(_ReplyModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_creation: ReplyCacheCreation | None = None
    output_tokens_details: ReplyOutputDetails | None = None


class Reply(_ReplyModel):
    """What the tier reads from a Messages API reply (stop reason, text, usage), from the raw body.

    The SDK's own ``Message`` is built field by field in Python (about 0.15 ms of CPU per call, a
    tenth of the whole call, measured with ``ticket-tools bench``); validating only these fields in
    pydantic-core costs a few microseconds, and a body that does not fit fails loudly here instead
    of reaching the answer parser half-built.
    """

    stop_reason: str | None = None
    content: list[ReplyBlock]
    usage: ReplyUsage


def usage_from(reply_usage: ReplyUsage, retrieved_tokens: int = 0) -> tuple[TokenUsage, int]:
    """TokenUsage from a reply's usage, and how many cache-write tokens were 1-hour writes.

    ``retrieved_tokens`` is our estimate of the retrieved examples' share of the input; it is capped
    at the input the API reported, since the estimate errs high and is a part of that input.
    """
    details = reply_usage.output_tokens_details
    usage = TokenUsage(
        input_tokens=reply_usage.input_tokens,
        retrieved_tokens=min(retrieved_tokens, reply_usage.input_tokens),
        output_tokens=reply_usage.output_tokens,
        cache_read_input_tokens=reply_usage.cache_read_input_tokens or 0,
        cache_creation_input_tokens=reply_usage.cache_creation_input_tokens or 0,
        thinking_tokens=details.thinking_tokens if details is not None else 0,
    )
    breakdown = reply_usage.cache_creation
    return usage, breakdown.ephemeral_1h_input_tokens if breakdown is not None else 0


class RefusedAnswer(AnswerError):
    """``stop_reason: refusal``: the model's safety classifier declined; no answer to read."""

    status = "refusal"


class CutOffAnswer(AnswerError):
    """The reply stopped at ``max_tokens`` (or the context window) before the answer was complete."""

    status = "cut_off"


CUT_OFF_REASONS = ("max_tokens", "model_context_window_exceeded")


def classification_from_reply(
    stop_reason: str | None, texts: Sequence[str], taxonomy: Taxonomy
) -> Classification:
    """The answer in a reply's text blocks (thinking blocks are not read), or AnswerError.

    A refusal and a cut-off answer are their own subclasses, so they are counted apart from answers
    outside the schema: each asks for a different fix (a prompt or policy question; more
    ``max_tokens`` or less thinking).
    """
    if stop_reason == "refusal":
        raise RefusedAnswer("the model refused to answer (stop_reason refusal)")
    if stop_reason in CUT_OFF_REASONS:
        raise CutOffAnswer(
            f"the answer was cut off ({stop_reason}): raise the tier's max_tokens or lower its thinking"
        )
    text = "".join(texts).strip()
    if not text:
        raise AnswerError(f"the reply has no text block (stop_reason={stop_reason})")
    return parse_answer_text(text, taxonomy)


def failure_from_exception(exc: BaseException) -> CallFailure | None:
    """The retry-relevant facts of an SDK error; None for anything that is not an API call failure.

    Built from the status, the error body's type/code/message and two headers only: the request
    (which carries the key in its headers) is never looked at or kept.
    """
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return CallFailure("timeout", message="request timed out")
    if isinstance(exc, anthropic.APIConnectionError | httpx2.HTTPError):
        return CallFailure("connection", message="connection error")
    if isinstance(exc, anthropic.APIStatusError):
        headers = exc.response.headers
        should_retry = headers.get("x-should-retry")
        return CallFailure(
            "status",
            status=exc.status_code,
            error_type=exc.type,
            error_code=exc.error_code,
            message=redact(exc.api_message or ""),
            retry_after_s=parse_retry_after(headers),
            should_retry=None if should_retry is None else should_retry.strip().lower() == "true",
        )
    return None


class _CallFailed(Exception):
    """An attempt failed; carries the facts tenacity's predicates look at."""

    def __init__(self, failure: CallFailure) -> None:
        super().__init__(failure.describe())
        self.failure = failure


def _failure_of(state: RetryCallState) -> CallFailure:
    outcome = state.outcome
    exc = outcome.exception() if outcome is not None else None
    assert isinstance(exc, _CallFailed)
    return exc.failure


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, _CallFailed) and retry_reason(exc.failure) is not None


def request_params(request: TierRequest, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The per-tier part of every create call: max_tokens, structured output, effort, thinking.

    Built once per tier. Never sampling parameters (a 400 under API version 2026-10-21), never an
    assistant prefill (a 400 on the 5.5 models), never a forced tool (a 400 on Sonnet and Opus 5.5):
    the answer's shape comes from ``output_config.format`` on every model.
    """
    output_config: dict[str, Any] = {"format": {"type": "json_schema", "schema": schema}}
    if request.effort is not None:
        output_config["effort"] = request.effort
    params: dict[str, Any] = {"max_tokens": request.max_tokens, "output_config": output_config}
    if request.thinking is not None:
        params["thinking"] = {"type": request.thinking}
    return params


# -- the tier ---------------------------------------------------------------------------------------


@dataclass
class _Call:
    """The state of one ticket's classification in this tier: the user turn (built once, retries
    send the same), the estimated tokens of its retrieved examples, attempts made and why it
    stopped."""

    started: float
    fallback_deadline: float
    content: str = ""
    retrieved_tokens: int = 0
    attempts: int = 0
    stopped_because: str = ""


class ClaudeTier:
    """A classifier tier backed by one Claude model. Safe for any number of concurrent tickets."""

    def __init__(
        self,
        name: str,
        model: str,
        client: anthropic.AsyncAnthropic,
        taxonomy: Taxonomy,
        system_blocks: list[dict[str, Any]],
        *,
        price: Price,
        retry_policy: RetryPolicy,
        request: TierRequest | None = None,
        body_char_limit: int = 8_000,
        request_timeout_s: float = 20.0,
        deadline_s: float = 60.0,
        version: str = "",
        on_retry: OnRetry | None = None,
        on_request: OnRequest | None = None,
        jitter: Callable[[], float] = random.random,
        owns_client: bool = True,
        retriever: Retriever | None = None,
        redaction: RedactionPolicy | None = None,
        on_redact: OnRedact | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.taxonomy = taxonomy
        self.system_blocks = system_blocks
        self.schema = output_schema(taxonomy)
        self.price = price
        self.retry_policy = retry_policy
        self.request = request or TierRequest(thinking=None, effort=None, max_tokens=600, thinks=False)
        self.params = request_params(self.request, self.schema)
        self.body_char_limit = body_char_limit
        self.request_timeout_s = request_timeout_s
        self.deadline_s = deadline_s
        self.prompt_version = version
        self._client = client
        self._owns_client = owns_client
        self._on_retry = on_retry
        self._on_request = on_request
        self._jitter = jitter
        self.retriever = retriever
        self.redaction = redaction  # None: the process's policy (REDACT)
        self._on_redact = on_redact
        self._token_factor = tokenizer_factor(model)

    def __repr__(self) -> str:
        return f"ClaudeTier(name={self.name!r}, model={self.model!r}, prompt_version={self.prompt_version!r})"

    async def classify(self, ticket: TicketEvent) -> TierAnswer:
        loop = asyncio.get_running_loop()
        content, retrieved_tokens = self.user_content(ticket)
        call = _Call(
            started=time.perf_counter(),
            fallback_deadline=loop.time() + self.deadline_s,
            content=content,
            retrieved_tokens=retrieved_tokens,
        )
        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_retryable),
            wait=lambda state: retry_wait_s(
                state.attempt_number, _failure_of(state), self.retry_policy, self._jitter()
            ),
            stop=lambda state: self._should_stop(call, state),
            before_sleep=lambda state: self._before_retry(ticket, state),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(ticket, call)
        except _CallFailed as exc:
            reason = call.stopped_because or "not retried"
            log.info(  # the triage outcome is logged at the end anyway; this adds the per-tier detail
                "%s tier unavailable: %s (%s)",
                self.name,
                exc.failure.describe(),
                reason,
                extra={"ticket_id": ticket.ticket_id, "model": self.model, "attempts": call.attempts},
            )
            raise TierUnavailable(
                f"{self.model}: {exc.failure.describe()} ({reason})", attempts=call.attempts
            ) from None
        raise AssertionError("unreachable: tenacity either returns, retries or raises")

    def user_content(self, ticket: TicketEvent) -> tuple[str, int]:
        """The user turn this tier sends for ``ticket`` (retrieved examples, then the fenced ticket)
        and the estimated tokens of its examples; public so ``ticket-tools backfill`` batches the
        very turn the live path sends."""
        similar = self.retriever(ticket) if self.retriever is not None else ()
        with redaction_scope(self.redaction) as redactor:  # one numbering: examples and ticket
            content, section = user_turn(ticket, self.body_char_limit, similar)
        if self._on_redact is not None and redactor.counts:
            self._on_redact(redactor.counts)
        return content, estimate_tokens(section, self._token_factor)

    def message_params(self, content: str) -> dict[str, Any]:
        """Every create parameter of a call with ``content`` as the user turn, but the timeout:
        model, cached system prompt, output schema and the tier's request settings."""
        return {
            "model": self.model,
            "system": self.system_blocks,
            "messages": [{"role": "user", "content": content}],
            **self.params,
        }

    def _remaining(self, call: _Call) -> float:
        """Seconds left: the pipeline's per-ticket deadline, else this tier's own from its start."""
        remaining = remaining_s()
        if remaining is not None:
            return remaining
        return call.fallback_deadline - asyncio.get_running_loop().time()

    def _should_stop(self, call: _Call, state: RetryCallState) -> bool:
        reason = stop_reason(
            state.attempt_number, state.upcoming_sleep, self.retry_policy, self._remaining(call)
        )
        if reason is not None:
            call.stopped_because = reason
        return reason is not None

    def _before_retry(self, ticket: TicketEvent, state: RetryCallState) -> None:
        failure = _failure_of(state)
        reason = retry_reason(failure) or "unknown"
        log.info(
            "retrying %s after %s in %.2fs",
            self.model,
            failure.describe(),
            state.upcoming_sleep,
            extra={"ticket_id": ticket.ticket_id, "attempt": state.attempt_number, "reason": reason},
        )
        if self._on_retry is not None:
            self._on_retry(self.model, reason)

    def _record_request(self, status: str) -> None:
        if self._on_request is not None:
            self._on_request(self.model, status)

    async def _attempt(self, ticket: TicketEvent, call: _Call) -> TierAnswer:
        remaining = self._remaining(call)
        if remaining < MIN_REQUEST_S:
            raise TierUnavailable(
                f"{self.model}: no time left before the ticket deadline", attempts=call.attempts
            )
        call.attempts += 1
        try:
            raw = await self._client.messages.with_raw_response.create(
                timeout=min(self.request_timeout_s, remaining), **self.message_params(call.content)
            )
            body = await raw.read()  # the body is streamed: reading it can still time out or break
        except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
            failure = failure_from_exception(exc) or CallFailure(
                "status", message=f"unexpected SDK error {type(exc).__name__}"
            )
            self._record_request(failure_status_label(failure))
            raise _CallFailed(failure) from None
        try:
            reply = Reply.model_validate_json(body)
        except ValidationError:
            self._record_request("invalid_output")
            raise TierInvalidOutput(
                f"{self.model}: the reply is not a Messages API message ({len(body)} bytes)",
                attempts=call.attempts,
            ) from None
        return self._answer(reply, call)

    def _answer(self, reply: Reply, call: _Call) -> TierAnswer:
        usage, one_hour_writes = usage_from(reply.usage, call.retrieved_tokens)
        texts = [block.text or "" for block in reply.content if block.type == "text"]
        try:
            classification = classification_from_reply(reply.stop_reason, texts, self.taxonomy)
        except AnswerError as exc:
            self._record_request(exc.status)
            raise TierInvalidOutput(
                f"{self.model}: {exc}",
                attempts=call.attempts,
                usage=usage,
                cost_usd=cost_usd(usage, self.price, one_hour_writes),
            ) from None
        self._record_request("ok")
        attempt = TierAttempt(
            tier=self.name,
            model=self.model,
            outcome="answered",
            attempts=call.attempts,
            latency_ms=(time.perf_counter() - call.started) * 1000,
            usage=usage,
            cost_usd=cost_usd(usage, self.price, one_hour_writes),
        )
        return TierAnswer(classification, attempt)

    async def count_prompt_tokens(self) -> int:
        """Tokens of the cached system prompt plus a one-word ticket, by the free count_tokens call."""
        counted = await self._client.messages.count_tokens(
            model=self.model,
            system=cast(Any, self.system_blocks),
            messages=[{"role": "user", "content": "ticket"}],
            timeout=min(self.request_timeout_s, COUNT_TOKENS_TIMEOUT_S),
        )
        return counted.input_tokens

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()


# -- construction (I/O: reads the examples file, logs warnings) -------------------------------------


def load_examples(path: Path | None = None) -> list[Example]:
    """Few-shot candidates: the labeled training file (LOCAL_TRAINING_PATH or the shipped one)."""
    try:
        raw = (
            Path(path).read_bytes()
            if path is not None
            else resources.files("consumer.data").joinpath(TRAINING_RESOURCE).read_bytes()
        )
    except OSError as exc:
        raise ConfigError(f"LOCAL_TRAINING_PATH: cannot read {path}: {exc.strerror}") from None
    rows = []
    for line in raw.splitlines():
        if line.strip():
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue  # the local tier reports bad lines; a missing example only shortens the prompt
    return examples_from_rows(row for row in rows if isinstance(row, dict))


def make_client(settings: Settings) -> anthropic.AsyncAnthropic:
    """The SDK client with its own retries off (ours are bounded by the ticket deadline).

    HTTP goes over aiohttp (the SDK's own ``DefaultAioHttpClient``; aiohttp is already a dependency):
    the default httpx pool re-checks every pooled connection, with socket syscalls for each idle
    one, on every request and every response, so its cost grows with MAX_IN_FLIGHT. ``ticket-tools
    bench`` measured 64 tickets in flight at 242 → 437 calls/s and 2.1 → 1.4 ms CPU per call.
    """
    if settings.anthropic_api_key is None:
        raise ConfigError("ANTHROPIC_API_KEY is required for the fast and strong tiers")
    try:
        http_client = anthropic.DefaultAioHttpClient(timeout=settings.llm_timeout_s)
    except RuntimeError:  # an SDK build without the aiohttp transport: keep its httpx default
        http_client = None
    return anthropic.AsyncAnthropic(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=settings.anthropic_base_url or None,
        max_retries=0,
        timeout=settings.llm_timeout_s,
        http_client=http_client,
        open_telemetry=sdk_open_telemetry(trace.get_tracer_provider()),
    )


def sdk_open_telemetry(provider: trace.TracerProvider) -> Literal[False] | None:
    """``False`` (no spans) unless the process has set up an OpenTelemetry tracer provider.

    Without one the SDK still builds each call's span attributes for a no-op tracer: about 0.04 ms
    of CPU a call, 3% of it (measured with ``ticket-tools bench``). With one, ``None`` leaves the
    SDK's own default and its ``ANTHROPIC_OPEN_TELEMETRY*`` variables in charge.
    """
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return False
    return None


def warn_about_prompt(model: str, blocks: Sequence[Mapping[str, Any]]) -> None:
    """The start-up warning an operator can act on: a system prompt too short to be cached."""
    prefix = cacheable_prefix_tokens(blocks, tokenizer_factor(model))
    warning = cache_prefix_warning(model, prefix)
    if warning is not None:
        log.warning(warning, extra={"model": model, "prefix_tokens": prefix})
    else:
        log.info("system prompt is about %d tokens for %s", prefix, model, extra={"model": model})


class PromptCounter(Protocol):
    """What measuring a prompt needs of a tier (the start-up API check wraps a tier's call)."""

    model: str

    async def count_prompt_tokens(self) -> int: ...


async def measure_system_prompt(tier: PromptCounter) -> int | None:
    """The cached prefix's real size from the free ``count_tokens`` endpoint, logged with the minimum.

    Our own figure is an estimate (no tokenizer offline); this one is the API's, for the model the
    tier calls. A failure is logged and returns None: measuring is advice, not a start-up condition.
    """
    minimum = facts.min_cacheable_tokens if (facts := facts_for(tier.model)) is not None else None
    try:
        counted = await tier.count_prompt_tokens()
    except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
        failure = failure_from_exception(exc)
        reason = failure.describe() if failure is not None else type(exc).__name__
        log.warning("could not measure the system prompt for %s: %s", tier.model, reason)
        return None
    fields = {"model": tier.model, "prompt_tokens": counted, "min_cacheable_tokens": minimum}
    if minimum is not None and counted < minimum:
        log.warning(
            "the cached system prompt for %s is %d tokens (count_tokens), below the model's minimum "
            "cacheable length of %d: it will never be cached (raise PROMPT_EXAMPLES)",
            tier.model,
            counted,
            minimum,
            extra=fields,
        )
    else:
        log.info(
            "system prompt for %s is %d tokens (count_tokens); minimum cacheable %s",
            tier.model,
            counted,
            minimum if minimum is not None else "unknown",
            extra=fields,
        )
    return counted


def tier_signature(settings: Settings, retrieval: str = "") -> list[str]:
    """Model and request settings of both Claude tiers, the retrieval and the redaction (what the
    model is shown), for ``prompt_version``."""
    signature = []
    for tier in ("fast", "strong"):
        request = settings.tier_request(tier)
        parts = (settings.model_for(tier), request.thinking, request.effort, str(request.max_tokens))
        signature.append(":".join(part or "-" for part in parts))
    return [*signature, f"retrieval:{retrieval or 'off'}", f"redact:{settings.redaction_policy.signature}"]


def build_claude_tier(
    name: str,
    settings: Settings,
    taxonomy: Taxonomy,
    *,
    examples: Sequence[Example] | None = None,
    client: anthropic.AsyncAnthropic | None = None,
    on_retry: OnRetry | None = None,
    on_request: OnRequest | None = None,
    jitter: Callable[[], float] = random.random,
    retriever: Retriever | None = None,
    retrieval: str = "",
    on_redact: OnRedact | None = None,
) -> ClaudeTier:
    """A fast or strong tier from settings. Both tiers get the same system prompt (and version).

    ``retriever`` puts the most similar labeled examples before each ticket; ``retrieval``
    describes it (k, floor, encoder) for ``prompt_version``.

    The prompt holds ``PROMPT_EXAMPLES`` labeled examples, or more when a configured model's minimum
    cacheable length needs them (a pinned Haiku 4.5 caches from 4,096 tokens, the 5.x models from
    512), so one prompt is cached by both tiers; ``examples`` overrides the training file (tests,
    custom data). A ``client`` passed in is shared and not closed by the tier.
    """
    if name not in ("fast", "strong"):
        raise ConfigError(f"TIERS: {name!r} is not a Claude tier (fast, strong)")
    model = settings.model_for(name)
    pool = list(examples) if examples is not None else load_examples(settings.local_training_path)
    models = [settings.fast_model, settings.strong_model]
    with redaction_scope(settings.redaction_policy, shared=False):  # each static example on its own
        blocks = build_system_prompt(
            taxonomy,
            pool,
            target_prefix_chars(models),
            min_examples=settings.prompt_examples,
            ttl=settings.prompt_cache_ttl,
        )
    missing = uncovered_labels(usable_examples(pool, taxonomy), taxonomy)
    if missing:
        log.warning(
            "no labeled example shows %s; the prompt teaches those labels by description only",
            ", ".join(missing[:10]),
            extra={"model": model},
        )
    warn_about_prompt(model, blocks)
    return ClaudeTier(
        name,
        model,
        client if client is not None else make_client(settings),
        taxonomy,
        blocks,
        price=price_for(model, settings.prices),
        retry_policy=RetryPolicy(
            max_attempts=settings.llm_max_attempts,
            initial_s=settings.llm_backoff_initial_s,
            max_s=settings.llm_backoff_max_s,
        ),
        request=settings.tier_request(name),
        body_char_limit=settings.body_char_limit,
        request_timeout_s=settings.llm_timeout_s,
        deadline_s=settings.ticket_deadline_s,
        version=prompt_version(taxonomy, TEMPLATE_VERSION, tier_signature(settings, retrieval), blocks),
        on_retry=on_retry,
        on_request=on_request,
        jitter=jitter,
        owns_client=client is None,
        retriever=retriever,
        redaction=settings.redaction_policy,
        on_redact=on_redact,
    )
