"""From one input record to what must be published: a routed ticket, a triage record, or nothing.

Every path ends in an ``Outcome``: bad bytes, a failed model and an unexpected bug all become
triage records carrying the original bytes, so the Kafka loop never has a reason to drop or
skip a record. Publishing is the loop's job; this module does no Kafka I/O.

A shadow (``ticket-router consume --shadow NAME``) runs the same processing; ``as_shadow`` then
turns the outcome into the ``ShadowDecision`` it publishes instead, so what a candidate would do is
decided by exactly the code that decides for the live router.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from consumer import __version__
from consumer.classify.pipeline import Pipeline, PipelineResult
from consumer.kafka.dedup import RecentIds
from consumer.routing import route
from consumer.taxonomy import Taxonomy
from schemas.codec import DecodeError, bytes_for_record, describe_validation_error, encode, parse_json
from schemas.events import (
    AuthorRole,
    ErrorKind,
    EventType,
    RoutedTicket,
    SourcePosition,
    TicketEvent,
    TokenUsage,
    TriageRecord,
)
from schemas.shadow import ShadowDecision, shadow_topic

if TYPE_CHECKING:
    from consumer.config import Settings

log = logging.getLogger(__name__)

TRIAGE_ORIGINAL_CAP = 64 * 1024
SKIP_DUPLICATE = "duplicate"
SKIP_AGENT_REPLY = "agent_reply"
SKIP_REASONS = (SKIP_DUPLICATE, SKIP_AGENT_REPLY)
OutcomeKind = Literal["routed", "triaged", "skipped"]


@dataclass(frozen=True)
class InputRecord:
    """The parts of a Kafka record the router uses (kept free of client types for testing)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Unreadable:
    """A record that is not what a consumer reads: the triage kind, why, and its JSON if any."""

    kind: ErrorKind
    message: str
    document: object = None


