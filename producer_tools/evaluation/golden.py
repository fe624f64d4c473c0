"""A production golden set: the corrections people made, joined with what the live router decided.

``ticket-tools evaluate --corrections`` scores the router as deployed, on the tickets people
looked at. Nothing is classified again: the prediction of an event is the live decision read back
from the queue and triage topics (``producer_tools.decisions``), and its gold labels are those
same labels with the correction's on top. A person who moved a ticket to billing said nothing
about its urgency, so an axis the correction does not name is taken as confirmed: the figures are
an upper bound on the axes people rarely correct. A queue override is the gold queue.

Everything here is a plain function over plain data (the Kafka reading is in ``evaluate``), and
the result is the ``LabeledTicket`` / ``TicketOutcome`` pairs that ``summarize`` already turns
into the usual report, plus the figures of the join itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from consumer.learn.corrections import QUEUE_FIELD
from consumer.taxonomy import Taxonomy
from producer_tools.decisions import LiveDecision
from producer_tools.evaluation.dataset import (
    DEFAULT_ACCOUNT_TIER,
    DEFAULT_CHANNEL,
    UNKNOWN_GROUP,
    LabeledTicket,
)
from producer_tools.evaluation.metrics import NO_ANSWER
from producer_tools.evaluation.runner import CLAUDE_TIERS, ModelCall, TicketOutcome
from producer_tools.evaluation.summary import TRIAGE_GROUP, correctness, group_report, queue_of
from schemas.corrections import Correction
from schemas.events import AccountTier, Channel, EventType, TicketEvent

ANSWERED = ("answered", "low_confidence")
"""Tier attempt outcomes that produced labels (the others failed and said nothing)."""
TIER_ORDER = ("local", *CLAUDE_TIERS)
LABEL_OUTSIDE_TAXONOMY = "label_outside_taxonomy"
AXIS_WITHOUT_LABEL = "axis_without_label"


@dataclass(frozen=True)
class Window:
    """Which corrections count, by ``corrected_at``: ``since`` included, ``until`` excluded."""

    since: datetime | None = None
    until: datetime | None = None

    def holds(self, moment: datetime) -> bool:
        return (self.since is None or moment >= self.since) and (self.until is None or moment < self.until)


@dataclass(frozen=True)
class Scored:
    """One corrected event, ready for ``summarize``: what it should have been, what it was."""

    item: LabeledTicket
    outcome: TicketOutcome
    gold_queue: str
    live_queue: str
    decided_by: str
    changed: bool


@dataclass
class GoldenSet:
    """The scored events in topic order of their corrections, and the join's own figures."""

    scored: list[Scored]
    join: dict[str, Any]

    @property
    def items(self) -> list[LabeledTicket]:
        return [s.item for s in self.scored]

    @property
    def outcomes(self) -> list[TicketOutcome]:
        return [s.outcome for s in self.scored]

    @property
    def queues(self) -> tuple[list[str], list[str]]:
        """(gold, live) queue per event, for ``summarize(queues=...)``."""
        return [s.gold_queue for s in self.scored], [s.live_queue for s in self.scored]


# --- the corrections ---------------------------------------------------------------------------


def parse_corrections(values: Iterable[bytes | None]) -> tuple[list[Correction], int]:
    """The topic's records as corrections, in order, and how many are not one (counted, not fatal:
    one bad record from some other producer must not hide a month of good ones)."""
    corrections: list[Correction] = []
    invalid = 0
    for value in values:
        try:
            corrections.append(Correction.model_validate_json(value or b""))
        except ValidationError:
            invalid += 1
    return corrections, invalid


def distinct(corrections: Iterable[Correction]) -> tuple[list[Correction], int]:
    """The first record of each ``correction_id`` and how many records repeated one.

    The router that routed an event republishes each text-less correction with the ticket's text
    and its own labels under the same id (so other replicas can learn it); that copy, or a
    producer's retry, is the same correction and must not be counted twice.
    """
    first: dict[str, Correction] = {}
    repeats = 0
    for correction in corrections:
        if correction.correction_id in first:
            repeats += 1
        else:
            first[correction.correction_id] = correction
    return list(first.values()), repeats


def latest_per_event(corrections: Iterable[Correction]) -> tuple[dict[str, Correction], int]:
    """The latest correction of each event by ``corrected_at`` (a tie goes to the later record),
    and how many earlier ones it replaced: a second look at a ticket is the better informed one,
    and the router's learner also keeps only the latest example of an event."""
    latest: dict[str, Correction] = {}
    superseded = 0
    for correction in corrections:
        known = latest.get(correction.event_id)
        if known is not None:
            superseded += 1
            if correction.corrected_at < known.corrected_at:
                continue
        latest[correction.event_id] = correction
    return latest, superseded


