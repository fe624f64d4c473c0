"""Liveness survives a slow start, readiness follows the broker and the Claude API, a bad
METRICS_HOST/PORT is one line; logs are one JSON object per ticket and never carry secrets."""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import socket
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from consumer.api.health import (
    BrokerProbe,
    ClaudeApiProbe,
    api_problem,
    api_summary,
    bind_error,
    liveness,
    readiness,
    start_http,
)
from consumer.classify.retry import CallFailure
from consumer.errors import UserError
from consumer.kafka.embedded_broker import EmbeddedBroker, free_port
from consumer.kafka.loop import LoopState
from consumer.logs import JsonFormatter
from consumer.processing import InputRecord, Outcome
from consumer.service import RunningService, log_outcome, run_service
from schemas.events import AccountTier, Channel, EventType, TicketEvent
from tests.kafka_helpers import create_topics, router_settings, running_router


def test_readiness_reasons_in_order() -> None:
    state = LoopState()
    assert readiness(state, True) == (False, "starting")
    state.started = True
    assert readiness(state, True)[0] is False  # not joined yet
    state.joined = True
    assert readiness(state, False) == (False, "broker not answering metadata requests")
    assert readiness(state, True, "unreachable: connection error") == (True, "ready"), "not the pod's"
    assert readiness(state, True, "rejected the key: 401 authentication_error: invalid x-api-key") == (
        False,
        "Claude API rejected the key: 401 authentication_error: invalid x-api-key",
    )
    assert readiness(state, True) == (True, "ready")
    state.draining = True
    assert readiness(state, True) == (False, "draining")


def test_liveness_holds_through_start_up_and_fails_once_the_loop_stopped() -> None:
    assert liveness(loop_started=False, loop_finished=False, starting_for_s=5.0) == (True, "starting")
    assert liveness(loop_started=True, loop_finished=False, starting_for_s=5.0) == (True, "ok")
    assert liveness(loop_started=True, loop_finished=True, starting_for_s=5.0) == (
        False,
        "consumer loop stopped",
    )
    wedged = liveness(loop_started=False, loop_finished=False, starting_for_s=301.0, limit_s=300.0)
    assert wedged == (False, "start-up not finished after 300s")


@pytest.mark.parametrize(
    ("failure", "problem"),
    [
        (CallFailure("connection", message="connection error"), "unreachable: connection error"),
        (CallFailure("timeout", message="request timed out"), "unreachable: request timed out"),
        (
            CallFailure("status", status=401, error_type="authentication_error", message="invalid x-api-key"),
            "rejected the key: 401 authentication_error: invalid x-api-key",
        ),
        (
            CallFailure("status", status=403, error_type="permission_error", message="no access"),
            "refused the key: 403 permission_error: no access",
        ),
        (CallFailure("status", status=429, error_type="rate_limit_error", message="slow down"), None),
        (
            CallFailure("status", status=429, error_type="rate_limit_error", message="spend limit reached"),
            "failing: 429 rate_limit_error: spend limit reached",
        ),
        (
            CallFailure("status", status=529, error_type="overloaded_error", message="Overloaded"),
            "failing: 529 overloaded_error: Overloaded",
        ),
    ],
)
def test_api_problem_tells_unreachable_from_a_rejected_key(failure: CallFailure, problem: str | None) -> None:
    assert api_problem(failure) == problem


def test_api_summary_names_models_only_when_they_differ() -> None:
    assert api_summary({"haiku": None, "sonnet": None}) is None
    both = {"haiku": "unreachable: connection error", "sonnet": "unreachable: connection error"}
    assert api_summary(both) == "unreachable: connection error"
    one = {"haiku": None, "sonnet": "failing: 404 not_found_error: model"}
    assert api_summary(one) == "sonnet failing: 404 not_found_error: model"


