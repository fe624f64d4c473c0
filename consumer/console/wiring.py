"""The console of a running router: its topics, reader, record fetcher and sub-app, from settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumer.api.explain import Explainer, RecordFetcher
from consumer.config import Settings
from consumer.console.app import Console, ConsoleConfig, kafka_publish
from consumer.console.inbox import Inbox
from consumer.console.reader import ConsoleReader, ConsoleTopics
from consumer.kafka.topics import ensure_topics
from consumer.metrics import Metrics
from consumer.routing import reachable_queues
from consumer.taxonomy import Taxonomy

COMPACTED = {"cleanup.policy": "compact"}
"""The decisions topic keeps the last mark of every record for ever (see consumer.console.decide)."""


def console_topics(settings: Settings, taxonomy: Taxonomy) -> ConsoleTopics:
    queues = [settings.queue_topic_prefix + queue for queue in reachable_queues(taxonomy)]
    return ConsoleTopics(settings.triage_topic, queues, settings.console_decisions_topic)


async def ensure_decisions_topic(settings: Settings, options: Mapping[str, Any]) -> list[str]:
    return await ensure_topics(
        [settings.console_decisions_topic],
        settings.topic_partitions,
        settings.topic_replication_factor,
        dict(options),
        COMPACTED,
    )


@contextlib.asynccontextmanager
async def running_console(
    settings: Settings,
    taxonomy: Taxonomy,
    prompt_version: str,
    producer: AIOKafkaProducer,
    metrics: Metrics,
    explainer: Explainer | None,
    options: Mapping[str, Any],
    stop: asyncio.Event,
) -> AsyncIterator[Console]:
    """The console with its reader running until the block ends (or ``stop``)."""
    if settings.create_topics:
        await ensure_decisions_topic(settings, options)
    reader = ConsoleReader(console_topics(settings, taxonomy), Inbox(settings.console_inbox_size))
    fetcher = RecordFetcher(options)
    console = Console(
        ConsoleConfig.from_settings(settings, prompt_version),
        taxonomy,
        reader,
        fetcher,
        kafka_publish(producer),
        metrics,
        explainer,
    )
    consumer = AIOKafkaConsumer(
        **options, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    task = asyncio.create_task(reader.run(consumer, stop), name="console-reader")
    try:
        yield console
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await fetcher.close()