# --- one corrected event -----------------------------------------------------------------------


def outside_taxonomy(correction: Correction, taxonomy: Taxonomy) -> list[str]:
    """``axis=label`` for each corrected label the taxonomy does not have (the router could not
    have answered it: the correction was made against another taxonomy file)."""
    return [
        f"{axis}={label}"
        for axis, label in correction.labels.items()
        if axis not in taxonomy.axes or label not in taxonomy.axes[axis].labels
    ]


def gold_labels(decision: LiveDecision, correction: Correction, axes: Sequence[str]) -> dict[str, str] | None:
    """The live labels with the correction's on top; None when an axis has no label from either
    (a ticket triaged without any answer, corrected on some axes only)."""
    labels = {**decision.labels, **correction.labels}
    if any(axis not in labels for axis in axes):
        return None
    return {axis: labels[axis] for axis in axes}


def answering_tier(decision: LiveDecision) -> str | None:
    """The tier whose labels the decision carries: the last attempt that answered, else (a triage
    record lists no attempts) the last tier tried when the record kept a partial answer."""
    answered = [attempt.tier for attempt in decision.tier_attempts if attempt.outcome in ANSWERED]
    if answered:
        return answered[-1]
    if decision.labels and decision.tiers_tried:
        return decision.tiers_tried[-1]
    return None


def live_outcome(decision: LiveDecision, axes: Sequence[str]) -> TicketOutcome:
    """The live decision in the shape ``summarize`` scores; a missing axis answered NO_ANSWER, as
    ``runner.outcome_of`` records a ticket no tier classified."""
    tier = answering_tier(decision)
    return TicketOutcome(
        labels={axis: decision.labels.get(axis, NO_ANSWER) for axis in axes},
        confidences={axis: decision.confidences.get(axis, 0.0) for axis in axes},
        error_kind=(decision.error_kind or "internal") if decision.triaged else None,
        low_confidence=decision.low_confidence,
        tiers_tried=list(decision.tiers_tried),
        final_tier=None if decision.triaged else tier,
        cost_usd=decision.cost_usd,
        latency_ms=decision.latency_ms,
        model_calls=tuple(
            ModelCall(a.tier, a.model, a.outcome, a.attempts, a.usage, a.cost_usd)
            for a in decision.tier_attempts
            if a.tier in CLAUDE_TIERS
        ),
        answer_tier=tier,
    )


def placeholder_ticket(decision: LiveDecision, correction: Correction) -> TicketEvent:
    """A stand-in for a triaged event whose original could not be decoded (truncated or not UTF-8).

    ``summarize`` reads only the gold labels, language and account tier kept beside the ticket
    (both "unknown" here), so the stand-in carries the ids, whatever text the correction brought
    and the evaluation files' neutral defaults for the rest.
    """
    return TicketEvent(
        event_id=decision.event_id,
        event_type=EventType.CREATED,
        ticket_id=decision.ticket_id or correction.ticket_id,
        subject=correction.subject,
        body=correction.body or "",
        account_tier=AccountTier(DEFAULT_ACCOUNT_TIER),
        customer_id=UNKNOWN_GROUP,
        channel=Channel(DEFAULT_CHANNEL),
        language=correction.language,
        created_at=correction.corrected_at,
    )


def golden_ticket(decision: LiveDecision, correction: Correction, gold: dict[str, str]) -> LabeledTicket:
    """The event as an evaluation row: its language is the producer's tag, else the correction's."""
    ticket = decision.ticket
    if ticket is None:
        stand_in = placeholder_ticket(decision, correction)
        return LabeledTicket(stand_in, gold, correction.language or UNKNOWN_GROUP, UNKNOWN_GROUP)
    language = ticket.language or correction.language or UNKNOWN_GROUP
    return LabeledTicket(ticket, gold, language, str(ticket.account_tier))


def live_queue(decision: LiveDecision, outcome: TicketOutcome, taxonomy: Taxonomy) -> str:
    """The queue the ticket went to; for a triaged one, where its labels would have gone (as
    ``evaluate`` scores a triaged ticket), so the routed/triaged split stays its own figure."""
    if not decision.triaged:
        return decision.queue
    return queue_of(taxonomy.routing, outcome.labels)


