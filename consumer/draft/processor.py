"""From one queue-topic record to what the drafter publishes: a DraftReply, a triage record, or nothing.

It returns the router's own ``Outcome``, so the router's Kafka loop runs the drafter unchanged: the
same bounded concurrency, per-ticket order, publish-until-acknowledged and commit-after-publish. A
published draft is an outcome of kind ``routed`` (sent on to its destination, the drafts topic).
Every path ends in an outcome: an unreadable record, a failed draft and an unexpected bug become
triage records carrying the original bytes, so the loop never drops or skips a record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from consumer.draft.handlers import select_handler
from consumer.draft.writer import Draft, DraftFailed, DraftPlan, DraftWriter
from consumer.kafka.dedup import RecentIds
from consumer.metrics import SKIP_NO_HANDLER, DraftMetrics
from consumer.processing import (
    SKIP_DUPLICATE,
    InputRecord,
    Outcome,
    Unreadable,
    original_of,
    read_record,
    source_of,
)
from consumer.taxonomy import Handler
from schemas.codec import encode
from schemas.drafts import DraftReply
from schemas.events import ErrorKind, RoutedTicket, TriageRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DraftOutcome(Outcome):
    """An ``Outcome`` with what the drafter's hooks need: the handler and the draft, when there is one."""

    handler: str | None = None
    draft: DraftReply | None = None


@dataclass(frozen=True)
class DraftConfig:
    drafts_topic: str
    triage_topic: str
    max_record_bytes: int
    drafter_version: str


def draft_reply(
    routed: RoutedTicket, plan: DraftPlan, draft: Draft, record: InputRecord, version: str
) -> DraftReply:
    """The event published for one draft (pure)."""
    return DraftReply(
        event_id=routed.ticket.event_id,
        ticket_id=routed.ticket.ticket_id,
        queue=routed.queue,
        handler=plan.handler.name,
        reply=draft.text,
        model=plan.model,
        tier=plan.tier,
        usage=draft.usage,
        cost_usd=draft.cost_usd,
        latency_ms=draft.latency_ms,
        attempts=draft.attempts,
        handler_version=plan.version,
        drafter_version=version,
        source=source_of(record),
    )


class DraftProcessor:
    """Picks the handler for each routed ticket and has the writer draft its reply."""

    def __init__(
        self,
        config: DraftConfig,
        handlers: Sequence[Handler],
        plans: Mapping[str, DraftPlan],
        writer: DraftWriter,
        metrics: DraftMetrics,
        recent: RecentIds | None = None,
    ) -> None:
        self.config = config
        self.handlers = list(handlers)
        self.plans = dict(plans)
        self.writer = writer
        self.metrics = metrics
        self.recent = recent if recent is not None else RecentIds(0)

    async def process(self, record: InputRecord) -> Outcome:
        try:
            return await self._process(record)
        except Exception as exc:  # a bug must not lose the record: it goes to triage with the reason
            log.exception(
                "internal error while drafting", extra={"topic": record.topic, "offset": record.offset}
            )
            return self.triage(record, ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")

    async def _process(self, record: InputRecord) -> Outcome:
        routed = self._read(record)
        if isinstance(routed, Outcome):
            return routed
        # Records of one ticket_id share a key and run one after another, so this check cannot race.
        if self.recent.check_and_add(routed.ticket.event_id):
            return self.skipped(routed, SKIP_DUPLICATE)
        labels = {axis: prediction.label for axis, prediction in routed.classification.axes.items()}
        handler = select_handler(self.handlers, routed.queue, labels)
        if handler is None:
            return self.skipped(routed, SKIP_NO_HANDLER)
        plan = self.plans[handler.name]
        try:
            draft = await self.writer.write(plan, routed)
        except DraftFailed as exc:
            self.metrics.record_draft(
                handler.name, plan.model, exc.kind, exc.latency_ms / 1000, exc.usage, exc.cost_usd
            )
            return self.triage(
                record,
                ErrorKind.DRAFT_FAILED,
                f"no draft by handler {handler.name} ({exc.kind}): {exc}",
                routed=routed,
                plan=plan,
                attempts=exc.attempts,
                latency_ms=exc.latency_ms,
            )
        self.metrics.record_draft(
            handler.name, plan.model, "drafted", draft.latency_ms / 1000, draft.usage, draft.cost_usd
        )
        reply = draft_reply(routed, plan, draft, record, self.config.drafter_version)
        return DraftOutcome(
            "routed",
            self.config.drafts_topic,
            routed.ticket.ticket_id.encode(),
            encode(reply),
            ticket_id=routed.ticket.ticket_id,
            queue=routed.queue,
            ticket=routed.ticket,
            latency_ms=draft.latency_ms,
            handler=handler.name,
            draft=reply,
        )

    def _read(self, record: InputRecord) -> RoutedTicket | Outcome:
        """The routed ticket in the record, or the triage outcome for a record that is not one."""
        routed = read_record(record.value or b"", self.config.max_record_bytes, RoutedTicket, "RoutedTicket")
        if isinstance(routed, Unreadable):
            return self.triage(record, routed.kind, routed.message)
        return routed

    def skipped(self, routed: RoutedTicket, reason: str) -> Outcome:
        self.metrics.child(self.metrics.drafts_skipped, reason).inc()
        return DraftOutcome(
            "skipped",
            None,
            None,
            None,
            ticket_id=routed.ticket.ticket_id,
            queue=routed.queue,
            ticket=routed.ticket,
            skip_reason=reason,
        )

    def triage(
        self,
        record: InputRecord,
        kind: ErrorKind,
        message: str,
        *,
        routed: RoutedTicket | None = None,
        plan: DraftPlan | None = None,
        attempts: int = 0,
        latency_ms: float = 0.0,
    ) -> Outcome:
        """The record to triage with the reason; the original is the queue record, byte for byte."""
        if kind is not ErrorKind.DRAFT_FAILED:
            self.metrics.child(self.metrics.drafts_unreadable, str(kind)).inc()
        ticket_id = routed.ticket.ticket_id if routed is not None else None
        triage = TriageRecord(
            error_kind=kind,
            message=message[:2_000],
            **original_of(record),
            ticket_id=ticket_id,
            event_id=routed.ticket.event_id if routed is not None else None,
            attempts=attempts,
            tiers_tried=[plan.tier] if plan is not None else [],
            partial_classification=routed.classification if routed is not None else None,
            prompt_version=plan.version if plan is not None else None,
            router_version=self.config.drafter_version,
        )
        return DraftOutcome(
            "triaged",
            self.config.triage_topic,
            ticket_id.encode() if ticket_id else record.key,
            encode(triage),
            ticket_id=ticket_id,
            queue=routed.queue if routed is not None else None,
            error_kind=kind,
            triage=triage,
            ticket=routed.ticket if routed is not None else None,
            latency_ms=latency_ms,
            handler=plan.handler.name if plan is not None else None,
        )
