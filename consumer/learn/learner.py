"""The router's second consumer: corrections in, a better example store and local tier out.

Every replica reads the whole corrections topic, from its start, at every start-up: the store and the
local model are rebuilt from the topic alone, so the topic (not a database) is what the router has
learned. It therefore has no consumer group and commits nothing; ``CORRECTIONS_TOPIC`` should keep
its records (the router creates it with ``retention.ms=-1``).

What the pure side decides (``consumer.learn.corrections``) is applied here: a learned example goes
into the example store at once (the next similar ticket retrieves it), and after ``RETRAIN_AFTER``
new ones the local tier is refitted in a worker thread and swapped in between two batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from consumer.classify.local import LabeledText, LocalModel, LocalTier
from consumer.classify.prompt import Example
from consumer.kafka.reading import caught_up
from consumer.learn.corrections import Learned, RecentDecisions, changes, learned_example, with_router_text
from consumer.learn.store import ExampleStore, example_text
from consumer.metrics import Metrics
from consumer.taxonomy import Taxonomy
from schemas.codec import encode
from schemas.corrections import Correction

log = logging.getLogger("ticket_router.learn")

POLL_TIMEOUT_MS = 500
MAX_RECORDS = 500

Refit = Callable[[Sequence[LabeledText]], LocalModel]
"""Fits a local model on the training file's examples plus the learned ones (blocking, CPU-bound)."""


@dataclass
class LearnerParts:
    """What the learner changes and where it republishes: all optional but the topic and decisions."""

    topic: str
    taxonomy: Taxonomy
    decisions: RecentDecisions
    store: ExampleStore | None
    local: LocalTier | None
    base_training: Sequence[LabeledText]
    refit: Refit | None
    retrain_after: int
    metrics: Metrics
    shadow: bool = False
    """A shadow routed nothing live: it learns (so a candidate with retrieval sees corrections) but
    neither counts corrections as its errors nor republishes copies of them."""


def labeled_text(example: Example) -> LabeledText:
    return LabeledText(example_text(example), dict(example.labels))


class CorrectionLearner:
    """Applies corrections read from the topic. ``replayed`` is set once the records that existed at
    start-up are read, so a start-up is one store update and at most one refit, not one per record."""

    def __init__(self, parts: LearnerParts, producer: AIOKafkaProducer | None) -> None:
        self.parts = parts
        self.producer = producer
        self.learned: dict[str, Example] = {}
        self.seen: set[str] = set()
        self.new_labels = 0
        self.replayed = asyncio.Event()
        self.retrains = 0
        self.outcomes: dict[str, int] = {}
        self._refitting: asyncio.Task[None] | None = None
        self._replay_batch: list[Example] = []
        self._progress = asyncio.Condition()

    async def wait_until(self, done: Callable[[], bool]) -> None:
        """Until ``done()`` holds, re-checked after each record and each refit (for tests and tools
        that must see a correction learned without sleeping)."""
        async with self._progress:
            await self._progress.wait_for(done)

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    # -- one correction ---------------------------------------------------------------------------

    async def apply(self, raw: bytes | None, live: bool) -> str:
        """Learn from one record; returns the outcome counted in ``corrections_read``."""
        try:
            correction = Correction.model_validate_json(raw or b"")
        except ValidationError as exc:
            log.warning("correction refused: %s", exc.errors()[0].get("msg", "invalid"))
            return "invalid"
        if correction.correction_id in self.seen:
            return "duplicate"
        decision = self.parts.decisions.get(correction.event_id)
        if live and decision is not None and not correction.router_labels and not self.parts.shadow:
            for change in changes(correction, decision):
                metric = self.parts.metrics.corrections
                metric.labels(change.field, change.before, change.after, correction.source.value).inc()
        verdict: Learned = learned_example(correction, decision, self.parts.taxonomy)
        if verdict.example is None:
            if verdict.reason == "unknown_label":
                log.warning(
                    "correction %s: not in the taxonomy: %s", correction.correction_id, verdict.unknown
                )
                self.seen.add(correction.correction_id)
            return verdict.reason
        self.seen.add(correction.correction_id)
        self.learn(verdict.example)
        producer = None if self.parts.shadow else self.producer
        if decision is not None and correction.body is None and producer is not None:
            # The other replicas (and this one after a restart) cannot join it: give them the text.
            copy = with_router_text(correction, decision)
            await producer.send_and_wait(self.parts.topic, encode(copy), key=correction.ticket_id.encode())
        return "learned"

    def learn(self, example: Example) -> None:
        self.learned[example.example_id] = example
        self.parts.metrics.learned_examples.set(len(self.learned))
        self.new_labels += 1
        if not self.replayed.is_set():
            self._replay_batch.append(example)
            return
        if self.parts.store is not None:
            self.parts.store.add([example])
        self.maybe_refit()

    # -- the local tier ---------------------------------------------------------------------------

    def maybe_refit(self) -> None:
        parts = self.parts
        if parts.local is None or parts.refit is None or parts.retrain_after <= 0:
            return
        if self.new_labels < parts.retrain_after or self._refitting is not None:
            return
        self.new_labels = 0
        self._refitting = asyncio.create_task(self.refit(), name="local-tier-refit")

    async def refit(self) -> None:
        """Fit in a worker thread on the training file plus everything learned, then swap."""
        parts = self.parts
        assert parts.local is not None and parts.refit is not None
        training = [*parts.base_training, *(labeled_text(example) for example in self.learned.values())]
        try:
            model = await asyncio.to_thread(parts.refit, training)
        except Exception:
            log.exception("local tier refit on %d examples failed; the current model stays", len(training))
            parts.metrics.local_retrains.labels("failed").inc()
        else:
            parts.local.swap(model)
            self.retrains += 1
            parts.metrics.local_retrains.labels("swapped").inc()
            log.info(
                "local tier refitted on %d examples (%d learned): %s",
                len(training),
                len(self.learned),
                parts.local.model,
            )
        finally:
            self._refitting = None
        self.maybe_refit()  # labels that arrived during the fit
        await self._notify()

    def replay_done(self) -> None:
        """The topic as it was at start-up is read: index it in one batch and refit once."""
        if self.parts.store is not None and self._replay_batch:
            self.parts.store.add(self._replay_batch)
        self._replay_batch = []
        self.replayed.set()
        if self.learned and self.parts.local is not None and self.parts.refit is not None:
            self.new_labels = max(self.new_labels, self.parts.retrain_after)
        log.info("learned %d examples from %s at start-up", len(self.learned), self.parts.topic)
        self.maybe_refit()

    async def idle(self) -> None:
        """Wait for a refit in progress (tests, and a clean stop)."""
        while self._refitting is not None:
            await asyncio.shield(self._refitting)

    # -- the topic --------------------------------------------------------------------------------

    async def run(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Read every partition from its start until ``stop``; ``consumer`` is started, unassigned."""
        topic = self.parts.topic
        if topic not in await consumer.topics():  # also loads the partition metadata used below
            log.warning("%s does not exist: nothing to learn from until it is created and we restart", topic)
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        if not partitions:
            self.replay_done()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS)
            for records in batches.values():
                for record in records:
                    outcome = await self.apply(record.value, live=self.replayed.is_set())
                    self.parts.metrics.corrections_read.labels(outcome).inc()
                    self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            if not self.replayed.is_set() and await caught_up(consumer, partitions):
                self.replay_done()
            await self._notify()