class FlakyApi:
    """A check call that fails while ``down`` is set, counting its calls (no I/O)."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    async def count(self) -> int:
        self.calls += 1
        if self.down:
            raise ConnectionError("refused")
        return 600


def describe(exc: BaseException) -> str:
    return f"unreachable: {type(exc).__name__}"


async def test_claude_probe_rechecks_in_the_background_once_due_and_recovers() -> None:
    api = FlakyApi()
    probe = ClaudeApiProbe({"haiku": api.count}, describe, recheck_failing_s=0.0, recheck_ok_s=3600.0)
    with pytest.raises(ConnectionError):
        await probe.call("haiku")  # the start-up call: recorded, re-raised for its own log line
    assert probe.problem == "unreachable: ConnectionError"
    api.down = False
    assert probe.current() == "unreachable: ConnectionError"  # cached answer; a re-check starts
    assert probe.current() == "unreachable: ConnectionError"  # ...only one at a time
    assert probe._recheck is not None
    await probe._recheck
    assert api.calls == 2
    assert probe.current() is None
    assert probe.current() is None and api.calls == 2, "an answering API is re-checked only hourly here"
    await probe.close()


async def test_claude_probe_times_out_a_hanging_call() -> None:
    async def hangs() -> int:
        await asyncio.sleep(10)
        return 0

    probe = ClaudeApiProbe({"haiku": hangs}, describe, timeout_s=0.05)
    assert await probe.check() == "unreachable: TimeoutError"


@pytest.mark.parametrize(
    ("error", "names"),
    [
        (socket.gaierror(-2, "Name or service not known"), "METRICS_HOST=256.1.1.1: not an address"),
        (OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"), "METRICS_HOST=256.1.1.1"),
        (OSError(errno.EADDRINUSE, "address already in use"), "METRICS_PORT=9000: the port is already"),
        (OSError(errno.EACCES, "permission denied"), "METRICS_PORT=9000: not allowed"),
    ],
)
def test_bind_errors_name_the_setting_and_what_it_expects(error: OSError, names: str) -> None:
    message = bind_error(error, "256.1.1.1", 9000)
    assert message.startswith(names) and "expected" in message and "\n" not in message


async def test_start_http_turns_bind_failures_into_one_line() -> None:
    with pytest.raises(UserError, match=r"^METRICS_HOST=256\.1\.1\.1: not an address of this machine"):
        await start_http(web.Application(), "256.1.1.1", 0)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=rf"^METRICS_PORT={port}: the port is already in use"):
            await start_http(web.Application(), "127.0.0.1", port)


@pytest.mark.integration
async def test_healthz_answers_200_during_the_group_join_and_readyz_503(bootstrap: str) -> None:
    """A slow join (Tansu holds it for about half the session timeout) is start-up, not death."""
    port = free_port()
    settings = router_settings(
        bootstrap, session_timeout_ms=12_000, heartbeat_interval_ms=3_000, metrics_port=port
    )
    create_topics(bootstrap, [settings.input_topic])
    stop = asyncio.Event()
    started: asyncio.Future[RunningService] = asyncio.get_running_loop().create_future()
    service = asyncio.create_task(run_service(settings, bootstrap, stop, on_started=started.set_result))
    during_join: list[tuple[int, int, Any]] = []
    try:
        async with aiohttp.ClientSession() as http:
            # Another server's start is no event to await: poll as the kubelet does until the join ends.
            while not started.done() and not service.done():
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as health:
                        health_status = health.status
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as ready:
                        ready_status, body = ready.status, await ready.json()
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)  # the port opens after the taxonomy, tiers and topics
                    continue
                if not started.done():
                    during_join.append((health_status, ready_status, body))
                await asyncio.sleep(0.1)
            assert started.done(), service.result()
            async with http.get(f"http://127.0.0.1:{port}/healthz") as health:
                assert health.status == 200
    finally:
        stop.set()
        await asyncio.wait_for(service, 60)
    assert len(during_join) >= 5, f"the join was too quick to observe: {during_join}"
    assert {health for health, _, _ in during_join} == {200}, during_join
    assert {ready for _, ready, _ in during_join} == {503}, during_join


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
