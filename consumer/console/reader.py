"""The console's reader: one group-less consumer over the triage topic, the queue topics and the
decisions topic, from their start, for as long as the service runs.

Like the corrections learner it commits nothing and belongs to no group, so every console replica
builds the same inbox and folds the decisions topic in the same partition order, which is what
makes "the first mark wins" one answer on every replica (``decide``). Queue records are decoded
only when their JSON says ``low_confidence`` or that a person decided them: the others are counted,
not kept. Tickets people routed are remembered by ``event_id`` (``human_routed``, a few words per
decision), so a console that takes over a stale claim can tell whether its first claimant routed the
ticket before it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from consumer.console.decide import HUMAN_TIER, DoneMark, DoneState, Verdict, model_used_by
from consumer.console.inbox import Inbox, item_from_routed, item_from_triage
from consumer.kafka.reading import caught_up
from schemas.events import RoutedTicket, TriageRecord

log = logging.getLogger("ticket_router.console")

POLL_TIMEOUT_MS = 500
MAX_RECORDS = 500


@dataclass
class ConsoleTopics:
    triage: str
    queues: Sequence[str]
    decisions: str


@dataclass(frozen=True)
class HumanRoute:
    """A ticket a person routed, as found on its queue topic."""

    queue: str
    actor: str
    labels: dict[str, str]


def human_route_of(routed: RoutedTicket) -> HumanRoute | None:
    """The route of a ticket a person decided (``tiers_tried`` ``["human"]``), else None. Pure."""
    if routed.tiers_tried != [HUMAN_TIER]:
        return None
    actor = routed.model_used.removeprefix(model_used_by(""))
    labels = {axis: prediction.label for axis, prediction in routed.classification.axes.items()}
    return HumanRoute(routed.queue, actor, labels)


@dataclass
class ConsoleReader:
    """Feeds ``inbox`` and ``done``; ``caught_up`` is set once what existed at start-up is read."""

    topics: ConsoleTopics
    inbox: Inbox
    done: DoneState = field(default_factory=DoneState)
    records_on: dict[str, int] = field(default_factory=dict)
    """Records on each topic (the sum of its partitions' high watermarks): queue depth as written."""
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)
    human_routed: dict[str, HumanRoute] = field(default_factory=dict)
    """Tickets people routed, by the ticket's ``event_id``, from every queue topic read so far."""
    queues_read_at_ms: float = 0.0
    """Every queue topic was read to the end its broker reported at this time (epoch ms) or later."""
    _waiting: dict[str, asyncio.Future[Verdict]] = field(default_factory=dict)
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_until(self, done: Callable[[], bool]) -> None:
        """Until ``done()`` holds, re-checked after each batch read (tests, and tools that must see a
        record indexed without sleeping)."""
        async with self._progress:
            await self._progress.wait_for(done)

    def expect(self, mark_id: str) -> asyncio.Future[Verdict]:
        """A future resolved when the mark with ``mark_id`` is folded (register before producing)."""
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._waiting[mark_id] = future
        return future

    def forget(self, mark_id: str) -> None:
        self._waiting.pop(mark_id, None)

    async def read_queues_through(self, at_ms: float) -> None:
        """Until every queue topic is read to its end as of ``at_ms`` (epoch ms) or later: whatever a
        person routed before then is in ``human_routed``."""
        await self.wait_until(lambda: self.queues_read_at_ms >= at_ms)

    def apply(self, record: ConsumerRecord) -> None:
        """One record of any of the topics."""
        topic = record.topic
        if topic == self.topics.decisions:
            self.fold(record.value)
        elif topic == self.topics.triage:
            self.add_triage(record)
        else:
            self.add_routed(record)

    def fold(self, value: bytes | None) -> None:
        try:
            mark = DoneMark.model_validate_json(value or b"")
        except ValidationError:
            log.warning("decisions topic: a record that is not a DoneMark was ignored")
            return
        verdict = self.done.fold(mark)
        future = self._waiting.pop(mark.mark_id, None) if mark.state == "claimed" else None
        if future is not None and not future.done():
            future.set_result(verdict)

    def add_triage(self, record: ConsumerRecord) -> None:
        try:
            triage = TriageRecord.model_validate_json(record.value or b"")
        except ValidationError:
            return
        self.inbox.add(item_from_triage(record.topic, record.partition, record.offset, triage))

    def add_routed(self, record: ConsumerRecord) -> None:
        try:
            document = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError:
            return
        if not isinstance(document, dict):
            return
        human = document.get("tiers_tried") == [HUMAN_TIER]
        if not human and document.get("low_confidence") is not True:
            return
        try:
            routed = RoutedTicket.model_validate(document)
        except ValidationError:
            return
        route = human_route_of(routed)
        if route is not None:
            self.human_routed[routed.ticket.event_id] = route
        if routed.low_confidence:
            self.inbox.add(item_from_routed(record.topic, record.partition, record.offset, routed))

    async def run(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Read every partition of the topics from the start until ``stop``; ``consumer`` is started."""
        await consumer.topics()  # loads the partition metadata used below
        names = [self.topics.triage, *self.topics.queues, self.topics.decisions]
        partitions = [
            TopicPartition(topic, p)
            for topic in names
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        missing = [topic for topic in names if not consumer.partitions_for_topic(topic)]
        if missing:
            log.warning("console: topics missing, not read until a restart: %s", ", ".join(missing))
        queues = [tp for tp in partitions if tp.topic in self.topics.queues]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        if not partitions:
            self.caught_up.set()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS)
            for records in batches.values():
                for record in records:
                    self.apply(record)
            self.count_records(consumer, partitions)
            await self.note_queues_read(consumer, queues)
            async with self._progress:
                self._progress.notify_all()
            if not self.caught_up.is_set() and await caught_up(consumer, partitions):
                self.caught_up.set()
                log.info(
                    "console: %d records in the inbox, %d decided", len(self.inbox), len(self.done.marks)
                )

    async def note_queues_read(self, consumer: AIOKafkaConsumer, queues: Sequence[TopicPartition]) -> None:
        """Advance ``queues_read_at_ms`` when every queue partition is read to the high watermark of
        its last fetch: the end as of that fetch's time (``last_poll_timestamp``)."""
        if not await caught_up(consumer, queues):
            return
        polled = [consumer.last_poll_timestamp(tp) for tp in queues]
        at = min((float(ms) for ms in polled if ms is not None), default=time.time() * 1000)
        self.queues_read_at_ms = max(self.queues_read_at_ms, at)

    def count_records(self, consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]) -> None:
        totals: dict[str, int] = {}
        for tp in partitions:
            totals[tp.topic] = totals.get(tp.topic, 0) + (consumer.highwater(tp) or 0)
        self.records_on = totals
