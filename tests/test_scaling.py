"""Scaling out and back in while tickets flow: one router, then three in the same group, then one
again. Every ticket is routed, and a ticket published twice by two members would be counted.

Scaling in can leave the group with a leader that is gone (Tansu keeps the leader of a forming
generation that sends LeaveGroup); the routers recover from it, and a test here creates that state
on purpose so the recovery runs every time, not only when the scaling test happens to hit it."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocol
from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest

from consumer.kafka.recovery import orphaned_leader
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

PHASE_TIMEOUT_S = 120

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


@pytest.mark.integration
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
        # b and c have left (drained and committed); the first member takes their partitions back,
        # if need be after rejoining past a leader that left mid-rebalance (about 31 s here).
        produce(bootstrap, settings.input_topic, tickets(2 * PHASE, PHASE))
        await everyone.wait_for(3 * PHASE, timeout_s=PHASE_TIMEOUT_S)
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


def test_a_leader_outside_its_group_is_orphaned() -> None:
    assert orphaned_leader("gone", {"a", "b"})
    assert not orphaned_leader("a", {"a", "b"})
    assert not orphaned_leader("", {"a"})  # no leader yet: the next member to join leads


async def leave_as_unformed_leader(bootstrap: str, group: str, topic: str) -> str:
    """Join an empty group, which makes this member its leader, and leave before SyncGroup: what a
    router scaled in mid-rebalance does. Returns the departed leader's member id."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, client_id="departing-leader")
    await client.bootstrap()
    try:
        node = await client.coordinator_lookup(CoordinationType.GROUP, group)
        protocols = [
            (RoundRobinPartitionAssignor.name, RoundRobinPartitionAssignor.metadata({topic}).encode())
        ]
        member_id = ""
        for _ in range(2):  # the first answer is MEMBER_ID_REQUIRED with the id to join with
            request = JoinGroupRequest(
                group, 1_000, 30_000, member_id, None, ConsumerProtocol.PROTOCOL_TYPE, protocols
            )
            response = await client.send(node, request)
            member_id = response.member_id
        assert response.error_code == 0 and response.leader_id == member_id, response
        left = await client.send(node, LeaveGroupRequest(group, member_id))
        assert left.error_code == 0, left
        return str(member_id)
    finally:
        await client.close()


@pytest.mark.integration
async def test_a_router_takes_over_a_group_whose_leader_left_before_it_formed(bootstrap: str) -> None:
    # A short drain makes the rebalance timeout, and so the wait before the check, 8 s.
    settings = router_settings(
        bootstrap, topic_partitions=PARTITIONS, drain_timeout_s=2.0, ticket_deadline_s=2.0
    )
    create_topics(bootstrap, [settings.input_topic], partitions=PARTITIONS)
    departed = await leave_as_unformed_leader(bootstrap, settings.consumer_group, settings.input_topic)
    produce(bootstrap, settings.input_topic, tickets(0, PARTITIONS * 5))
    counter = OutcomeCounter()
    async with asyncio.timeout(60):  # without the recovery the router's start waits for ever
        async with running_router(settings, extra_hooks=[counter.hook]) as router:
            await counter.wait_for(PARTITIONS * 5, timeout_s=30)
            assigned = router.metrics.registry.get_sample_value("ticket_router_assigned_partitions")
    assert assigned == PARTITIONS, f"the router owns every partition once {departed} no longer leads"
    assert len(published_per_event(counter)) == PARTITIONS * 5
