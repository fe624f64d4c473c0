"""The consume → classify → publish → commit loop.

Guarantees (README "Delivery guarantees"): a record's offset is committed only after its outcome
(queue or triage) is acknowledged by the broker, and only as part of the highest contiguous
completed run of its partition, so a crash at any moment redelivers rather than loses. Records
run concurrently up to ``MAX_IN_FLIGHT``; records with the same key (``ticket_id``) run in
fetch order. When the budget is full the loop waits for a record to finish; if none does for a
quarter of ``max_poll_interval_ms``, it pauses the partitions and calls ``getmany`` anyway, so a
slow model never makes the member leave the group. Its consumer (``RecoveringConsumer``, in
``recovery``) gets the group out of a rebalance that a departed leader left unfinishable (a Tansu bug).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from consumer.kafka.offsets import OffsetTracker
from consumer.metrics import Metrics
from consumer.processing import InputRecord, Outcome

log = logging.getLogger(__name__)

PUBLISH_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)


class Processor(Protocol):
    """What the loop runs per record: the router's RecordProcessor, or the drafter's."""

    async def process(self, record: InputRecord) -> Outcome: ...


@dataclass
class LoopSettings:
    max_in_flight: int = 64
    commit_interval_s: float = 0.5
    drain_timeout_s: float = 25.0
    lag_refresh_s: float = 5.0
    poll_timeout_ms: int = 100
    keepalive_s: float = 60.0
    """With the budget full this long since the last ``getmany``, call it anyway (under
    ``max_poll_interval_ms``, or the member is dropped from the group)."""


@dataclass
class LoopState:
    """What /readyz and the logs need to know about the loop."""

    started: bool = False
    joined: bool = False
    draining: bool = False


OutcomeHook = Callable[[InputRecord, Outcome, float], None]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: KafkaLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.loop.release(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.loop.assigned(set(assigned))


class KafkaLoop:
    def __init__(
        self,
        settings: LoopSettings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        processor: Processor,
        metrics: Metrics,
        on_outcome: OutcomeHook | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.processor = processor
        self.metrics = metrics
        self.on_outcome = on_outcome
        self.state = LoopState()
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._generation: dict[TopicPartition, int] = {}
        self._key_tails: dict[bytes, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._progress = asyncio.Event()
        self._last_commit = time.monotonic()
        self._last_poll = time.monotonic()

    @property
    def listener(self) -> ConsumerRebalanceListener:
        return _Rebalance(self)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # -- main loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain, commit and return."""
        self.state.started = True
        lag_task = asyncio.create_task(self._refresh_lag_forever(), name="lag-refresh")
        try:
            while not stop.is_set():
                await self._poll_once()
                await self._commit_if_due()
        finally:
            lag_task.cancel()
            await self.drain()

    async def _poll_once(self) -> None:
        if self.in_flight >= self.settings.max_in_flight:
            await self._wait_for_capacity()
            return
        self._resume_paused()
        batches = await self.consumer.getmany(
            timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_in_flight - self.in_flight
        )
        self._last_poll = time.monotonic()
        self._start_all(batches)

    async def _wait_for_capacity(self) -> None:
        """Wait for a record to finish; if that takes long, call ``getmany`` to stay in the group.

        The keep-alive call pauses every partition first, so it returns nothing of theirs; it is
        rare because pausing costs throughput: aiokafka discards the records it has prefetched for
        a paused partition the next time ``getmany`` runs, and fetches them again after the resume.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), self.settings.poll_timeout_ms / 1000)
        self._progress.clear()
        if self.in_flight < self.settings.max_in_flight:
            return
        if time.monotonic() - self._last_poll < self.settings.keepalive_s:
            return
        self._pause_unpaused()
        batches = await self.consumer.getmany(timeout_ms=0, max_records=1)
        self._last_poll = time.monotonic()
        self._start_all(batches)

    def _start_all(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        # Whatever getmany returned has moved the fetch position: it must be processed, never dropped,
        # even if a rebalance handed over an unpaused partition while the budget was full.
        for tp, records in batches.items():
            for record in records:
                self._start(tp, record)

    def _pause_unpaused(self) -> None:
        """Pause every assigned partition (new assignments included) for a keep-alive ``getmany``."""
        unpaused = self.consumer.assignment() - self.consumer.paused()
        if unpaused:
            self.consumer.pause(*unpaused)
        self.metrics.paused_partitions.set(len(self.consumer.paused()))

    def _resume_paused(self) -> None:
        paused = self.consumer.paused()
        if paused:
            self.consumer.resume(*paused)
            self.metrics.paused_partitions.set(0)

    def _start(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        self.tracker.start(tp, record.offset)
        self.metrics.child(self.metrics.events_consumed, tp.topic).inc()
        previous = self._key_tails.get(record.key) if record.key is not None else None
        generation = self._generation.get(tp, 0)
        task = asyncio.create_task(self._handle(tp, record, previous, generation))
        self._tasks.add(task)
        self.metrics.in_flight.set(len(self._tasks))
        if record.key is not None:
            self._key_tails[record.key] = task
        task.add_done_callback(lambda done: self._forget_task(done, record.key))

    def _forget_task(self, task: asyncio.Task[None], key: bytes | None) -> None:
        self._tasks.discard(task)
        if key is not None and self._key_tails.get(key) is task:
            del self._key_tails[key]
        self.metrics.in_flight.set(len(self._tasks))
        self._progress.set()

    async def _handle(
        self, tp: TopicPartition, record: ConsumerRecord, previous: asyncio.Task[None] | None, generation: int
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # order per ticket_id; the earlier one's failure is its own
        started = time.perf_counter()
        item = InputRecord(record.topic, record.partition, record.offset, record.key, record.value)
        outcome = await self.processor.process(item)
        await self._publish(outcome)
        if self._generation.get(tp, 0) == generation:
            self.tracker.finish(tp, record.offset)
        elapsed = time.perf_counter() - started
        self.metrics.child(self.metrics.processing_latency, outcome.kind).observe(elapsed)
        if self.on_outcome is not None:
            self.on_outcome(item, outcome, elapsed)

    async def _publish(self, outcome: Outcome) -> None:
        """Publish until acknowledged. Never gives up: an unacknowledged record is never committed."""
        if outcome.topic is None or outcome.value is None:
            return
        for attempt in range(1_000_000):
            try:
                await self.producer.send_and_wait(outcome.topic, outcome.value, key=outcome.key)
                return
            except KafkaError as exc:
                self.metrics.publish_errors.labels(outcome.kind).inc()
                delay = PUBLISH_BACKOFF_S[min(attempt, len(PUBLISH_BACKOFF_S) - 1)]
                log.warning("publish to %s failed (%s); retrying in %.1fs", outcome.topic, exc, delay)
                await asyncio.sleep(delay)

    # -- commits -------------------------------------------------------------------------

    async def _commit_if_due(self) -> None:
        if time.monotonic() - self._last_commit >= self.settings.commit_interval_s:
            await self.commit()

    async def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        self._last_commit = time.monotonic()
        offsets = self.tracker.committable(partitions)
        if not offsets:
            return
        started = time.perf_counter()
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance is under way or the broker is away; the next commit (or the new owner) catches up.
            self.metrics.commits.labels("failed").inc()
            log.warning("offset commit failed: %s", exc)
            return
        self.metrics.commit_latency.observe(time.perf_counter() - started)
        self.metrics.commits.labels("ok").inc()
        self.tracker.mark_committed(offsets)

    # -- rebalance and shutdown ----------------------------------------------------------------

    def assigned(self, partitions: set[TopicPartition]) -> None:
        self.state.joined = True
        self.metrics.rebalances.labels("assigned").inc()
        self.metrics.assigned_partitions.set(len(self.consumer.assignment()))
        log.info("partitions assigned: %s", sorted(f"{tp.topic}-{tp.partition}" for tp in partitions))

    async def release(self, revoked: set[TopicPartition]) -> None:
        """Revoked partitions: wait (bounded) for their in-flight records, commit, forget them."""
        if not revoked:
            return  # aiokafka also calls this, with nothing, before the first join
        self.metrics.rebalances.labels("revoked").inc()
        await self._wait_for(lambda: all(self.tracker.in_flight(tp) == 0 for tp in revoked))
        await self.commit(revoked)
        self.tracker.forget(revoked)
        for tp in revoked:
            self._generation[tp] = self._generation.get(tp, 0) + 1
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        self.metrics.assigned_partitions.set(len(self.consumer.assignment() - revoked))

    async def drain(self) -> None:
        """Stop taking work, finish what is in flight within the drain timeout, commit."""
        self.state.draining = True
        with contextlib.suppress(Exception):
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.pause(*assignment)
        finished = await self._wait_for(lambda: not self._tasks)
        if not finished:
            log.warning("drain timeout: %d records unfinished; they will be redelivered", len(self._tasks))
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.commit()

    async def _wait_for(self, condition: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(remaining, 0.2))
        return True

    # -- lag -------------------------------------------------------------------------------

    async def _refresh_lag_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lag_refresh_s)
            await self.refresh_lag()

    async def refresh_lag(self) -> None:
        """Lag = fetch highwater − committed offset (not end_offsets, which Tansu gets wrong)."""
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            committed = self.tracker.committed(tp)
            if committed is None:
                try:
                    committed = await self.consumer.committed(tp) or 0
                except KafkaError:
                    continue
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(highwater - committed, 0))
