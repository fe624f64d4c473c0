"""Test helpers around the real broker, using confluent-kafka as the independent client.

The service under test speaks aiokafka; checking its output with a different client means a bug
shared by the service and its own tooling cannot hide itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.config import Settings, load_settings
from consumer.processing import InputRecord, Outcome
from consumer.service import RunningService, run_service


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def router_settings(bootstrap: str, **overrides: Any) -> Settings:
    """Settings for a router under test: unique topics and group, fast group joins, no fixed ports."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "input_topic": f"tickets-{tag}",
        "triage_topic": f"triage-{tag}",
        "corrections_topic": f"corrections-{tag}",
        "queue_topic_prefix": f"t{tag}.",
        "consumer_group": f"router-{tag}",
        "topic_partitions": 3,
        "session_timeout_ms": 1_000,
        "heartbeat_interval_ms": 200,
        "metrics_port": 0,
        "metrics_host": "127.0.0.1",
        "commit_interval_ms": 100,
        "lag_refresh_s": 0.5,
        "tiers": "local",
        "anthropic_api_key": None,
    }
    values.update(overrides)
    return load_settings(**values)


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
    )
    for future in futures.values():
        future.result(timeout=10)


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> dict[int, int]:
    """Publish (key, value) pairs; returns how many records landed in each partition."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": 16_000_000})
    per_partition: dict[int, int] = {}
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            per_partition[msg.partition()] = per_partition.get(msg.partition(), 0) + 1

    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0 and not errors, f"produce failed: {remaining} unflushed, errors {errors[:3]}"
    return per_partition


@dataclass
class Received:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def consume_until(
    bootstrap: str, topics: list[str], expected: int, timeout_s: float = 60.0, keys: set[bytes] | None = None
) -> list[Received]:
    """Read the topics from the beginning until ``expected`` records arrived (or, with ``keys``,
    until every one of those keys was seen, so duplicates cannot fill the quota) or the time is up."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("checker"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6_000,
        }
    )
    consumer.subscribe(topics)
    received: list[Received] = []
    waiting = set(keys) if keys is not None else set()
    deadline = time.monotonic() + timeout_s

    def done() -> bool:
        return not waiting if keys is not None else len(received) >= expected

    try:
        while not done() and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            received.append(Received(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value()))
            waiting.discard(msg.key())
    finally:
        consumer.close()
    return received


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (-1001 = none), read by an independent client."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        result = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in result}
    finally:
        consumer.close()


RunningT = TypeVar("RunningT")


@contextlib.asynccontextmanager
async def running_in_loop(
    run: Callable[..., Coroutine[Any, Any, None]], settings: Settings, extra_hooks: list[Any] | None
) -> AsyncIterator[RunningT]:
    """Run a service (``run_service``, ``run_drafter``) in this event loop until it reports started;
    on exit stop it the way SIGTERM would (drain, commit) and wait for it. A service that fails to
    start raises here."""
    stop = asyncio.Event()
    started: asyncio.Future[RunningT] = asyncio.get_running_loop().create_future()
    assert settings.kafka_bootstrap_servers is not None
    task = asyncio.create_task(
        run(
            settings,
            settings.kafka_bootstrap_servers,
            stop,
            on_started=started.set_result,
            extra_hooks=extra_hooks,
        )
    )
    done, _ = await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
    if task in done:
        task.result()
    try:
        yield started.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


@contextlib.asynccontextmanager
async def running_router(
    settings: Settings, extra_hooks: list[Any] | None = None
) -> AsyncIterator[RunningService]:
    """The router in this event loop (see ``running_in_loop``)."""
    service: RunningService
    async with running_in_loop(run_service, settings, extra_hooks) as service:
        yield service


class OutcomeCounter:
    """An outcome hook that lets a test await 'n records handled' instead of sleeping."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._changed = asyncio.Event()

    def hook(self, _record: InputRecord, outcome: Outcome, _elapsed: float) -> None:
        self.outcomes.append(outcome)
        self._changed.set()

    async def wait_for(self, count: int, timeout_s: float = 60.0) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.outcomes) < count:
                self._changed.clear()
                await self._changed.wait()
