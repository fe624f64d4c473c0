"""Creates the service's topics at start-up: input, every reachable queue, and triage."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from consumer.config import Settings
from consumer.routing import reachable_queues
from consumer.taxonomy import Taxonomy

log = logging.getLogger(__name__)


KEEP_FOREVER = {"retention.ms": "-1"}
"""The corrections topic is what the router has learned: it is read whole at every start."""


def topics_to_create(settings: Settings, taxonomy: Taxonomy) -> list[str]:
    queues = [settings.queue_topic_prefix + queue for queue in reachable_queues(taxonomy)]
    return [settings.input_topic, *queues, settings.triage_topic]


async def ensure_topics(
    names: list[str],
    partitions: int,
    replication: int,
    client_options: dict[str, Any],
    topic_configs: dict[str, str] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    admin = AIOKafkaAdminClient(**client_options)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=partitions,
                            replication_factor=replication,
                            topic_configs=topic_configs or {},
                        )
                        for name in missing
                    ]
                )
            except TopicAlreadyExistsError:
                log.info("topics created concurrently by another instance")
        return missing
    finally:
        await admin.close()
