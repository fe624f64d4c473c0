"""Start-up checks that the Claude API answers (issue 11, bug 3): the service logs an ERROR, /readyz
says why (unreachable vs. a rejected key) until the API answers again, and ``ticket-router run``
tells the user what happens to the tickets and how to fix it.

Real parts throughout: the real SDK against the fake Messages API, or against a closed port.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from consumer.api.health import ClaudeApiProbe
from consumer.classify.claude import build_claude_tier, load_examples
from consumer.config import load_settings
from consumer.kafka.embedded_broker import free_port
from consumer.service import claude_api_problem
from consumer.taxonomy import load_taxonomy
from producer_tools.fake_api import Scenario, run_in_thread
from tests.kafka_helpers import create_topics, router_settings, running_router, unique

GOOD_KEY = "sk-ant-api03-the-right-key-0123456789"
BAD_KEY = "sk-ant-api03-a-wrong-key-9876543210"


async def readyz(port: int) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as response:
        return response.status, await response.json()


def claude_settings(bootstrap: str, base_url: str, key: str) -> Any:
    return router_settings(
        bootstrap, tiers="fast", anthropic_api_key=key, anthropic_base_url=base_url, llm_timeout_s=5.0
    )


def logged_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name == "ticket_router"
    ]


@pytest.mark.integration
async def test_a_rejected_key_is_an_error_at_start_up_and_in_readyz(
    bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    with run_in_thread(Scenario(api_key=GOOD_KEY)) as api:
        settings = claude_settings(bootstrap, api.base_url, BAD_KEY)
        create_topics(bootstrap, [settings.input_topic])
        with caplog.at_level(logging.INFO):
            async with running_router(settings) as running:
                status, body = await readyz(running.http_port)
    assert status == 503
    assert body["claude_api"] == "rejected the key: 401 authentication_error: invalid x-api-key"
    assert body["reason"] == "Claude API rejected the key: 401 authentication_error: invalid x-api-key"
    [error] = logged_errors(caplog)
    assert "rejected the key: 401" in error and api.base_url in error and settings.triage_topic in error
    assert BAD_KEY not in caplog.text


@pytest.mark.integration
async def test_an_unreachable_api_is_told_apart_from_a_bad_key(
    bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = claude_settings(bootstrap, closed, GOOD_KEY)
    create_topics(bootstrap, [settings.input_topic])
    with caplog.at_level(logging.INFO):
        async with running_router(settings) as running:
            status, body = await readyz(running.http_port)
    assert (status, body["claude_api"]) == (200, "unreachable: connection error"), "reported, not failed"
    [error] = logged_errors(caplog)
    assert error.startswith(f"Claude API check failed at {closed}: unreachable: connection error")


@pytest.mark.integration
async def test_an_answering_api_is_ready(bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    with run_in_thread(Scenario(api_key=GOOD_KEY)) as api:
        settings = claude_settings(bootstrap, api.base_url, GOOD_KEY)
        create_topics(bootstrap, [settings.input_topic])
        with caplog.at_level(logging.INFO):
            async with running_router(settings) as running:
                status, body = await readyz(running.http_port)
                assert running.claude is not None and running.claude.problem is None
    assert (status, body) == (200, {"ready": True, "reason": "ready", "claude_api": "ok"})
    assert logged_errors(caplog) == []


async def test_the_recheck_sees_the_key_accepted_again() -> None:
    """Same call and same reading as the service's probe, with the real SDK: 401, then fixed."""
    with run_in_thread(Scenario(api_key=GOOD_KEY)) as api:
        settings = load_settings(
            tiers="fast", anthropic_api_key=BAD_KEY, anthropic_base_url=api.base_url, llm_timeout_s=5.0
        )
        tier = build_claude_tier("fast", settings, load_taxonomy(), examples=load_examples())
        probe = ClaudeApiProbe({tier.model: tier.count_prompt_tokens}, claude_api_problem)
        try:
            assert await probe.check() == "rejected the key: 401 authentication_error: invalid x-api-key"
            api.set_scenario(Scenario(api_key=BAD_KEY))  # the key is accepted from now on
            assert await probe.check() is None
        finally:
            await probe.close()
            await tier.close()


@pytest.mark.integration
def test_run_tells_the_user_what_an_unreachable_api_means_for_the_tickets(bootstrap: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    tag = unique("demo")
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KAFKA_", "ANTHROPIC_", "TIERS", "METRICS"))
        },
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "INPUT_TOPIC": f"{tag}-in",
        "TRIAGE_TOPIC": f"{tag}-triage",
        "QUEUE_TOPIC_PREFIX": f"{tag}.",
        "CONSUMER_GROUP": tag,
        "SESSION_TIMEOUT_MS": "1000",
        "HEARTBEAT_INTERVAL_MS": "200",
        "METRICS_PORT": "0",
        "ANTHROPIC_API_KEY": GOOD_KEY,
        "ANTHROPIC_BASE_URL": closed,
        "LLM_MAX_ATTEMPTS": "1",  # each ticket fails at once instead of after its retries
    }
    done = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "run", "--exit-after", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stderr
    [advice] = [line for line in done.stderr.splitlines() if line.startswith("ticket-router: Claude API")]
    assert advice.startswith(f"ticket-router: Claude API at {closed}: unreachable: connection error. ")
    assert f"'{tag}-triage'" in advice
    assert "check ANTHROPIC_BASE_URL" in advice and "unset ANTHROPIC_API_KEY" in advice
    assert "Traceback" not in done.stderr
