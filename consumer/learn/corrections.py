"""What a correction teaches, as plain functions over plain data (the Kafka side is ``learner``).

A correction names the classified event it corrects and the axes a person changed. To become a
labeled example it needs the ticket's text and a label on every axis: the text comes with the
correction (a help-desk import) or from what this router routed (``RecentDecisions``), and the axes
the person left alone keep the router's labels, which they did not dispute.

Every replica reads every correction, but only the replica that routed an event remembers its text.
That replica republishes the correction with the text and its own labels (``with_router_text``), so
the other replicas, and this one after a restart, learn the same example from the topic alone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import orjson

from consumer.classify.prompt import Example
from consumer.taxonomy import Taxonomy
from schemas.corrections import Correction
from schemas.events import Classification, RoutedTicket, TicketEvent

QUEUE_FIELD = "queue"
"""The name a queue override is counted under, beside the axes."""

KEPT_BODY_CHARS = 8_000
"""A remembered ticket's body is cut here: RECENT_DECISIONS tickets of up to MAX_EVENT_BYTES each
would otherwise be gigabytes, and an example is shown to the model cut far shorter anyway."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What the router decided for one ticket event, kept so a correction can be joined with it."""

    ticket_id: str
    subject: str
    body: str
    language: str
    labels: Mapping[str, str]
    queue: str
    model: str
    confidences: Mapping[str, float] = field(default_factory=dict)
    rule: str = ""
    """The routing rule that chose the queue ('' for triage): what an explanation is grounded in."""
    reason: str = ""
    """The model's own routing reason, or why the ticket went to triage."""
    tiers: tuple[str, ...] = ()
    low_confidence: bool = False


def decision_of(routed: RoutedTicket) -> Decision:
    ticket = routed.ticket
    return Decision(
        ticket_id=ticket.ticket_id,
        subject=ticket.subject,
        body=ticket.body[:KEPT_BODY_CHARS],
        language=ticket.language or "",
        labels={axis: answer.label for axis, answer in routed.classification.axes.items()},
        queue=routed.queue,
        model=routed.model_used,
        confidences={axis: answer.confidence for axis, answer in routed.classification.axes.items()},
        rule=routed.rule,
        reason=routed.classification.routing_reason,
        tiers=tuple(routed.tiers_tried),
        low_confidence=routed.low_confidence,
    )


def triaged_decision(
    ticket: TicketEvent,
    partial: Classification | None,
    queue: str,
    reason: str = "",
    tiers: tuple[str, ...] = (),
) -> Decision:
    """A ticket sent to triage: its text, whatever labels the last tier gave before it gave up, and why."""
    axes = partial.axes if partial is not None else {}
    return Decision(
        ticket_id=ticket.ticket_id,
        subject=ticket.subject,
        body=ticket.body[:KEPT_BODY_CHARS],
        language=ticket.language or "",
        labels={axis: answer.label for axis, answer in axes.items()},
        queue=queue,
        model="",
        confidences={axis: answer.confidence for axis, answer in axes.items()},
        reason=reason,
        tiers=tiers,
    )


DECISION_FIELDS = tuple(item.name for item in fields(Decision))


def packed(decision: Decision) -> bytes:
    """The decision as one JSON array of its fields: a single bytes object held in memory instead of
    a dataclass, two dictionaries, a tuple and their strings (about 650 bytes a ticket instead of
    1,400). It is copied out of orjson's answer, whose buffer is 4 KiB however short the JSON."""
    blob = orjson.dumps([getattr(decision, name) for name in DECISION_FIELDS])
    return bytes(memoryview(blob))


def unpacked(blob: bytes) -> Decision:
    """The decision ``packed`` held (JSON floats round-trip exactly; the tiers come back a tuple)."""
    values = dict(zip(DECISION_FIELDS, orjson.loads(blob), strict=True))
    values["tiers"] = tuple(values["tiers"])
    return Decision(**values)


class RecentDecisions:
    """The last ``size`` decisions by event id. A correction usually follows its ticket within hours;
    one for an older ticket, or one routed before a restart, is learned only if it carries the text.
    Each is kept packed: a correction or an explanation unpacks one, every routed ticket packs one."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._decisions: OrderedDict[str, bytes] = OrderedDict()

    def remember(self, event_id: str, decision: Decision) -> None:
        if self.size <= 0:
            return
        self._decisions[event_id] = packed(decision)
        self._decisions.move_to_end(event_id)
        while len(self._decisions) > self.size:
            self._decisions.popitem(last=False)

    def get(self, event_id: str) -> Decision | None:
        blob = self._decisions.get(event_id)
        return unpacked(blob) if blob is not None else None

    def __len__(self) -> int:
        return len(self._decisions)


@dataclass(frozen=True)
class Change:
    """One corrected field: the router said ``before``, a person says ``after``."""

    field: str
    before: str
    after: str


def changes(correction: Correction, decision: Decision) -> list[Change]:
    """The fields a correction changes against what the router decided (a label a person merely
    confirmed is no change, so the correction rate stays an error rate)."""
    found = [
        Change(axis, decision.labels.get(axis, ""), label)
        for axis, label in correction.labels.items()
        if decision.labels.get(axis) != label
    ]
    if correction.queue is not None and correction.queue != decision.queue:
        found.append(Change(QUEUE_FIELD, decision.queue, correction.queue))
    return found


READ_OUTCOMES = ("learned", "no_text", "incomplete", "unknown_label", "invalid", "duplicate")
"""What becomes of a correction the learner reads (the ``outcome`` of ``corrections_read``)."""
RETRAIN_RESULTS = ("swapped", "failed")


@dataclass(frozen=True)
class Learned:
    """A correction's verdict: the example it teaches, or why it teaches none."""

    example: Example | None
    reason: str = ""
    unknown: list[str] = field(default_factory=list)


def learned_example(correction: Correction, decision: Decision | None, taxonomy: Taxonomy) -> Learned:
    """The labeled example a correction teaches, keyed by its event (a later correction of the same
    event replaces it). Labels outside the taxonomy teach nothing: the router could not predict them."""
    unknown = [
        f"{axis}={label}"
        for axis, label in correction.labels.items()
        if axis not in taxonomy.axes or label not in taxonomy.axes[axis].labels
    ]
    if unknown:
        return Learned(None, "unknown_label", unknown)
    if correction.body is not None:
        subject, body, language = correction.subject, correction.body, correction.language or ""
    elif decision is not None:
        subject, body, language = decision.subject, decision.body, decision.language
    else:
        return Learned(None, "no_text")
    undisputed = correction.router_labels or (decision.labels if decision is not None else {})
    labels = {**undisputed, **correction.labels}
    if set(labels) != set(taxonomy.axes) or any(
        labels[axis] not in taxonomy.axes[axis].labels for axis in taxonomy.axes
    ):
        return Learned(None, "incomplete")
    example = Example(
        example_id=f"correction:{correction.event_id}",
        subject=subject,
        body=body,
        labels={axis: labels[axis] for axis in taxonomy.axis_names},
        language=language,
    )
    return Learned(example)


def with_router_text(correction: Correction, decision: Decision) -> Correction:
    """The correction as the routing replica republishes it: the same id, with the ticket's text and
    the router's labels, so any replica can learn it and a restart can rebuild it."""
    return correction.model_copy(
        update={
            "subject": decision.subject,
            "body": decision.body,
            "language": decision.language or None,
            "router_labels": dict(decision.labels),
        }
    )
