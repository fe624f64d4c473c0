"""``GET /v1/explain``: why a ticket went where it did, streamed (server-sent events) as the strong
model writes it.

The decision comes from this replica's memory of its last RECENT_DECISIONS decisions (by
``event_id``), or from the routed record itself (``topic``, ``partition``, ``offset``: what
``ticket-tools tail`` shows), which works on any replica. Only queue topics and the triage topic
can be read this way: the endpoint is not a general Kafka reader.

The call to the model is opened before the response starts, so a refused call (rate limit,
overload, bad key) is an ordinary JSON error with its status; once streaming, a failure is an
``error`` event. Events: ``decision`` (the facts the explanation is grounded in), ``text`` (each
piece as it arrives), then ``done`` (usage and cost) or ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import anthropic
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from consumer.classify.budget import SpendGuard
from consumer.classify.claude import Price, cost_usd, make_client, price_for
from consumer.classify.explanation import (
    EXPLANATION_ANSWER_TOKENS,
    alternatives,
    explanation_system,
    explanation_user,
    explanation_version,
)
from consumer.classify.models import TierRequest, resolve_tier_request
from consumer.config import Settings
from consumer.learn.corrections import Decision, RecentDecisions, decision_of, triaged_decision
from consumer.metrics import Metrics
from consumer.routing import reachable_queues
from consumer.taxonomy import Taxonomy
from schemas.events import RoutedTicket, TicketEvent, TokenUsage, TriageRecord

log = logging.getLogger("ticket_router")

EXPLAIN_ROUTE = "/v1/explain"
OUTCOMES = ("streamed", "not_found", "bad_request", "busy", "model_error", "unavailable", "budget_exhausted")
"""The ``outcome`` values of ``api_explanations``."""
MAX_CONCURRENT_EXPLANATIONS = 4
"""Explanations are the strong model's time: a few at once per replica, the rest told to retry."""
BUSY_RETRY_AFTER_S = 5
FETCH_TIMEOUT_S = 5.0


class ExplainError(Exception):
    """An answer other than a stream: ``status``, a message for people, and the query field at fault."""

    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field

    def response(self) -> web.Response:
        body: dict[str, object] = {"error": self.error}
        if self.field is not None:
            body["field"] = self.field
        return web.json_response(body, status=self.status)


# -- what to explain (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class RecordAt:
    topic: str
    partition: int
    offset: int


def non_negative(query: Mapping[str, str], name: str) -> int:
    text = query.get(name, "")
    if not text.isdigit():
        raise ExplainError(400, f"{name} must be a non-negative integer", name)
    return int(text)


def explain_target(query: Mapping[str, str], readable: Collection[str]) -> str | RecordAt:
    """An ``event_id``, or the position of a record on one of the ``readable`` topics."""
    position_fields = [name for name in ("topic", "partition", "offset") if name in query]
    if "event_id" in query:
        if position_fields:
            raise ExplainError(400, "give event_id, or topic, partition and offset, not both", "event_id")
        event_id = query["event_id"].strip()
        if not event_id or len(event_id) > 256:
            raise ExplainError(400, "event_id must be 1 to 256 characters", "event_id")
        return event_id
    if not position_fields:
        raise ExplainError(
            400, "give event_id, or topic, partition and offset of a routed ticket", "event_id"
        )
    for name in ("topic", "partition", "offset"):
        if name not in query:
            raise ExplainError(400, f"{name} is required with {', '.join(position_fields)}", name)
    topic = query["topic"]
    if topic not in readable:
        raise ExplainError(400, "topic must be a queue topic or the triage topic", "topic")
    return RecordAt(topic, non_negative(query, "partition"), non_negative(query, "offset"))


