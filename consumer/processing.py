"""From one input record to what must be published: a routed ticket, a triage record, or nothing.

Every path ends in an ``Outcome``: bad bytes, a failed model and an unexpected bug all become
triage records carrying the original bytes, so the Kafka loop never has a reason to drop or
skip a record. Publishing is the loop's job; this module does no Kafka I/O.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

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
    TriageRecord,
)

log = logging.getLogger(__name__)

TRIAGE_ORIGINAL_CAP = 64 * 1024


@dataclass(frozen=True)
class InputRecord:
    """The parts of a Kafka record the router uses (kept free of client types for testing)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Outcome:
    kind: Literal["routed", "triaged", "skipped"]
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


@dataclass(frozen=True)
class ProcessorConfig:
    triage_topic: str
    max_event_bytes: int
    queue_topic_prefix: str
    router_version: str
    prompt_version: str


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
            return await self._process(record)
        except Exception as exc:  # a bug must not lose the ticket: it goes to triage with the reason
            log.exception("internal error while processing record", extra={"offset": record.offset})
            return self.triage(record, ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")

    async def _process(self, record: InputRecord) -> Outcome:
        raw = record.value or b""
        if len(raw) > self.config.max_event_bytes:
            return self.triage(
                record,
                ErrorKind.TOO_LARGE,
                f"record is {len(raw)} bytes; the limit is {self.config.max_event_bytes}",
            )
        try:
            document = parse_json(raw)
        except DecodeError as exc:
            return self.triage(record, ErrorKind.MALFORMED_JSON, str(exc))
        try:
            ticket = TicketEvent.model_validate(document)
        except ValidationError as exc:
            return self.triage(
                record, ErrorKind.SCHEMA_INVALID, describe_validation_error(exc), document=document
            )
        # Records of one ticket_id share a key and run one after another, so this check cannot race.
        if self.recent.check_and_add(ticket.event_id):
            return self.skipped(ticket, "duplicate")
        if ticket.author_role is AuthorRole.AGENT:
            return self.skipped(ticket, "agent_reply")
        started = time.perf_counter()
        result = await self.pipeline.classify(ticket)
        if result.error_kind is not None or result.classification is None:
            return self.triage(
                record,
                result.error_kind or ErrorKind.INTERNAL,
                result.error_message,
                ticket=ticket,
                result=result,
            )
        return self.routed(record, ticket, result, (time.perf_counter() - started) * 1000)

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
            source=SourcePosition(topic=record.topic, partition=record.partition, offset=record.offset),
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
    ) -> Outcome:
        raw = record.value or b""
        truncated = len(raw) > TRIAGE_ORIGINAL_CAP
        text, encoding = bytes_for_record(raw[:TRIAGE_ORIGINAL_CAP] if truncated else raw)
        ticket_id = ticket.ticket_id if ticket else _string_field(document, "ticket_id")
        triage = TriageRecord(
            error_kind=kind,
            message=message[:2_000],
            original_value=text,
            original_encoding=encoding,
            original_size=len(raw),
            original_truncated=truncated,
            original_key=bytes_for_record(record.key)[0] if record.key is not None else None,
            source=SourcePosition(topic=record.topic, partition=record.partition, offset=record.offset),
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
        )


def _string_field(document: object, name: str) -> str | None:
    """A best-effort id from a schema-invalid document, so triage records stay searchable."""
    if isinstance(document, dict):
        value = document.get(name)
        if isinstance(value, str) and 0 < len(value) <= 200:
            return value
    return None