def score(decision: LiveDecision, correction: Correction, taxonomy: Taxonomy) -> Scored | str:
    """The scored event, or why it cannot be scored (a ``not_scored`` reason of the join)."""
    if outside_taxonomy(correction, taxonomy):
        return LABEL_OUTSIDE_TAXONOMY
    axes = taxonomy.axis_names
    gold = gold_labels(decision, correction, axes)
    if gold is None:
        return AXIS_WITHOUT_LABEL
    outcome = live_outcome(decision, axes)
    gold_queue = correction.queue if correction.queue is not None else queue_of(taxonomy.routing, gold)
    live = live_queue(decision, outcome, taxonomy)
    return Scored(
        item=golden_ticket(decision, correction, gold),
        outcome=outcome,
        gold_queue=gold_queue,
        live_queue=live,
        decided_by=TRIAGE_GROUP if decision.triaged else (answering_tier(decision) or TRIAGE_GROUP),
        changed=gold != outcome.labels or (correction.queue is not None and correction.queue != live),
    )


# --- the join ----------------------------------------------------------------------------------


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def named_fields(corrections: Iterable[Correction], axes: Sequence[str]) -> dict[str, int]:
    """How many of the joined corrections name each axis (and the queue): the rest of the gold
    labels of that axis are the router's own, taken as confirmed."""
    counts = Counter(field for correction in corrections for field in correction.fields_corrected)
    return {field: counts[field] for field in (*axes, QUEUE_FIELD)}


def join(
    corrections: Sequence[Correction],
    decisions: Mapping[str, LiveDecision],
    taxonomy: Taxonomy,
    window: Window = Window(),
    invalid: int = 0,
) -> GoldenSet:
    """Corrections (in topic order) joined with the live decisions by ``event_id``.

    Each figure of ``join`` answers a question a reader of the accuracy has: how many corrections
    there were, how many were the same one seen twice or replaced by a later one, how many named an
    event the topics no longer hold (retention), and which share of the routed events people
    corrected at all.
    """
    unique, repeats = distinct(corrections)
    windowed = [correction for correction in unique if window.holds(correction.corrected_at)]
    latest, superseded = latest_per_event(windowed)
    scored: list[Scored] = []
    used: list[Correction] = []
    unmatched = 0
    not_scored: Counter[str] = Counter()
    for event_id, correction in latest.items():
        decision = decisions.get(event_id)
        if decision is None:
            unmatched += 1
            continue
        result = score(decision, correction, taxonomy)
        if isinstance(result, str):
            not_scored[result] += 1
            continue
        scored.append(result)
        used.append(correction)
    routed = sum(not decision.triaged for decision in decisions.values())
    figures = {
        "records_read": len(corrections) + invalid,
        "invalid": invalid,
        "republished_copies": repeats,
        "corrections": len(unique),
        "outside_window": len(unique) - len(windowed),
        "superseded": superseded,
        "corrected_events": len(latest),
        "joined": len(scored),
        "unmatched": unmatched,
        "not_scored": dict(sorted(not_scored.items())),
        "changed": sum(s.changed for s in scored),
        "events_read": len(decisions),
        "routed_events": routed,
        "triaged_events": len(decisions) - routed,
        "correction_rate": _share(len(scored), len(decisions)),
        "change_rate": _share(sum(s.changed for s in scored), len(decisions)),
        "named": named_fields(used, taxonomy.axis_names),
        "since": window.since.isoformat() if window.since is not None else None,
        "until": window.until.isoformat() if window.until is not None else None,
    }
    return GoldenSet(scored, figures)


def tier_report(golden: GoldenSet, axes: Sequence[str]) -> dict[str, Any]:
    """Accuracy per tier that decided (local, fast, strong, or triage), like the language breakdown:
    which tier's answers people correct most is where a threshold or a prompt needs work."""
    scores = [sum(row) / len(row) for row in correctness(golden.items, golden.outcomes, axes)]
    return group_report([s.decided_by for s in golden.scored], scores)


def tiers_seen(outcomes: Iterable[TicketOutcome]) -> list[str]:
    """The tiers the live router tried on these tickets, in pipeline order (the run's "tiers")."""
    seen = {tier for outcome in outcomes for tier in outcome.tiers_tried}
    rank = {tier: index for index, tier in enumerate(TIER_ORDER)}
    return sorted(seen, key=lambda tier: (rank.get(tier, len(rank)), tier))


def models_seen(outcomes: Iterable[TicketOutcome]) -> dict[str, str]:
    """Claude tier → the models it ran over the period (several when a model was changed)."""
    by_tier: dict[str, set[str]] = {}
    for call in (call for outcome in outcomes for call in outcome.model_calls):
        by_tier.setdefault(call.tier, set()).add(call.model)
    return {tier: ", ".join(sorted(models)) for tier, models in sorted(by_tier.items())}