def decision_from_record(value: bytes, triage_topic: str) -> Decision:
    """The decision a queue or triage record holds; ExplainError 422 when it holds none."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise ExplainError(422, "the record at that position is not JSON", "offset") from None
    if isinstance(document, dict) and "classification" in document:
        try:
            return decision_of(RoutedTicket.model_validate(document))
        except ValidationError:
            raise ExplainError(422, "the record at that position is not a RoutedTicket", "offset") from None
    try:
        triage = TriageRecord.model_validate(document)
        ticket = TicketEvent.model_validate_json(triage.original_value)
    except ValidationError:
        raise ExplainError(
            422, "the record at that position is neither a routed ticket nor a triaged TicketEvent", "offset"
        ) from None
    return triaged_decision(
        ticket, triage.partial_classification, triage_topic, triage.message, tuple(triage.tiers_tried)
    )


def decision_event(decision: Decision, taxonomy: Taxonomy, model: str) -> dict[str, Any]:
    """The ``decision`` event: what the explanation is grounded in, for a client to show beside it."""
    return {
        "ticket_id": decision.ticket_id,
        "queue": decision.queue,
        "rule": decision.rule,
        "labels": dict(decision.labels),
        "confidences": dict(decision.confidences),
        "thresholds": taxonomy.thresholds(),
        "decided_by": decision.model,
        "alternatives": [asdict(alt) for alt in alternatives(decision, taxonomy)],
        "explained_by": model,
        "explanation_version": explanation_version(model),
    }


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    """One server-sent event; JSON data is one line, so no field can break the framing."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def usage_of(usage: anthropic.types.Usage) -> TokenUsage:
    return TokenUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_input_tokens=usage.cache_read_input_tokens or 0,
        cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
    )


# -- I/O ------------------------------------------------------------------------------------------

FetchRecord = Callable[[RecordAt], Awaitable[bytes | None]]


@dataclass
class RecordFetcher:
    """Reads the one record at a position, with one group-less consumer (nothing committed) kept
    for the process and started on first use; one read at a time, as it is reassigned per read."""

    options: Mapping[str, Any]
    timeout_s: float = FETCH_TIMEOUT_S
    _consumer: AIOKafkaConsumer | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def __call__(self, at: RecordAt) -> bytes | None:
        async with self._lock:
            consumer = await self._started()
            partitions = consumer.partitions_for_topic(at.topic) or await fetch_partitions(consumer, at.topic)
            if at.partition not in partitions:
                return None
            tp = TopicPartition(at.topic, at.partition)
            consumer.assign([tp])
            consumer.seek(tp, at.offset)
            deadline = time.monotonic() + self.timeout_s
            while (left := deadline - time.monotonic()) > 0:
                batch = await consumer.getmany(tp, timeout_ms=int(left * 1000), max_records=1)
                for record in batch.get(tp, []):
                    return record.value if record.offset == at.offset else None
                highwater = consumer.highwater(tp)  # known once a fetch answered: past the end is final
                if highwater is not None and at.offset >= highwater:
                    return None
            return None

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(**self.options, group_id=None, enable_auto_commit=False)
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


async def fetch_partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The topic's partitions after a metadata refresh (empty when the topic does not exist)."""
    await consumer.topics()  # always a fresh metadata request
    return consumer.partitions_for_topic(topic) or set()


