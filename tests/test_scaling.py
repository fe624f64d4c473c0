"""Scaling out and back in while tickets flow: one router, then three in the same group, then one
again. Every ticket is routed, and a ticket published twice by two members would be counted."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest

from consumer.routing import reachable_queues
from consumer.taxonomy import load_taxonomy
from tests.kafka_helpers import (
    OutcomeCounter,
    consume_until,
    create_topics,
    produce,
    router_settings,
    running_router,
)
from tests.test_end_to_end import ticket_event

pytestmark = pytest.mark.integration

PHASE = 150
PARTITIONS = 6


def tickets(start: int, count: int) -> list[tuple[bytes, bytes]]:
    events = [
        ticket_event(n, f"Invoice {n} was charged twice; please refund one.")
        for n in range(start, start + count)
    ]
    return [(str(e["ticket_id"]).encode(), orjson.dumps(e)) for e in events]


def published_per_event(counter: OutcomeCounter) -> Counter[str]:
    """How often each event was published to a queue or to triage (a skip publishes nothing)."""
    return Counter(
        outcome.ticket.event_id
        for outcome in counter.outcomes
        if outcome.kind in ("routed", "triaged") and outcome.ticket is not None
    )


async def test_scaling_one_to_three_to_one_member_loses_and_repeats_nothing(bootstrap: str) -> None:
    settings = router_settings(bootstrap, topic_partitions=PARTITIONS, low_confidence_action="route_flagged")
    create_topics(bootstrap, [settings.input_topic], partitions=PARTITIONS)
    everyone = OutcomeCounter()
    joined: dict[str, OutcomeCounter] = {"b": OutcomeCounter(), "c": OutcomeCounter()}

    async with running_router(settings, extra_hooks=[everyone.hook]) as first:
        produce(bootstrap, settings.input_topic, tickets(0, PHASE))
        await everyone.wait_for(PHASE // 3)
        extra: dict[str, Any] = {}
        async with (
            running_router(settings, extra_hooks=[everyone.hook, joined["b"].hook]) as extra["b"],
            running_router(settings, extra_hooks=[everyone.hook, joined["c"].hook]) as extra["c"],
        ):
            produce(bootstrap, settings.input_topic, tickets(PHASE, PHASE))
            for member in joined.values():  # each new member took partitions and routed from them
                await member.wait_for(1, timeout_s=90)
            await everyone.wait_for(PHASE + PHASE // 2, timeout_s=90)
        # b and c have left (drained and committed); the first member takes their partitions back.
        produce(bootstrap, settings.input_topic, tickets(2 * PHASE, PHASE))
        await everyone.wait_for(3 * PHASE, timeout_s=120)
        assigned = first.metrics.registry.get_sample_value("ticket_router_assigned_partitions")

    published = published_per_event(everyone)
    assert len(published) == 3 * PHASE, "a ticket was never routed"
    repeated = {event: times for event, times in published.items() if times > 1}
    assert not repeated, f"{len(repeated)} tickets published more than once across the rebalances"
    assert assigned == PARTITIONS, "the remaining member owns every partition again"
    assert all(len(member.outcomes) > 0 for member in joined.values())

    # Independently of the router's own hooks: every ticket's key is on a queue or triage topic.
    topics = [settings.queue_topic_prefix + q for q in reachable_queues(load_taxonomy())] + [
        settings.triage_topic
    ]
    keys = {key for key, _ in tickets(0, 3 * PHASE)}
    received = await asyncio.to_thread(consume_until, bootstrap, topics, len(keys), 90.0, keys)
    assert keys <= {record.key for record in received}
