"""What the deployed router decided, read back from Kafka: the tools' side of every join by event id.

The queue topics hold each routed ticket (``RoutedTicket``) and the triage topic each ticket the
router gave up on (``TriageRecord``); together they are the live router's decisions. Corrections
(``evaluate --corrections``) and shadow decisions (``shadow-report``) are joined with them by
``event_id``. The topics are read from their start to their high watermark at the time of reading
(a snapshot), with no consumer group, so reading changes nothing for the router.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from pydantic import ValidationError

from consumer.config import Settings
from consumer.errors import UserError
from consumer.kafka.reading import caught_up
from consumer.routing import reachable_queues
from consumer.taxonomy import Taxonomy
from producer_tools.kafka_io import Connection, cluster_topics, kafka_errors_as_user_errors, reader
from schemas.codec import DecodeError, decode
from schemas.events import ErrorKind, RoutedTicket, TicketEvent, TierAttempt, TriageRecord

POLL_MS = 200


@dataclass(frozen=True)
class LiveDecision:
    """One event as the live router left it: routed to ``queue`` or sent to triage (``triaged``)."""

    event_id: str
    ticket_id: str
    queue: str
    labels: Mapping[str, str]
    confidences: Mapping[str, float]
    tiers_tried: Sequence[str]
    model: str
    escalated: bool
    triaged: bool
    cost_usd: float
    latency_ms: float
    ticket: TicketEvent | None = None
    error_kind: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    low_confidence: bool = False
    """Routed flagged (an axis under its threshold on the last tier), or triaged for that reason."""
    tier_attempts: Sequence[TierAttempt] = ()
    """What each tier did (model, tokens, cost): the per-model figures of ``evaluate --corrections``."""

    @property
    def decided_by(self) -> str:
        """The tier whose answer counted, or ``triage``."""
        return "triage" if self.triaged else (self.tiers_tried[-1] if self.tiers_tried else "")


def from_routed(routed: RoutedTicket) -> LiveDecision:
    axes = routed.classification.axes
    return LiveDecision(
        event_id=routed.ticket.event_id,
        ticket_id=routed.ticket.ticket_id,
        queue=routed.queue,
        labels={axis: answer.label for axis, answer in axes.items()},
        confidences={axis: answer.confidence for axis, answer in axes.items()},
        tiers_tried=list(routed.tiers_tried),
        model=routed.model_used,
        escalated=routed.escalated,
        triaged=False,
        cost_usd=routed.cost_usd,
        latency_ms=routed.latency_ms,
        ticket=routed.ticket,
        low_confidence=routed.low_confidence,
        tier_attempts=list(routed.tier_attempts),
    )


def from_triage(record: TriageRecord, triage_topic: str) -> LiveDecision | None:
    """A triage record as a decision; None when the event id could not be read (malformed input)."""
    if record.event_id is None:
        return None
    partial = record.partial_classification
    ticket = None
    if record.original_encoding == "utf-8" and not record.original_truncated:
        try:
            ticket = decode(TicketEvent, record.original_value.encode("utf-8"))
        except (DecodeError, ValidationError):
            ticket = None
    return LiveDecision(
        event_id=record.event_id,
        ticket_id=record.ticket_id or "",
        queue=triage_topic,
        labels={axis: answer.label for axis, answer in partial.axes.items()} if partial else {},
        confidences={axis: answer.confidence for axis, answer in partial.axes.items()} if partial else {},
        tiers_tried=list(record.tiers_tried),
        model="",
        escalated=len(record.tiers_tried) > 1,
        triaged=True,
        cost_usd=0.0,
        latency_ms=0.0,
        ticket=ticket,
        error_kind=record.error_kind.value,
        low_confidence=record.error_kind is ErrorKind.LOW_CONFIDENCE,
    )


def decision_of(topic: str, value: bytes | None, triage_topic: str) -> LiveDecision | None:
    """A record of a queue or the triage topic as a decision; None for what is neither."""
    if value is None:
        return None
    try:
        if topic == triage_topic:
            return from_triage(decode(TriageRecord, value), triage_topic)
        return from_routed(decode(RoutedTicket, value))
    except (DecodeError, ValidationError):
        return None


def latest_by_event(decisions: Iterable[LiveDecision | None]) -> dict[str, LiveDecision]:
    """The last decision per event (a replayed or redelivered event keeps its latest outcome)."""
    found: dict[str, LiveDecision] = {}
    for decision in decisions:
        if decision is not None:
            found[decision.event_id] = decision
    return found


def live_topics(settings: Settings, taxonomy: Taxonomy) -> list[str]:
    """Every queue topic the taxonomy can reach (with ``QUEUE_TOPIC_PREFIX``) and the triage topic."""
    queues = [settings.queue_topic_prefix + queue for queue in reachable_queues(taxonomy)]
    return [*queues, settings.triage_topic]


async def read_to_end(connection: Connection, topics: Sequence[str]) -> list[tuple[str, bytes | None]]:
    """(topic, value) of every record of the ``topics`` that exist, from the start to the high
    watermark seen while reading (the only end figure right on both Kafka and Tansu)."""
    existing = await cluster_topics(connection)
    partitions = [TopicPartition(topic, p) for topic in topics if topic in existing for p in existing[topic]]
    if not partitions:
        return []
    records: list[tuple[str, bytes | None]] = []
    with kafka_errors_as_user_errors(connection):
        async with reader(connection) as consumer:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            async with asyncio.timeout(max(connection.timeout_s, 1.0) * 30):
                while not await caught_up(consumer, partitions):
                    batch = await consumer.getmany(timeout_ms=POLL_MS)
                    for tp in sorted(batch):
                        records += [(record.topic, record.value) for record in batch[tp]]
    return records


async def read_live_decisions(
    connection: Connection, settings: Settings, taxonomy: Taxonomy
) -> dict[str, LiveDecision]:
    """The live router's latest decision per event id, from its queue topics and triage topic."""
    try:
        records = await read_to_end(connection, live_topics(settings, taxonomy))
    except TimeoutError:
        raise UserError(
            f"reading the queue topics from {connection.bootstrap} did not finish in time"
        ) from None
    return latest_by_event(decision_of(topic, value, settings.triage_topic) for topic, value in records)
