"""The inbox: a bounded in-memory index of what waits for a person, and its filters. Pure.

Fed by ``reader`` from the triage topic (every record) and the queue topics (only tickets routed
with ``low_confidence``). An item keeps what the list shows, never the whole ticket: the record page
reads the record itself by position, so memory is bounded by ``capacity`` small items whatever the
tickets weigh. When full, the item read first goes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from consumer.console.decide import DoneState, record_key
from schemas.events import Classification, RoutedTicket, TicketEvent, TriageRecord

ROUTED_LOW_CONFIDENCE = "routed_low_confidence"
"""The category of a ticket routed although unsure (LOW_CONFIDENCE_ACTION=route_flagged)."""
SUBJECT_CHARS = 200
MESSAGE_CHARS = 500
AGES: dict[str, timedelta | None] = {
    "any": None,
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
}
"""The age filter's choices (a closed set: a form value outside it is refused)."""


@dataclass(frozen=True)
class Axis:
    name: str
    label: str
    confidence: float


@dataclass(frozen=True)
class InboxItem:
    topic: str
    partition: int
    offset: int
    category: str
    """The triage record's error kind, or ``routed_low_confidence``."""
    at: datetime
    ticket_id: str
    subject: str
    message: str
    queue: str
    axes: tuple[Axis, ...]
    tiers_tried: tuple[str, ...]
    decidable: bool
    """The record holds a readable TicketEvent, so a person can label it and route it."""

    @property
    def key(self) -> str:
        return record_key(self.topic, self.partition, self.offset)


def axes_of(classification: Classification | None) -> tuple[Axis, ...]:
    if classification is None:
        return ()
    return tuple(Axis(name, p.label, p.confidence) for name, p in classification.axes.items())


def ticket_of(record: TriageRecord) -> TicketEvent | None:
    """The ticket a triage record holds, or None (malformed, schema-invalid, truncated, a draft)."""
    if record.original_encoding != "utf-8" or record.original_truncated:
        return None
    try:
        return TicketEvent.model_validate_json(record.original_value)
    except ValidationError:
        return None


def item_from_triage(topic: str, partition: int, offset: int, record: TriageRecord) -> InboxItem:
    ticket = ticket_of(record)
    return InboxItem(
        topic=topic,
        partition=partition,
        offset=offset,
        category=record.error_kind.value,
        at=record.triaged_at,
        ticket_id=record.ticket_id or (ticket.ticket_id if ticket else "") or "?",
        subject=(ticket.subject if ticket else "")[:SUBJECT_CHARS],
        message=record.message[:MESSAGE_CHARS],
        queue=topic,
        axes=axes_of(record.partial_classification),
        tiers_tried=tuple(record.tiers_tried),
        decidable=ticket is not None,
    )


def item_from_routed(topic: str, partition: int, offset: int, routed: RoutedTicket) -> InboxItem:
    return InboxItem(
        topic=topic,
        partition=partition,
        offset=offset,
        category=ROUTED_LOW_CONFIDENCE,
        at=routed.classified_at,
        ticket_id=routed.ticket.ticket_id,
        subject=routed.ticket.subject[:SUBJECT_CHARS],
        message=routed.classification.routing_reason[:MESSAGE_CHARS],
        queue=routed.queue,
        axes=axes_of(routed.classification),
        tiers_tried=tuple(routed.tiers_tried),
        decidable=True,
    )


class Inbox:
    """At most ``capacity`` items by record key; the oldest read is dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, InboxItem] = OrderedDict()
        self.dropped = 0

    def add(self, item: InboxItem) -> None:
        self._items[item.key] = item
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
            self.dropped += 1

    def get(self, key: str) -> InboxItem | None:
        return self._items.get(key)

    def items(self) -> list[InboxItem]:
        return list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Filter:
    categories: frozenset[str] = frozenset()
    """Empty: every category."""
    age: str = "any"
    show_decided: bool = False


def select(items: Iterable[InboxItem], wanted: Filter, now: datetime, done: DoneState) -> list[InboxItem]:
    """The items the filter keeps, newest first (ties: the later record first)."""
    limit = AGES[wanted.age]
    kept = [
        item
        for item in items
        if (not wanted.categories or item.category in wanted.categories)
        and (limit is None or now - item.at <= limit)
        and (wanted.show_decided or _open(done, item.key))
    ]
    return sorted(kept, key=lambda item: (item.at, item.offset), reverse=True)


def _open(done: DoneState, key: str) -> bool:
    mark = done.get(key)
    return mark is None or mark.state != "published"


def page_of(items: Sequence[InboxItem], number: int, size: int) -> tuple[list[InboxItem], int]:
    """Page ``number`` (1-based, clamped into range) and the page count (at least 1)."""
    pages = max(1, -(-len(items) // size))
    number = min(max(1, number), pages)
    return list(items[(number - 1) * size : number * size]), pages
