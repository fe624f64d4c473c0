"""``POST /v1/classify``: what the router would do with a ticket, without publishing anything.

The same pipeline and routing rules as the live router, so an integrator sees the queue a ticket
would get; nothing is produced, nothing is remembered for duplicates or corrections. It does spend
model calls, so besides the client's rate limit a replica runs only a few at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, Field

from consumer.classify.pipeline import PipelineResult
from consumer.metrics import Metrics
from consumer.routing import route
from consumer.taxonomy import Taxonomy
from schemas.events import TicketEvent, TokenUsage

CLASSIFY_ROUTE = "/v1/classify"
OUTCOMES = ("routed", "triage", "busy")
"""The ``outcome`` values of ``api_classifications``."""
MAX_CONCURRENT_CLASSIFICATIONS = 8
BUSY_RETRY_AFTER_S = 2

Classify = Callable[[TicketEvent], Awaitable[PipelineResult]]


class ClassifyAnswer(BaseModel):
    """What ``POST /v1/classify`` answers (also its OpenAPI schema)."""

    outcome: Literal["routed", "triage"]
    queue: str = Field(description="The queue, or the triage topic when the router would triage")
    topic: str = Field(description="The Kafka topic the ticket would be published to")
    rule: str | None = Field(default=None, description="The routing rule that chose the queue")
    labels: dict[str, str] = Field(default_factory=dict)
    confidences: dict[str, float] = Field(default_factory=dict)
    low_confidence: bool = False
    reason: str = Field(default="", description="The model's routing reason, or why it would be triaged")
    summary: str = ""
    error_kind: str | None = None
    tiers_tried: list[str]
    escalated: bool
    model_used: str
    usage: TokenUsage
    cost_usd: float
    latency_ms: float


def classify_answer(
    result: PipelineResult, taxonomy: Taxonomy, queue_topic_prefix: str, triage_topic: str, latency_ms: float
) -> dict[str, Any]:
    """The answer body: where the ticket would go, with what labels and confidences, why, through
    which tiers and at what cost; a ticket the router would triage says so with the reason."""
    common: dict[str, Any] = {
        "tiers_tried": result.tiers_tried,
        "escalated": result.escalated,
        "model_used": result.model_used,
        "usage": result.usage,
        "cost_usd": result.cost_usd,
        "latency_ms": round(latency_ms, 3),
    }
    classification = result.classification
    if result.error_kind is not None or classification is None:
        answer = ClassifyAnswer(
            outcome="triage",
            queue=triage_topic,
            topic=triage_topic,
            error_kind=result.error_kind.value if result.error_kind is not None else "internal",
            reason=result.error_message,
            **common,
        )
    else:
        labels = {axis: prediction.label for axis, prediction in classification.axes.items()}
        decision = route(taxonomy.routing, labels)
        answer = ClassifyAnswer(
            outcome="routed",
            queue=decision.queue,
            topic=queue_topic_prefix + decision.queue,
            rule=decision.rule,
            labels=labels,
            confidences={axis: prediction.confidence for axis, prediction in classification.axes.items()},
            low_confidence=result.low_confidence,
            reason=classification.routing_reason,
            summary=classification.summary,
            **common,
        )
    return answer.model_dump(mode="json")


@dataclass
class Classifier:
    classify: Classify
    taxonomy: Taxonomy
    queue_topic_prefix: str
    triage_topic: str
    metrics: Metrics
    slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_CLASSIFICATIONS)
    )

    async def answer(self, ticket: TicketEvent) -> web.Response:
        if self.slots.locked():
            self.metrics.child(self.metrics.api_classifications, "busy").inc()
            return web.json_response(
                {"error": f"{MAX_CONCURRENT_CLASSIFICATIONS} classifications are running; retry shortly"},
                status=503,
                headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
            )
        async with self.slots:
            started = time.perf_counter()
            result = await self.classify(ticket)
            elapsed_ms = (time.perf_counter() - started) * 1000
        body = classify_answer(result, self.taxonomy, self.queue_topic_prefix, self.triage_topic, elapsed_ms)
        self.metrics.child(self.metrics.api_classifications, str(body["outcome"])).inc()
        return web.json_response(body, dumps=lambda value: orjson.dumps(value).decode())
