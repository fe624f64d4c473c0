"""``ticket-router draft`` end to end: routed tickets on the queue topics of a real broker, drafts
written through the real SDK by the fake Messages API on loopback, DraftReply events on the drafts
topic, failures in triage, offsets committed only after the publish, and the metrics that count it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from confluent_kafka import Consumer, TopicPartition

from consumer.config import Settings
from consumer.draft.service import RunningDrafter, run_drafter
from consumer.errors import UserError
from producer_tools.fake_api import FakeApiServer, ModelScript, Scenario
from schemas.codec import decode, encode
from schemas.drafts import DraftReply
from schemas.events import ErrorKind, RoutedTicket, TriageRecord
from tests.kafka_helpers import (
    OutcomeCounter,
    committed_offsets,
    consume_until,
    produce,
    router_settings,
    running_in_loop,
    unique,
)
from tests.test_draft import API_KEY, SONNET, TAXONOMY, routed

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture
async def fake() -> AsyncIterator[FakeApiServer]:
    server = FakeApiServer(Scenario())
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


def drafter_settings(bootstrap: str, fake: FakeApiServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "anthropic_api_key": API_KEY,
        "anthropic_base_url": fake.base_url,
        "drafts_topic": unique("drafts"),
        "draft_metrics_port": 0,
        "llm_max_attempts": 2,
        "llm_backoff_initial_s": 0.01,
        "llm_backoff_max_s": 0.02,
    }
    return router_settings(bootstrap, **{**values, **overrides})


@contextlib.asynccontextmanager
async def running_drafter(settings: Settings, counter: OutcomeCounter) -> AsyncIterator[RunningDrafter]:
    """The drafter in this event loop (see ``running_in_loop``)."""
    drafter: RunningDrafter
    async with running_in_loop(run_drafter, settings, [counter.hook]) as drafter:
        yield drafter


def queue_record(settings: Settings, ticket: RoutedTicket) -> tuple[str, tuple[bytes, bytes]]:
    return settings.queue_topic_prefix + ticket.queue, (ticket.ticket.ticket_id.encode(), encode(ticket))


def publish(settings: Settings, *tickets: RoutedTicket) -> dict[str, bytes]:
    """Each routed ticket on its queue topic, as the router publishes it; returns value by ticket id."""
    for ticket in tickets:
        topic, record = queue_record(settings, ticket)
        produce(settings.kafka_bootstrap_servers or "", topic, [record])
    return {ticket.ticket.ticket_id: encode(ticket) for ticket in tickets}


def committed_total(settings: Settings, topic: str) -> int:
    """Records of ``topic`` the drafter's group has committed past (no commit counts as 0)."""
    offsets = committed_offsets(
        settings.kafka_bootstrap_servers or "", settings.drafter_group, topic, PARTITIONS
    )
    return sum(max(offset, 0) for offset in offsets.values())


