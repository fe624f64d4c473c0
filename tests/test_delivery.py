"""Delivery semantics on the real broker: redeliveries, agent replies, follow-ups, and a
service process that is stopped (SIGTERM) or killed (SIGKILL) mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.dedup import RecentIds
from consumer.embedded_broker import free_port
from schemas.codec import decode
from schemas.events import RoutedTicket
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


def test_recent_ids_window_is_bounded() -> None:
    recent = RecentIds(3)
    assert [recent.check_and_add(i) for i in ("a", "b", "a", "c", "d")] == [False, False, True, False, False]
    assert len(recent) == 3
    assert recent.check_and_add("b") is False  # evicted: the oldest left the window
    assert RecentIds(0).check_and_add("a") is False and RecentIds(0).check_and_add("a") is False


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
    async with running_router(settings, extra_hooks=[counter.hook]) as running:
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


# -- the service as a separate process ------------------------------------------------------


def service_env(settings: Any, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "ANTHROPIC_", "TIERS"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        INPUT_TOPIC=settings.input_topic,
        TRIAGE_TOPIC=settings.triage_topic,
        QUEUE_TOPIC_PREFIX=settings.queue_topic_prefix,
        CONSUMER_GROUP=settings.consumer_group,
        TOPIC_PARTITIONS=str(settings.topic_partitions),
        SESSION_TIMEOUT_MS="1000",
        HEARTBEAT_INTERVAL_MS="200",
        COMMIT_INTERVAL_MS="100",
        METRICS_PORT=str(port),
        METRICS_HOST="127.0.0.1",
        TIERS="local",
        LOW_CONFIDENCE_ACTION="route_flagged",
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def start_service(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "consume"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def wait_ready(process: subprocess.Popen[bytes], port: int, timeout_s: float = 60.0) -> None:
    """Poll /readyz: the service says when it has joined its group."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "service exited during start-up"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("service not ready in time")


def routed_ids(bootstrap: str, settings: Any, expected: set[bytes]) -> Counter[bytes]:
    """Every routed ticket_id with its count, read until each expected id was seen at least once."""
    from consumer.routing import reachable_queues
    from consumer.taxonomy import load_taxonomy

    topics = [settings.queue_topic_prefix + q for q in reachable_queues(load_taxonomy())]
    received = consume_until(bootstrap, topics, len(expected), timeout_s=60, keys=expected)
    return Counter(r.key for r in received if r.key)


def wait_for_progress(bootstrap: str, settings: Any, minimum: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        committed = committed_offsets(bootstrap, settings.consumer_group, settings.input_topic, 3)
        if sum(o for o in committed.values() if o > 0) >= minimum:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {minimum} records committed in time")


def test_sigterm_mid_stream_exits_zero_and_nothing_is_lost(
    bootstrap: str, training_texts: list[str], tmp_path: Path
) -> None:
    settings = router_settings(bootstrap)
    create_topics(bootstrap, [settings.input_topic])
    total = 1_500
    events = [ticket_event(i, training_texts[i % len(training_texts)]) for i in range(total)]
    port = free_port()
    env = service_env(settings, port, DRAIN_TIMEOUT_S="10", TICKET_DEADLINE_S="10")
    service = start_service(env, tmp_path / "service.log")
    try:
        wait_ready(service, port)
        produce(
            bootstrap, settings.input_topic, [(str(e["ticket_id"]).encode(), orjson.dumps(e)) for e in events]
        )
        wait_for_progress(bootstrap, settings, 100)
        stopped_at = time.monotonic()
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
        assert time.monotonic() - stopped_at < 10 + 5, "did not exit within the drain timeout"
    finally:
        if service.poll() is None:
            service.kill()
    before = sum(
        o
        for o in committed_offsets(bootstrap, settings.consumer_group, settings.input_topic, 3).values()
        if o > 0
    )
    restarted = start_service(env, tmp_path / "service.log")
    try:
        wait_ready(restarted, port)
        ids = routed_ids(bootstrap, settings, {str(e["ticket_id"]).encode() for e in events})
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=30)
    assert set(ids) == {str(e["ticket_id"]).encode() for e in events}
    duplicates = sum(ids.values()) - total
    print(f"SIGTERM test: {before} committed at stop, {duplicates} duplicates after restart")


def test_sigkilled_member_partitions_are_taken_over(
    bootstrap: str, training_texts: list[str], tmp_path: Path
) -> None:
    settings = router_settings(bootstrap)
    create_topics(bootstrap, [settings.input_topic])
    total = 2_000
    events = [ticket_event(i, training_texts[i % len(training_texts)]) for i in range(total)]
    ports = [free_port(), free_port()]
    services = [
        start_service(service_env(settings, port), tmp_path / f"s{i}.log") for i, port in enumerate(ports)
    ]
    try:
        for service, port in zip(services, ports, strict=True):
            wait_ready(service, port)
        produce(
            bootstrap, settings.input_topic, [(str(e["ticket_id"]).encode(), orjson.dumps(e)) for e in events]
        )
        wait_for_progress(bootstrap, settings, 200)
        services[0].kill()
        services[0].wait(timeout=10)
        ids = routed_ids(bootstrap, settings, {str(e["ticket_id"]).encode() for e in events})
    finally:
        for service in services:
            if service.poll() is None:
                service.send_signal(signal.SIGTERM)
                service.wait(timeout=30)
    missing = {str(e["ticket_id"]).encode() for e in events} - set(ids)
    logs = " | ".join(p.read_text()[-3000:] for p in tmp_path.glob("s*.log"))
    triage = consume_until(bootstrap, [settings.triage_topic], 10, timeout_s=3)
    triaged = {r.key: orjson.loads(r.value)["message"] for r in triage}
    assert not missing, (
        f"{len(missing)} tickets never routed: {sorted(missing)[:5]} triaged={triaged}; logs: {logs}"
    )
    print(f"SIGKILL takeover: {sum(ids.values()) - total} duplicates")