@dataclass
class Explainer:
    """What ``GET /v1/explain`` needs: where decisions are, and the strong model to explain them."""

    taxonomy: Taxonomy
    decisions: RecentDecisions
    fetch: RecordFetcher
    readable_topics: frozenset[str]
    triage_topic: str
    client: anthropic.AsyncAnthropic | None
    model: str
    request: TierRequest
    price: Price
    body_char_limit: int
    metrics: Metrics
    budget: SpendGuard | None = None
    """The router's spend guard: an explanation is Claude spend like a classification, counted in
    the same windows and refused while they are spent."""
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_EXPLANATIONS))

    async def decision_for(self, target: str | RecordAt) -> Decision:
        if isinstance(target, str):
            found = self.decisions.get(target)
            if found is None:
                raise ExplainError(
                    404,
                    f"no decision for that event_id among this replica's last {self.decisions.size} "
                    "(RECENT_DECISIONS); ask by topic, partition and offset of the routed record",
                    "event_id",
                )
            return found
        value = await self.fetch(target)
        if value is None:
            raise ExplainError(404, "no record at that topic, partition and offset", "offset")
        return decision_from_record(value, self.triage_topic)

    def params(self, decision: Decision) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.request.max_tokens,
            "system": [{"type": "text", "text": explanation_system()}],
            "messages": [
                {"role": "user", "content": explanation_user(decision, self.taxonomy, self.body_char_limit)}
            ],
        }
        if self.request.effort is not None:
            params["output_config"] = {"effort": self.request.effort}
        if self.request.thinking is not None:
            params["thinking"] = {"type": self.request.thinking}
        return params

    async def close(self) -> None:
        await self.fetch.close()
        if self.client is not None:
            await self.client.close()

    def count(self, outcome: str) -> None:
        self.metrics.child(self.metrics.api_explanations, outcome).inc()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            target = explain_target(request.query, self.readable_topics)
            decision = await self.decision_for(target)
        except ExplainError as exc:
            self.count("not_found" if exc.status == 404 else "bad_request")
            return exc.response()
        if self.client is None:
            self.count("unavailable")
            return ExplainError(
                503, "explanations need the strong model: ANTHROPIC_API_KEY is unset"
            ).response()
        if self.budget is not None and not self.budget.allows():
            self.count("budget_exhausted")
            return budget_spent(self.budget)
        if self.slots.locked():
            self.count("busy")
            return web.json_response(
                {"error": f"{MAX_CONCURRENT_EXPLANATIONS} explanations are being written; retry shortly"},
                status=503,
                headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
            )
        async with self.slots:
            return await self.stream(request, decision)

    async def stream(self, request: web.Request, decision: Decision) -> web.StreamResponse:
        assert self.client is not None
        async with contextlib.AsyncExitStack() as exits:
            try:
                stream = await exits.enter_async_context(self.client.messages.stream(**self.params(decision)))
            except anthropic.APIError as exc:
                self.count("model_error")
                return model_unreachable(exc)
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",
                }
            )
            await response.prepare(request)
            await response.write(sse("decision", decision_event(decision, self.taxonomy, self.model)))
            try:
                async for text in stream.text_stream:
                    await response.write(sse("text", {"text": text}))
                final = await stream.get_final_message()
            except anthropic.APIError as exc:
                self.count("model_error")
                log.warning("explanation stream failed: %s", type(exc).__name__)
                await response.write(
                    sse("error", {"error": "the model stopped before finishing; retry later"})
                )
            else:
                usage = usage_of(final.usage)
                cost = cost_usd(usage, self.price)
                self.metrics.api_explanation_cost.inc(cost)
                if self.budget is not None:
                    self.budget.record(cost)
                done = {"stop_reason": final.stop_reason, "usage": usage.model_dump(), "cost_usd": cost}
                await response.write(sse("done", done))
                self.count("streamed")
        await response.write_eof()
        return response


def budget_spent(budget: SpendGuard) -> web.Response:
    """503 until the spent window rolls over: which budget, how much, and when it reopens."""
    reopens_in_s = budget.reopens_in_s()
    wait_s = max(1, math.ceil(reopens_in_s)) if reopens_in_s is not None else BUSY_RETRY_AFTER_S
    return web.json_response({"error": budget.describe()}, status=503, headers={"Retry-After": str(wait_s)})


def model_unreachable(exc: anthropic.APIError) -> web.Response:
    """A call refused before streaming: 503 with retry-after when retrying can help, else 502.
    The SDK's message is not passed on (it may quote the request)."""
    status = exc.status_code if isinstance(exc, anthropic.APIStatusError) else None
    log.warning("explanation refused by the Messages API: %s %s", type(exc).__name__, status or "")
    if status is None or status == 429 or status >= 500:
        return web.json_response(
            {"error": "the model is unavailable or busy; retry later"},
            status=503,
            headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
        )
    return web.json_response(
        {"error": f"the Messages API refused the explanation request (HTTP {status})"}, status=502
    )


def build_explainer(
    settings: Settings,
    taxonomy: Taxonomy,
    decisions: RecentDecisions,
    options: Mapping[str, Any],
    metrics: Metrics,
    budget: SpendGuard | None = None,
) -> Explainer:
    """The explainer of a running router: the strong tier's model and its thinking and effort
    settings, with room for prose; without an API key it answers 503 naming the key."""
    model = settings.strong_model
    request = resolve_tier_request(
        "STRONG", model, settings.strong_thinking, settings.strong_effort, None, EXPLANATION_ANSWER_TOKENS
    )
    queues = {settings.queue_topic_prefix + queue for queue in reachable_queues(taxonomy)}
    return Explainer(
        taxonomy=taxonomy,
        decisions=decisions,
        fetch=RecordFetcher(options),
        readable_topics=frozenset({*queues, settings.triage_topic}),
        triage_topic=settings.triage_topic,
        client=make_client(settings) if settings.anthropic_api_key is not None else None,
        model=model,
        request=request,
        price=price_for(model, settings.prices),
        body_char_limit=settings.body_char_limit,
        metrics=metrics,
        budget=budget,
    )
