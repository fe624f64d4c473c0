"""A person's decision on a record, as the events it publishes, and who wins when two decide at once.

Pure. The I/O around it (``app.Console.decide``) does, in order:

1. produce a *claim* mark, keyed by the record's ``topic/partition/offset``, to the decisions topic;
2. wait until this replica's reader folds that mark into ``DoneState``: the first mark of a record
   in partition order wins, and every replica reads the same order, so all of them agree;
3. only the winner publishes the ``RoutedTicket`` and the ``Correction``, then a *published* mark
   with the same ``mark_id``.

The topic is compacted (one record per key survives), so the last record of a key must state the
outcome: a published mark is written after its claim; a loser that finds the record already
published writes a copy of the winner's published mark after its own claim (``Verdict.repair``).
A loser that finds it only claimed writes nothing, since the winner's published mark still comes
after its claim.

A winner can stop between its claim and its published mark. So that such a record is not stuck,
a claim is a lease: a claim made ``CLAIM_TIMEOUT_S`` or more after an unconfirmed claim (by the
marks' own ``at``, so every replica folds the same answer) takes the record over
(``Verdict.superseded``). Routing stays "once" because

- a winner starts publishing only within ``PUBLISH_WITHIN_S`` of its claim and gives up otherwise,
  and the producer gives up on a send after its request timeout (40 s), so nothing of the first
  winner lands later than about ``PUBLISH_WITHIN_S`` + 80 s after its claim: far inside
  ``CLAIM_TIMEOUT_S`` (clocks of the replicas must agree to within a few minutes);
- the new winner publishes only after its reader has read every queue topic to its end as of
  after the takeover (``ConsoleReader.read_queues_through``) and found no ticket a person routed
  with this ticket's ``event_id`` (``ConsoleReader.human_routed``). If it finds one, it records that
  route as the record's published mark and publishes nothing.

A published mark settles a record whatever claim it follows (it is written only after its events
were sent), so a first winner's late confirmation is not lost. What can be doubled is the
``Correction`` of a winner that stopped after publishing it but before routing or confirming;
a route cannot.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from consumer.routing import RouteDecision, route
from consumer.taxonomy import Taxonomy
from schemas.corrections import Correction, CorrectionSource
from schemas.events import (
    AxisPrediction,
    Classification,
    EventType,
    RoutedTicket,
    SourcePosition,
    TicketEvent,
    TokenUsage,
)

HUMAN_TIER = "human"
CLAIM_TIMEOUT_S = 600.0
"""An unconfirmed claim this old (by the marks' ``at``) can be taken over; see the module doc."""
PUBLISH_WITHIN_S = 60.0
"""A winner publishes only this soon after its claim; later it gives up and publishes nothing."""


class DecisionError(ValueError):
    """A decision form that cannot be applied; the message names the axis and the allowed labels."""


def record_key(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


def chosen_labels(form: Mapping[str, object], taxonomy: Taxonomy) -> dict[str, str]:
    """One label per axis from a submitted form (fields ``label.<axis>``), each one of the taxonomy's."""
    labels: dict[str, str] = {}
    for name, axis in taxonomy.axes.items():
        value = form.get(f"label.{name}")
        if not isinstance(value, str) or value not in axis.labels:
            allowed = ", ".join(axis.labels)
            raise DecisionError(f"axis {name!r}: choose one of {allowed} (got {value!r})")
        labels[name] = value
    return labels


def human_route(taxonomy: Taxonomy, labels: Mapping[str, str]) -> RouteDecision:
    """The queue the taxonomy's rules give these labels: a person picks labels, never a queue."""
    return route(taxonomy.routing, labels)


def model_used_by(actor: str) -> str:
    return f"{HUMAN_TIER}:{actor}"


def human_routed_ticket(
    ticket: TicketEvent,
    labels: Mapping[str, str],
    decision: RouteDecision,
    actor: str,
    source: SourcePosition,
    versions: tuple[str, str],
    now: datetime,
) -> RoutedTicket:
    """What the queue's consumers read for a ticket a person decided: every axis at confidence 1,
    ``model_used`` ``human:<actor>``, ``tiers_tried`` ``["human"]``; ``versions`` is
    (prompt_version, router_version)."""
    return RoutedTicket(
        ticket=ticket,
        classification=Classification(
            axes={axis: AxisPrediction(label=label, confidence=1.0) for axis, label in labels.items()},
            routing_reason=f"decided by {actor} in the triage console",
        ),
        queue=decision.queue,
        rule=decision.rule,
        model_used=model_used_by(actor),
        tiers_tried=[HUMAN_TIER],
        escalated=False,
        reclassification=ticket.event_type == EventType.MESSAGE_ADDED,
        latency_ms=0.0,
        usage=TokenUsage(),
        cost_usd=0.0,
        prompt_version=versions[0],
        router_version=versions[1],
        classified_at=now,
        source=source,
    )


def human_correction(ticket: TicketEvent, labels: Mapping[str, str], actor: str, now: datetime) -> Correction:
    """The correction a decision teaches: every axis, with the text, so any replica can learn it."""
    return Correction(
        ticket_id=ticket.ticket_id,
        event_id=ticket.event_id,
        labels=dict(labels),
        source=CorrectionSource.TRIAGE,
        actor=actor,
        corrected_at=now,
        subject=ticket.subject,
        body=ticket.body,
        language=ticket.language,
    )


# -- the done-state ------------------------------------------------------------------------------


class DoneMark(BaseModel):
    """One record of the decisions topic (key = ``record``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    record: str
    state: Literal["claimed", "published"]
    mark_id: str
    actor: str
    labels: dict[str, str]
    queue: str
    at: AwareDatetime


def new_mark_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Verdict:
    """What folding one mark meant: whether it is (part of) the winning decision, the record's
    state after it, and a mark the claimant of a losing claim must write (see the module doc)."""

    won: bool
    current: DoneMark
    repair: DoneMark | None = None
    superseded: DoneMark | None = None
    """The stale claim this winning claim took over: its claimant may have published before stopping."""


@dataclass
class DoneState:
    """The decided records, folded from the decisions topic in partition order."""

    marks: dict[str, DoneMark] = field(default_factory=dict)

    def fold(self, mark: DoneMark) -> Verdict:
        current = self.marks.get(mark.record)
        if current is None or (current.state == "claimed" and mark.state == "published"):
            self.marks[mark.record] = mark  # the first mark, or a confirmation (its own or a late one)
            return Verdict(True, mark)
        if current.mark_id == mark.mark_id:  # a copy of a mark already folded
            return Verdict(True, current)
        if mark.state == "claimed" and current.state == "claimed" and stale(current, mark.at):
            self.marks[mark.record] = mark
            return Verdict(True, mark, superseded=current)
        repair = current if mark.state == "claimed" and current.state == "published" else None
        return Verdict(False, current, repair)

    def get(self, record: str) -> DoneMark | None:
        return self.marks.get(record)


def retake_at(claim: DoneMark) -> datetime:
    """When an unconfirmed claim can be taken over by another."""
    return claim.at + timedelta(seconds=CLAIM_TIMEOUT_S)


def stale(claim: DoneMark, now: datetime) -> bool:
    """Whether a claim made at ``now`` takes an unconfirmed ``claim`` over."""
    return now >= retake_at(claim)
