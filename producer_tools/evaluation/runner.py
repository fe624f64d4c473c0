"""Runs the service's own pipeline over labeled tickets, concurrently and within a bound.

The pipeline is built by ``consumer.service.build_tiers`` / ``build_pipeline`` from ``Settings``
so what is measured is what the router runs: the same tiers, thresholds, escalation, language
routing and deadline. Only the Kafka loop around it is left out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from consumer.classify.base import Tier
from consumer.classify.local import LocalTier
from consumer.classify.pipeline import Pipeline, PipelineResult
from consumer.config import Settings
from consumer.service import build_pipeline, build_tiers
from consumer.taxonomy import Taxonomy
from producer_tools.evaluation.dataset import LabeledTicket
from producer_tools.evaluation.metrics import NO_ANSWER
from schemas.events import TokenUsage

LOCAL_PREDICT_BATCH = 512
CLAUDE_TIERS = ("fast", "strong")


@dataclass(frozen=True)
class ModelCall:
    """One Claude tier's work on one ticket: its model, how it ended, and what it was billed."""

    tier: str
    model: str
    outcome: str
    requests: int
    usage: TokenUsage
    cost_usd: float


@dataclass(frozen=True)
class TicketOutcome:
    """What one pipeline run made of one ticket, reduced to what the report needs."""

    labels: dict[str, str]
    confidences: dict[str, float]
    error_kind: str | None
    low_confidence: bool
    tiers_tried: list[str]
    final_tier: str | None
    cost_usd: float
    latency_ms: float
    model_calls: tuple[ModelCall, ...] = ()
    answer_tier: str | None = None
    """The tier whose answer ``labels`` and ``confidences`` are, routed or not (``final_tier`` is
    None for a triaged ticket, but a low-confidence answer still came from a tier, and calibrating
    a threshold needs to know which)."""

    @property
    def routed(self) -> bool:
        return self.error_kind is None

    @property
    def escalated(self) -> bool:
        return len(self.tiers_tried) > 1

    def label_tuple(self, axes: Sequence[str]) -> tuple[str, ...]:
        return tuple(self.labels[axis] for axis in axes)


@dataclass(frozen=True)
class AxisAnswer:
    label: str
    confidence: float


@dataclass
class FoldRun:
    """The runs (one per repeat) over one set of tickets, and the local tier's own answers."""

    runs: list[list[TicketOutcome]]
    local_answers: list[dict[str, AxisAnswer]] | None
    train_s: float
    eval_s: float
    tiers: list[str] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)


def outcome_of(result: PipelineResult, axes: Sequence[str], latency_ms: float) -> TicketOutcome:
    """Flatten a PipelineResult; a ticket without a classification answers NO_ANSWER on every axis.

    The classification is kept for triaged low-confidence tickets too: it is what the last tier
    said, and accuracy counts it, while the routed/triaged split shows what happened to it.
    """
    predictions = result.classification.axes if result.classification is not None else {}
    labels = {axis: predictions[axis].label if axis in predictions else NO_ANSWER for axis in axes}
    confidences = {axis: predictions[axis].confidence if axis in predictions else 0.0 for axis in axes}
    answered = [a.tier for a in result.attempts if a.outcome in ("answered", "low_confidence")]
    return TicketOutcome(
        labels=labels,
        confidences=confidences,
        error_kind=str(result.error_kind) if result.error_kind is not None else None,
        low_confidence=result.low_confidence,
        tiers_tried=result.tiers_tried,
        final_tier=answered[-1] if answered and result.error_kind is None else None,
        cost_usd=result.cost_usd,
        latency_ms=latency_ms,
        model_calls=tuple(
            ModelCall(a.tier, a.model, a.outcome, a.attempts, a.usage, a.cost_usd)
            for a in result.attempts
            if a.tier in CLAUDE_TIERS
        ),
        answer_tier=answered[-1] if answered else None,
    )


async def classify_all(
    pipeline: Pipeline, items: Sequence[LabeledTicket], axes: Sequence[str], concurrency: int
) -> list[TicketOutcome]:
    """Every ticket through the pipeline, at most ``concurrency`` at a time (as MAX_IN_FLIGHT does).

    Latency is measured per ticket once it holds a slot, so it is the pipeline's time (including
    the local tier's micro-batching and any retries), not time spent queueing in this tool.
    """
    semaphore = asyncio.Semaphore(concurrency)

    async def one(item: LabeledTicket) -> TicketOutcome:
        async with semaphore:
            started = time.perf_counter()
            result = await pipeline.classify(item.ticket)
            return outcome_of(result, axes, (time.perf_counter() - started) * 1000)

    return list(await asyncio.gather(*(one(item) for item in items)))


def local_answers(tiers: Sequence[Tier], texts: Sequence[str]) -> list[dict[str, AxisAnswer]] | None:
    """The local tier's own answer for every ticket, whatever the pipeline then did with it.

    The coverage curve needs the local tier's confidence on all tickets, including those a later
    tier decided; the fitted model inside the pipeline's LocalTier is asked directly, in batches.
    """
    local = next((tier for tier in tiers if isinstance(tier, LocalTier)), None)
    if local is None:
        return None
    answers: list[dict[str, AxisAnswer]] = []
    for start in range(0, len(texts), LOCAL_PREDICT_BATCH):
        for prediction in local.local_model.predict(texts[start : start + LOCAL_PREDICT_BATCH]):
            answers.append({axis: AxisAnswer(p.label, p.confidence) for axis, p in prediction.axes.items()})
    return answers


async def run_pipeline(
    settings: Settings, taxonomy: Taxonomy, items: Sequence[LabeledTicket], repeat: int, concurrency: int
) -> FoldRun:
    """Build the service's tiers (training the local one) and run every ticket ``repeat`` times."""
    started = time.perf_counter()
    tiers = build_tiers(settings, taxonomy)
    train_s = time.perf_counter() - started
    pipeline = build_pipeline(settings, taxonomy, tiers)
    axes = taxonomy.axis_names
    started = time.perf_counter()
    try:
        runs = [await classify_all(pipeline, items, axes, concurrency) for _ in range(repeat)]
    finally:
        await pipeline.close()
    eval_s = time.perf_counter() - started
    return FoldRun(
        runs=runs,
        local_answers=local_answers(tiers, [item.text for item in items]),
        train_s=train_s,
        eval_s=eval_s,
        tiers=list(settings.effective_tiers),
        models={tier: settings.model_for(tier) for tier in settings.effective_tiers if tier in CLAUDE_TIERS},
    )
