"""Delivery semantics on the real broker: redeliveries, agent replies, follow-ups, and a
service process that is stopped (SIGTERM) or killed (SIGKILL) mid-stream."""

from __future__ import annotations

import gc
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from producer_tools.fake_api import Latency, ModelScript, Scenario, run_in_thread
from schemas.codec import decode
from schemas.events import RoutedTicket
from tests.fault_helpers import ServiceProcess, service_env
from tests.kafka_helpers import (
    OutcomeCounter,
    committed_offsets,
    consume_until,
    create_topics,
    produce,
    router_settings,
    running_router,
)
from tests.test_end_to_end import ticket_event

pytestmark = pytest.mark.integration


async def test_duplicates_agent_replies_and_follow_ups(bootstrap: str) -> None:
    settings = router_settings(bootstrap, low_confidence_action="route_flagged")
    create_topics(bootstrap, [settings.input_topic])
    first = ticket_event(1, "Our SSO login fails for every user since the certificate rotation.")
    duplicate = dict(first)
    agent = {
        **ticket_event(1, "We are looking into it."),
        "event_type": "ticket.message_added",
        "author_role": "agent",
    }
    follow_up = {
        **ticket_event(1, "Now production is down for the whole company!"),
        "event_type": "ticket.message_added",
    }
    events = [first, duplicate, agent, follow_up]
    produce(bootstrap, settings.input_topic, [(b"T-00001", orjson.dumps(e)) for e in events])

    counter = OutcomeCounter()
    gc.unfreeze()
    async with running_router(settings, extra_hooks=[counter.hook]) as running:
        # the start-up heap is frozen before the first record, so collections skip it
        assert gc.get_freeze_count() > 100_000
        await counter.wait_for(len(events))
        await running.loop.commit()
        await running.loop.refresh_lag()
        scrape = running.metrics.exposition().decode()

    kinds = [(o.kind, o.skip_reason) for o in counter.outcomes]
    assert kinds == [("routed", None), ("skipped", "duplicate"), ("skipped", "agent_reply"), ("routed", None)]
    routed = [decode(RoutedTicket, o.value) for o in counter.outcomes if o.value is not None]
    assert [r.reclassification for r in routed] == [False, True]
    assert 'ticket_router_tickets_skipped_total{reason="duplicate"} 1.0' in scrape
    assert 'ticket_router_tickets_skipped_total{reason="agent_reply"} 1.0' in scrape
    assert "ticket_router_reclassifications_total 1.0" in scrape
    # all four records share a key, so one partition holds them: its lag is highwater - committed = 0
    lag_lines = [line for line in scrape.splitlines() if line.startswith("ticket_router_consumer_lag{")]
    assert lag_lines and all(line.endswith(" 0.0") for line in lag_lines), lag_lines
    # skipped records are committed like any other
    committed = committed_offsets(bootstrap, settings.consumer_group, settings.input_topic, 3)
    assert sum(o for o in committed.values() if o > 0) == len(events)


async def test_full_budget_longer_than_max_poll_interval_keeps_the_member(bootstrap: str) -> None:
    """Two 12 s model calls fill a budget of 2 for longer than max.poll.interval (10 s).

    The loop must keep calling ``getmany`` (paused) so aiokafka does not leave the group: no
    revocation, and every ticket routed exactly once and committed.
    """
    settings = router_settings(
        bootstrap,
        tiers="fast",
        anthropic_api_key="sk-ant-fake-keepalive",
        max_in_flight=2,
        max_poll_interval_ms=10_000,
        llm_timeout_s=15,
    )
    create_topics(bootstrap, [settings.input_topic])
    events = [ticket_event(n, f"Invoice {n} was charged twice this month.") for n in range(1, 5)]
    produce(bootstrap, settings.input_topic, keyed(events))
    slow = ModelScript(latency=Latency(mean_ms=12_000))
    counter = OutcomeCounter()
    with run_in_thread(Scenario(models={settings.fast_model: slow})) as api:
        settings = settings.model_copy(update={"anthropic_base_url": api.base_url})
        async with running_router(settings, extra_hooks=[counter.hook]) as running:
            await counter.wait_for(len(events), timeout_s=90)
            await running.loop.commit()
            scrape = running.metrics.exposition().decode()

    assert sorted(o.kind for o in counter.outcomes) == ["routed"] * len(events)
    # one join, no revocation: leaving the group would revoke all 3 partitions and join again
    assert 'ticket_router_rebalances_total{kind="assigned"} 1.0' in scrape, scrape
    assert 'ticket_router_rebalances_total{kind="revoked"} 0.0' in scrape, scrape
    committed = committed_offsets(bootstrap, settings.consumer_group, settings.input_topic, 3)
    assert sum(o for o in committed.values() if o > 0) == len(events)