def records_in(bootstrap: str, topic: str) -> int:
    """How many records ``topic`` holds right now (sum of high watermarks): no waiting involved."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("peek")})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)
        )
    finally:
        consumer.close()


def sample(running: RunningDrafter, name: str, **labels: str) -> float:
    return running.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_routed_tickets_get_drafts_by_their_handler_and_the_rest_is_counted(
    bootstrap: str, fake: FakeApiServer
) -> None:
    settings = drafter_settings(bootstrap, fake)
    dispute = routed("billing-normal", "billing_dispute", event_id="E-10", subject="Charged twice")
    bug = routed("product-high", "bug_report", event_id="E-11", subject="Export button does nothing")
    idea = routed("product-low", "feature_request", event_id="E-12", subject="Dark mode please")
    counter = OutcomeCounter()
    async with running_drafter(settings, counter) as running:
        publish(settings, dispute, bug, idea)
        produce(bootstrap, settings.queue_topic_prefix + "billing-low", [(b"T-bad", b"{not json")])
        await counter.wait_for(4)
        url = f"http://127.0.0.1:{running.http_port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            exposition = await response.text()
        drafted = sample(running, "ticket_router_drafts_total", handler="billing-dispute", outcome="drafted")
        assert drafted == 1
        assert sample(running, "ticket_router_drafts_total", handler="bug-report", outcome="drafted") == 1
        assert sample(running, "ticket_router_drafts_skipped_total", reason="no_handler") == 1
        assert sample(running, "ticket_router_drafts_unreadable_total", error_kind="malformed_json") == 1
        assert sample(running, "ticket_router_draft_cost_usd_total", handler="bug-report", model=SONNET) > 0
        assert sample(running, "ticket_router_draft_latency_seconds_count", handler="bug-report") == 1
        assert (
            'ticket_router_draft_tokens_total{handler="billing-dispute",kind="output",model="claude-sonnet-5-5"}'
            in exposition
        )
    prefix = settings.queue_topic_prefix
    assert {prefix + "urgent-security", prefix + "critical-billing", prefix + "priority-product"} <= set(
        running.topics
    ), "every queue routing can produce is read, the emergency ones included"

    drafts = {
        r.key: decode(DraftReply, r.value) for r in consume_until(bootstrap, [settings.drafts_topic], 2)
    }
    assert set(drafts) == {b"T-E-10", b"T-E-11"}, "keyed by ticket_id; nothing for the queue without handler"
    billing, bug_draft = drafts[b"T-E-10"], drafts[b"T-E-11"]
    assert (billing.handler, billing.queue, billing.event_id, billing.tier, billing.model) == (
        "billing-dispute",
        "billing-normal",
        "E-10",
        "strong",
        SONNET,
    )
    assert bug_draft.handler == "bug-report" and bug_draft.review_required is True
    assert '"Charged twice" (ticket T-E-10)' in billing.reply, "the draft answers its own ticket"
    assert billing.cost_usd > 0 and billing.usage.output_tokens > 0 and billing.attempts == 1
    assert billing.source.topic == settings.queue_topic_prefix + "billing-normal"
    assert billing.handler_version.startswith("dv-") and billing.handler_version != bug_draft.handler_version

    # Each request carried its handler's instructions and no secret.
    systems = [body["system"][0]["text"] for body in fake.requests()]
    by_name = {handler.name: handler.instructions.strip() for handler in TAXONOMY.handlers}
    assert sorted(
        name for name in ("billing-dispute", "bug-report") for text in systems if by_name[name] in text
    ) == [
        "billing-dispute",
        "bug-report",
    ]
    assert API_KEY not in repr(fake.requests())

    [bad] = consume_until(bootstrap, [settings.triage_topic], 1)
    triage = decode(TriageRecord, bad.value)
    assert (triage.error_kind, triage.original_value) == (ErrorKind.MALFORMED_JSON, "{not json")

    # Every record was committed once its outcome (or none, for the skip) was published.
    for ticket in (dispute, bug, idea):
        assert committed_total(settings, settings.queue_topic_prefix + ticket.queue) == 1
    assert committed_total(settings, settings.queue_topic_prefix + "billing-low") == 1


async def test_an_api_that_keeps_failing_sends_the_ticket_to_triage_with_the_reason(
    bootstrap: str, fake: FakeApiServer
) -> None:
    fake.set_scenario(Scenario(models={SONNET: ModelScript(script=["529", "529"], retry_after_s=0)}))
    settings = drafter_settings(bootstrap, fake)
    dispute = routed("billing-high", "billing_dispute", event_id="E-20")
    counter = OutcomeCounter()
    async with running_drafter(settings, counter) as running:
        originals = publish(settings, dispute)
        await counter.wait_for(1)
        assert (
            sample(running, "ticket_router_drafts_total", handler="billing-dispute", outcome="unavailable")
            == 1
        )
        assert sample(running, "ticket_router_llm_retries_total", model=SONNET, reason="overloaded") == 1
    [record] = consume_until(bootstrap, [settings.triage_topic], 1)
    triage = decode(TriageRecord, record.value)
    assert record.key == b"T-E-20"
    assert triage.error_kind is ErrorKind.DRAFT_FAILED
    assert triage.message.startswith(
        "no draft by handler billing-dispute (unavailable): claude-sonnet-5-5: 529"
    )
    assert triage.message.endswith("(gave up after 2 attempts)")
    assert (triage.attempts, triage.tiers_tried, triage.event_id) == (2, ["strong"], "E-20")
    assert triage.original_value.encode() == originals["T-E-20"], "the queue record, byte for byte"
    assert triage.source.topic == settings.queue_topic_prefix + "billing-high"
    assert (triage.prompt_version or "").startswith("dv-")
    assert records_in(bootstrap, settings.drafts_topic) == 0
    assert committed_total(settings, settings.queue_topic_prefix + "billing-high") == 1


async def test_an_offset_is_committed_only_after_its_draft_is_published(
    bootstrap: str, fake: FakeApiServer
) -> None:
    settings = drafter_settings(bootstrap, fake)
    topic = settings.queue_topic_prefix + "product-normal"
    counter = OutcomeCounter()
    async with running_drafter(settings, counter) as running:
        gate, entered = asyncio.Event(), asyncio.Event()
        producer = running.loop.producer
        send_and_wait: Callable[..., Any] = producer.send_and_wait

        async def held_back(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            await gate.wait()
            return await send_and_wait(*args, **kwargs)

        producer.send_and_wait = held_back
        publish(settings, routed("product-normal", "bug_report", event_id="E-30"))
        await asyncio.wait_for(entered.wait(), 60)
        await running.loop.commit()
        assert committed_total(settings, topic) == 0, "drafted, but not yet published: nothing committed"
        gate.set()
        await counter.wait_for(1)
        await running.loop.commit()
        assert committed_total(settings, topic) == 1
    [draft] = consume_until(bootstrap, [settings.drafts_topic], 1)
    assert decode(DraftReply, draft.value).event_id == "E-30"


async def test_a_taken_metrics_port_names_the_drafters_own_setting(
    bootstrap: str, fake: FakeApiServer
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = drafter_settings(bootstrap, fake, draft_metrics_port=port)
        with pytest.raises(UserError) as caught:
            async with running_drafter(settings, OutcomeCounter()):
                pass
    assert str(caught.value).startswith(f"DRAFT_METRICS_PORT={port}: the port is already in use on 127.0.0.1")
    assert "(DRAFT_METRICS_PORT=0 picks one)" in str(caught.value)


def run_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "ANTHROPIC_", "TAXONOMY"))}
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", "draft"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_says_what_it_needs_in_one_line(bootstrap: str) -> None:
    no_broker = run_cli({})
    assert no_broker.returncode == 2
    assert no_broker.stderr.strip().splitlines() == [
        "ticket-router: error: ticket-router draft needs KAFKA_BOOTSTRAP_SERVERS: it reads the queue topics "
        "the router writes (for `ticket-router run`, the address it printed)"
    ]
    no_key = run_cli({"KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    assert no_key.returncode == 2
    assert no_key.stderr.strip().splitlines()[-1] == (
        "ticket-router: error: ANTHROPIC_API_KEY is unset: ticket-router draft writes its drafts with Claude"
    )
    assert "Traceback" not in no_key.stderr
