"""Readiness follows the broker; logs are one JSON object per ticket and never carry secrets."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import aiohttp
import orjson
import pytest

from consumer.embedded_broker import EmbeddedBroker
from consumer.health import BrokerProbe, readiness
from consumer.kafka_loop import LoopState
from consumer.logs import JsonFormatter
from consumer.processing import InputRecord, Outcome
from consumer.service import log_outcome
from schemas.events import AccountTier, Channel, EventType, TicketEvent
from tests.kafka_helpers import create_topics, router_settings, running_router


def test_readiness_reasons_in_order() -> None:
    state = LoopState()
    assert readiness(state, True) == (False, "starting")
    state.started = True
    assert readiness(state, True)[0] is False  # not joined yet
    state.joined = True
    assert readiness(state, False) == (False, "broker not answering metadata requests")
    assert readiness(state, True) == (True, "ready")
    state.draining = True
    assert readiness(state, True) == (False, "draining")


async def test_broker_probe_caches_and_times_out() -> None:
    calls = 0

    async def hangs() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)

    probe = BrokerProbe(hangs, timeout_s=0.05)
    assert await probe.reachable() is False
    assert await probe.reachable() is False
    assert calls == 1  # the second answer came from the one-second cache


@pytest.mark.integration
async def test_readyz_turns_false_when_the_broker_goes_away() -> None:
    own_broker = EmbeddedBroker()
    own_broker.start()
    port = own_broker.port
    try:
        settings = router_settings(own_broker.bootstrap_servers)
        create_topics(own_broker.bootstrap_servers, [settings.input_topic])
        async with running_router(settings) as running, aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{running.http_port}/readyz"
            async with http.get(url) as response:
                assert response.status == 200
            own_broker.stop()
            # No event tells us when the client notices; poll the endpoint a kubelet would poll.
            deadline = time.monotonic() + 20
            status, body = 200, {}
            while time.monotonic() < deadline and status == 200:
                await asyncio.sleep(0.5)
                async with http.get(url) as response:
                    status, body = response.status, await response.json()
            assert status == 503, "readyz stayed 200 with the broker gone"
            assert body["ready"] is False and "broker" in body["reason"]
            async with http.get(f"http://127.0.0.1:{running.http_port}/healthz") as response:
                assert response.status == 200  # alive: the pod must not be restarted for a broker outage
            own_broker.port = port
            own_broker.start()  # let the router shut down cleanly against a broker
    finally:
        own_broker.stop()


def ticket() -> TicketEvent:
    return TicketEvent(
        event_id="e-1",
        event_type=EventType.CREATED,
        ticket_id="T-77",
        subject="Password reset",
        body="my key sk-ant-api03-abcdefghijklmnop leaked",
        account_tier=AccountTier.PRO,
        customer_id="C-1",
        channel=Channel.EMAIL,
        created_at="2026-11-20T09:15:00Z",  # type: ignore[arg-type]
    )


def logged_lines(log_text: bool) -> list[dict[str, object]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ticket_router")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        outcome = Outcome(
            "skipped", None, None, None, ticket_id="T-77", ticket=ticket(), skip_reason="agent_reply"
        )
        log_outcome(log_text)(InputRecord("tickets", 2, 41, b"T-77", b"{}"), outcome, 0.0123)
    finally:
        logger.removeHandler(handler)
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_line_per_ticket_without_text_by_default() -> None:
    [line] = logged_lines(log_text=False)
    assert line["ticket_id"] == "T-77" and line["outcome"] == "skipped" and line["partition"] == 2
    assert line["latency_ms"] == 12.3
    assert "body" not in line and "subject" not in line


def test_ticket_text_only_when_asked_and_keys_are_masked() -> None:
    [line] = logged_lines(log_text=True)
    assert line["subject"] == "Password reset"
    assert "sk-ant-api03-abcdefghijklmnop" not in orjson.dumps(line).decode()
    assert "sk-ant-***" in str(line["body"])