# -- the service as a separate process ------------------------------------------------------


def keyed(events: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    return [(str(e["ticket_id"]).encode(), orjson.dumps(e)) for e in events]


def ticket_ids(events: list[dict[str, Any]]) -> set[bytes]:
    return {str(e["ticket_id"]).encode() for e in events}


def routed_ids(bootstrap: str, settings: Any, expected: set[bytes]) -> Counter[bytes]:
    """Every routed ticket_id with its count, read until each expected id was seen at least once."""
    from consumer.routing import reachable_queues
    from consumer.taxonomy import load_taxonomy

    topics = [settings.queue_topic_prefix + q for q in reachable_queues(load_taxonomy())]
    received = consume_until(bootstrap, topics, len(expected), timeout_s=60, keys=expected)
    return Counter(r.key for r in received if r.key)


def wait_for_progress(bootstrap: str, settings: Any, minimum: int, timeout_s: float = 60.0) -> None:
    """Poll the group's committed offsets (another process's progress is not an awaitable event)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        committed = committed_offsets(bootstrap, settings.consumer_group, settings.input_topic, 3)
        if sum(o for o in committed.values() if o > 0) >= minimum:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {minimum} records committed in time")


@pytest.mark.faults
def test_sigterm_mid_stream_exits_zero_and_nothing_is_lost(
    bootstrap: str, training_texts: list[str], tmp_path: Path
) -> None:
    settings = router_settings(bootstrap)
    create_topics(bootstrap, [settings.input_topic])
    total = 1_500
    events = [ticket_event(i, training_texts[i % len(training_texts)]) for i in range(total)]
    drain_s = 10
    service = ServiceProcess(
        service_env(settings, DRAIN_TIMEOUT_S=str(drain_s), TICKET_DEADLINE_S=str(drain_s)),
        tmp_path / "service.log",
    )
    service.start()
    try:
        service.wait_ready()
        produce(bootstrap, settings.input_topic, keyed(events))
        wait_for_progress(bootstrap, settings, 100)
        stopped_at = time.monotonic()
        assert service.terminate(timeout_s=30) == 0
        assert time.monotonic() - stopped_at < drain_s + 5, "did not exit within the drain timeout"
    finally:
        service.kill()
    committed = committed_offsets(bootstrap, settings.consumer_group, settings.input_topic, 3)
    before = sum(o for o in committed.values() if o > 0)
    service.start()
    try:
        service.wait_ready()
        ids = routed_ids(bootstrap, settings, ticket_ids(events))
    finally:
        service.terminate()
    assert set(ids) == ticket_ids(events)
    duplicates = sum(ids.values()) - total
    print(f"SIGTERM test: {before} committed at stop, {duplicates} duplicates after restart")


@pytest.mark.faults
def test_sigkilled_member_partitions_are_taken_over(
    bootstrap: str, training_texts: list[str], tmp_path: Path
) -> None:
    settings = router_settings(bootstrap)
    create_topics(bootstrap, [settings.input_topic])
    total = 2_000
    events = [ticket_event(i, training_texts[i % len(training_texts)]) for i in range(total)]
    services = [ServiceProcess(service_env(settings), tmp_path / f"s{i}.log") for i in range(2)]
    try:
        for service in services:
            service.start()
        for service in services:
            service.wait_ready()
        produce(bootstrap, settings.input_topic, keyed(events))
        wait_for_progress(bootstrap, settings, 200)
        services[0].kill()
        ids = routed_ids(bootstrap, settings, ticket_ids(events))
    finally:
        for service in services:
            if service.alive():
                service.terminate()
    missing = ticket_ids(events) - set(ids)
    assert not missing, (
        f"{len(missing)} tickets never routed: {sorted(missing)[:5]}; {services[1].log_tail()}"
    )
    print(f"SIGKILL takeover: {sum(ids.values()) - total} duplicates")