def read_record(raw: bytes, max_bytes: int, model: type[Model], name: str = "") -> Model | Unreadable:
    """The record as ``model``, or why not: too large, not JSON, or not the schema (``name``
    prefixes the schema message, "not a RoutedTicket: ...")."""
    if len(raw) > max_bytes:
        return Unreadable(ErrorKind.TOO_LARGE, f"record is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        document = parse_json(raw)
    except DecodeError as exc:
        return Unreadable(ErrorKind.MALFORMED_JSON, str(exc))
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        prefix = f"not a {name}: " if name else ""
        return Unreadable(ErrorKind.SCHEMA_INVALID, prefix + describe_validation_error(exc), document)


def source_of(record: InputRecord) -> SourcePosition:
    return SourcePosition(topic=record.topic, partition=record.partition, offset=record.offset)


def original_of(record: InputRecord) -> dict[str, Any]:
    """A TriageRecord's fields that keep the record itself: its bytes (cut at 64 KiB), key and position."""
    raw = record.value or b""
    truncated = len(raw) > TRIAGE_ORIGINAL_CAP
    text, encoding = bytes_for_record(raw[:TRIAGE_ORIGINAL_CAP] if truncated else raw)
    return {
        "original_value": text,
        "original_encoding": encoding,
        "original_size": len(raw),
        "original_truncated": truncated,
        "original_key": bytes_for_record(record.key)[0] if record.key is not None else None,
        "source": source_of(record),
    }


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    topic: str | None
    key: bytes | None
    value: bytes | None
    ticket_id: str | None = None
    queue: str | None = None
    error_kind: ErrorKind | None = None
    routed: RoutedTicket | None = None
    triage: TriageRecord | None = None
    ticket: TicketEvent | None = None
    result: PipelineResult | None = None
    skip_reason: str | None = None
    latency_ms: float = 0.0
    """Time spent classifying (0 when nothing was classified): the ShadowDecision's latency."""


@dataclass(frozen=True)
class ProcessorConfig:
    triage_topic: str
    max_event_bytes: int
    queue_topic_prefix: str
    router_version: str
    prompt_version: str
    shadow: str | None = None
    """A shadow's name: every outcome is published as a ShadowDecision to ``shadow.NAME`` instead."""

    @classmethod
    def of(cls, settings: Settings, prompt_version: str, shadow: str | None = None) -> ProcessorConfig:
        """The router's (and a backfill's) configuration from its settings."""
        return cls(
            triage_topic=settings.triage_topic,
            max_event_bytes=settings.max_event_bytes,
            queue_topic_prefix=settings.queue_topic_prefix,
            router_version=__version__,
            prompt_version=prompt_version,
            shadow=shadow,
        )


class RecordProcessor:
    def __init__(
        self, config: ProcessorConfig, taxonomy: Taxonomy, pipeline: Pipeline, recent: RecentIds | None = None
    ) -> None:
        self.config = config
        self.taxonomy = taxonomy
        self.pipeline = pipeline
        self.recent = recent if recent is not None else RecentIds(0)

    async def process(self, record: InputRecord) -> Outcome:
        try:
            outcome = await self._process(record)
        except Exception as exc:  # a bug must not lose the ticket: it goes to triage with the reason
            log.exception("internal error while processing record", extra={"offset": record.offset})
            outcome = self.triage(record, ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        return outcome if self.config.shadow is None else as_shadow(outcome, self.config.shadow)

    async def _process(self, record: InputRecord) -> Outcome:
        ticket = read_record(record.value or b"", self.config.max_event_bytes, TicketEvent)
        if isinstance(ticket, Unreadable):
            return self.triage(record, ticket.kind, ticket.message, document=ticket.document)
        # Records of one ticket_id share a key and run one after another, so this check cannot race.
        if self.recent.check_and_add(ticket.event_id):
            return self.skipped(ticket, SKIP_DUPLICATE)
        if ticket.author_role is AuthorRole.AGENT:
            return self.skipped(ticket, SKIP_AGENT_REPLY)
        started = time.perf_counter()
        result = await self.pipeline.classify(ticket)
        latency_ms = (time.perf_counter() - started) * 1000
        if result.error_kind is not None or result.classification is None:
            return self.triage(
                record,
                result.error_kind or ErrorKind.INTERNAL,
                result.error_message,
                ticket=ticket,
                result=result,
                latency_ms=latency_ms,
            )
        return self.routed(record, ticket, result, latency_ms)

    @staticmethod
    def skipped(ticket: TicketEvent, reason: str) -> Outcome:
        return Outcome(
            "skipped", None, None, None, ticket_id=ticket.ticket_id, ticket=ticket, skip_reason=reason
        )

    def routed(
        self, record: InputRecord, ticket: TicketEvent, result: PipelineResult, latency_ms: float
    ) -> Outcome:
        assert result.classification is not None
        labels = {axis: p.label for axis, p in result.classification.axes.items()}
        decision = route(self.taxonomy.routing, labels)
        routed = RoutedTicket(
            ticket=ticket,
            classification=result.classification,
            queue=decision.queue,
            rule=decision.rule,
            model_used=result.model_used,
            tiers_tried=result.tiers_tried,
            escalated=result.escalated,
            reclassification=ticket.event_type is EventType.MESSAGE_ADDED,
            low_confidence=result.low_confidence,
            tier_attempts=result.attempts,
            latency_ms=round(latency_ms, 3),
            usage=result.usage,
            cost_usd=result.cost_usd,
            prompt_version=self.config.prompt_version,
            router_version=self.config.router_version,
            source=source_of(record),
        )
        return Outcome(
            "routed",
            self.config.queue_topic_prefix + decision.queue,
            ticket.ticket_id.encode(),
            encode(routed),
            ticket_id=ticket.ticket_id,
            queue=decision.queue,
            routed=routed,
            ticket=ticket,
            result=result,
            latency_ms=routed.latency_ms,
        )

    def triage(
        self,
        record: InputRecord,
        kind: ErrorKind,
        message: str,
        *,
        ticket: TicketEvent | None = None,
        result: PipelineResult | None = None,
        document: object = None,
        latency_ms: float = 0.0,
    ) -> Outcome:
        ticket_id = ticket.ticket_id if ticket else _string_field(document, "ticket_id")
        triage = TriageRecord(
            error_kind=kind,
            message=message[:2_000],
            **original_of(record),
            ticket_id=ticket_id,
            event_id=ticket.event_id if ticket else _string_field(document, "event_id"),
            attempts=result.call_attempts if result else 0,
            tiers_tried=result.tiers_tried if result else [],
            partial_classification=result.classification if result else None,
            prompt_version=self.config.prompt_version if result else None,
            router_version=self.config.router_version,
        )
        key = ticket_id.encode() if ticket_id else record.key
        return Outcome(
            "triaged",
            self.config.triage_topic,
            key,
            encode(triage),
            ticket_id=ticket_id,
            error_kind=kind,
            triage=triage,
            ticket=ticket,
            result=result,
            latency_ms=round(latency_ms, 3),
        )


def as_shadow(outcome: Outcome, name: str) -> Outcome:
    """The outcome as the shadow ``name`` publishes it: its ShadowDecision to ``shadow.NAME``.

    Everything else is kept (the routed ticket or triage record it would have published, the
    pipeline result), so the metrics, logs and corrections hooks see what they see in the live
    router; only where the record goes changes. A skipped record publishes nothing, as live.
    """
    decision = shadow_decision(outcome, name)
    if decision is None:
        return replace(outcome, topic=None, key=None, value=None)
    return replace(outcome, topic=shadow_topic(name), value=encode(decision))


def shadow_decision(outcome: Outcome, name: str) -> ShadowDecision | None:
    """What the router would have published, as a ShadowDecision; None for a skipped record."""
    if outcome.kind == "routed" and outcome.routed is not None:
        routed = outcome.routed
        return ShadowDecision(
            shadow=name,
            outcome="routed",
            ticket_id=routed.ticket.ticket_id,
            event_id=routed.ticket.event_id,
            queue=routed.queue,
            rule=routed.rule,
            classification=routed.classification,
            model_used=routed.model_used,
            tiers_tried=routed.tiers_tried,
            escalated=routed.escalated,
            low_confidence=routed.low_confidence,
            tier_attempts=routed.tier_attempts,
            usage=routed.usage,
            cost_usd=routed.cost_usd,
            latency_ms=routed.latency_ms,
            prompt_version=routed.prompt_version,
            router_version=routed.router_version,
            decided_at=routed.classified_at,
            source=routed.source,
        )
    if outcome.kind == "triaged" and outcome.triage is not None:
        triage, result = outcome.triage, outcome.result
        return ShadowDecision(
            shadow=name,
            outcome="triaged",
            ticket_id=triage.ticket_id,
            event_id=triage.event_id,
            classification=triage.partial_classification,
            error_kind=triage.error_kind,
            message=triage.message,
            model_used=result.model_used if result else "",
            tiers_tried=triage.tiers_tried,
            escalated=result.escalated if result else False,
            low_confidence=result.low_confidence if result else False,
            tier_attempts=result.attempts if result else [],
            usage=result.usage if result else TokenUsage(),
            cost_usd=result.cost_usd if result else 0.0,
            latency_ms=outcome.latency_ms,
            prompt_version=triage.prompt_version,
            router_version=triage.router_version,
            decided_at=triage.triaged_at,
            source=triage.source,
        )
    return None


def _string_field(document: object, name: str) -> str | None:
    """A best-effort id from a schema-invalid document, so triage records stay searchable."""
    if isinstance(document, dict):
        value = document.get(name)
        if isinstance(value, str) and 0 < len(value) <= 200:
            return value
    return None
