"""POST /v1/classify and GET /v1/explain over real HTTP, against the running router, the real
broker and the fake Messages API through the real SDK (streaming included), and
``ticket-tools explain`` as a separate process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
from openapi_spec_validator import validate

from consumer.classify.explanation import explanation_system
from consumer.config import Settings
from consumer.service import RunningService
from producer_tools.explain import EventReader
from producer_tools.fake_api.scenario import FixedLabel, ModelScript, Scenario
from producer_tools.fake_api.threaded import ThreadedFakeApi, run_in_thread
from schemas.drafts import DraftReply
from tests.kafka_helpers import OutcomeCounter, consume_until, running_router, unique
from tests.test_api_ingest import TOKENS, api_settings, bearer, event, ids_on, post, records_on, signed
from tests.test_draft_service import running_drafter

pytestmark = pytest.mark.integration

FAST = "claude-haiku-5-5"
STRONG = "claude-sonnet-5-5"


@dataclass
class Setup:
    running: RunningService
    api: ThreadedFakeApi
    counter: OutcomeCounter
    base: str
    settings: Settings


@asynccontextmanager
async def router_with_api(
    bootstrap: str, strong: ModelScript | None = None, fast: ModelScript | None = None, **overrides: Any
) -> AsyncIterator[Setup]:
    scenario = Scenario(
        models={FAST: fast or ModelScript(), STRONG: strong or ModelScript(stream_delay_ms=2)}
    )
    counter = OutcomeCounter()
    with run_in_thread(scenario) as api:
        settings = api_settings(
            bootstrap,
            tiers="fast",
            anthropic_api_key="sk-ant-fake-explain",
            anthropic_base_url=api.base_url,
            **overrides,
        )
        async with running_router(settings, extra_hooks=[counter.hook]) as running:
            yield Setup(running, api, counter, f"http://127.0.0.1:{running.api_port}", settings)


async def explain(
    http: aiohttp.ClientSession, base: str, query: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, list[tuple[str, dict[str, Any]]], dict[str, Any] | None]:
    """Status, the events of a stream (as they arrived) or the JSON error body."""
    async with http.get(f"{base}/v1/explain", params=query, headers=headers or bearer()) as response:
        if response.content_type != "text/event-stream":
            return response.status, [], orjson.loads(await response.read())
        reader = EventReader()
        events = [
            event
            for chunk in [c async for c in response.content.iter_any()]
            for event in reader.feed(chunk.decode())
        ]
        return response.status, events, None


async def run_tool(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, awaited (the router under test shares this event loop)."""
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(command, process.returncode, stdout.decode(), stderr.decode())


def streamed_text(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(data["text"] for name, data in events if name == "text")


async def test_a_posted_ticket_is_routed_then_explained_by_event_id_and_by_position(bootstrap: str) -> None:
    async with router_with_api(bootstrap) as setup, aiohttp.ClientSession() as http:
        running, api, counter, base = setup.running, setup.api, setup.counter, setup.base
        ticket = event("Charged twice", "You charged my card twice for the November invoice.")
        status, answer, _ = await post(http, f"{base}/v1/tickets", orjson.dumps(ticket), bearer())
        assert (status, answer) == (202, {"accepted": [ticket["event_id"]]})
        await counter.wait_for(1)
        routed = counter.outcomes[0].routed
        assert routed is not None
        labels = {axis: answer.label for axis, answer in routed.classification.axes.items()}

        status, events, _ = await explain(http, base, {"event_id": ticket["event_id"]})
        assert status == 200
        names = [name for name, _ in events]
        assert names[0] == "decision" and names[-1] == "done" and names.count("text") > 1
        decision = events[0][1]
        assert (decision["queue"], decision["rule"], decision["labels"]) == (
            routed.queue,
            routed.rule,
            labels,
        )
        assert decision["explained_by"] == STRONG
        assert all(alt["queue"] != routed.queue for alt in decision["alternatives"])
        text = streamed_text(events)
        for axis, label in labels.items():  # the fake echoes the labels the prompt states
            assert f"{axis}={label}" in text
        assert events[-1][1]["cost_usd"] > 0 and events[-1][1]["stop_reason"] == "end_turn"

        sent = [body for body in api.requests() if body.get("model") == STRONG]
        assert len(sent) == 1 and sent[0]["stream"] is True
        assert sent[0]["system"] == [{"type": "text", "text": explanation_system()}]
        assert not {"temperature", "top_p", "top_k", "tool_choice"} & set(sent[0])
        user = sent[0]["messages"][0]["content"]
        assert "You charged my card twice" in user and user.index("Decision facts:") < user.index("<ticket>")

        # By position, from the queue topic, in another process: what a support lead runs.
        queue_topic = setup.settings.queue_topic_prefix + routed.queue
        record = consume_until(bootstrap, [queue_topic], 1)[0]
        env = {**os.environ, "TICKET_ROUTER_API_TOKEN": TOKENS["ops"]}
        command = [sys.executable, "-m", "producer_tools.cli", "explain", "--api", base]
        position = [
            "--topic",
            queue_topic,
            "--partition",
            str(record.partition),
            "--offset",
            str(record.offset),
        ]
        done = await run_tool([*command, *position], env)
        assert done.returncode == 0, done.stderr
        assert done.stdout == text + "\n"
        assert f"queue {routed.queue} by rule {routed.rule}" in done.stderr and "cost $" in done.stderr

        missing = await run_tool([*command, "--event-id", "E-nope"], env)
        assert missing.returncode == 2 and missing.stdout == ""
        assert missing.stderr.startswith("ticket-tools: error: HTTP 404: no decision for that event_id")
        assert missing.stderr.rstrip().endswith("(field event_id)") and "Traceback" not in missing.stderr

        registry = running.metrics.registry
        assert registry.get_sample_value("ticket_router_api_explanations_total", {"outcome": "streamed"}) == 2
        assert (
            registry.get_sample_value("ticket_router_api_explanations_total", {"outcome": "not_found"}) == 1
        )
        assert registry.get_sample_value("ticket_router_api_explanation_cost_usd_total") == pytest.approx(
            2 * events[-1][1]["cost_usd"]
        )


async def test_explain_refuses_what_it_cannot_or_may_not_read(bootstrap: str) -> None:
    async with router_with_api(bootstrap) as setup, aiohttp.ClientSession() as http:
        api, base = setup.api, setup.base
        triage = setup.settings.triage_topic
        cases = [
            ({"event_id": "E-never-seen"}, 404, "event_id"),
            ({"topic": setup.settings.corrections_topic, "partition": "0", "offset": "0"}, 400, "topic"),
            ({"topic": triage, "partition": "0"}, 400, "offset"),
            ({"topic": triage, "partition": "7", "offset": "0"}, 404, "offset"),  # 3 partitions
            ({"topic": triage, "partition": "1", "offset": "5"}, 404, "offset"),  # past the end
        ]
        for query, status, field in cases:
            got, events, body = await explain(http, base, query)
            assert (got, events) == (status, []), query
            assert body is not None and body["field"] == field, body
        async with http.get(f"{base}/v1/explain", params={"event_id": "E-1"}) as response:
            assert response.status == 401
        assert not [body for body in api.requests() if body.get("model") == STRONG]  # no model call for any


async def test_a_refused_call_is_503_and_a_stream_cut_by_the_model_ends_with_an_error_event(
    bootstrap: str,
) -> None:
    strong = ModelScript(script=["529", "529_mid_stream"], stream_delay_ms=1)
    async with router_with_api(bootstrap, strong) as setup, aiohttp.ClientSession() as http:
        running, counter, base = setup.running, setup.counter, setup.base
        ticket = event("Cannot log in", "My 2FA device is lost and I cannot log in.")
        assert (await post(http, f"{base}/v1/tickets", orjson.dumps(ticket), bearer()))[0] == 202
        await counter.wait_for(1)

        status, events, body = await explain(http, base, {"event_id": ticket["event_id"]})
        assert (status, events) == (503, []) and body is not None and "retry" in body["error"]

        status, events, _ = await explain(http, base, {"event_id": ticket["event_id"]})
        assert status == 200 and events[0][0] == "decision" and events[-1][0] == "error"
        assert "done" not in [name for name, _ in events]
        registry = running.metrics.registry
        assert (
            registry.get_sample_value("ticket_router_api_explanations_total", {"outcome": "model_error"}) == 2
        )


async def test_explanations_spend_the_routers_budget_and_wait_while_it_is_spent(bootstrap: str) -> None:
    """An explanation is Claude spend like a classification: counted in the same windows, and
    refused (503 naming the budget, Retry-After until the window rolls) while they are spent."""
    roomy = {"llm_budget_usd_per_hour": "5"}
    async with router_with_api(bootstrap, **roomy) as setup, aiohttp.ClientSession() as http:
        ticket = event("Charged twice", "You charged my card twice for the November invoice.")
        assert (await post(http, f"{setup.base}/v1/tickets", orjson.dumps(ticket), bearer()))[0] == 202
        await setup.counter.wait_for(1)
        routed = setup.counter.outcomes[0].routed
        assert routed is not None and routed.cost_usd > 0
        status, events, _ = await explain(http, setup.base, {"event_id": ticket["event_id"]})
        assert status == 200 and events[-1][0] == "done"
        spent = setup.running.metrics.registry.get_sample_value(
            "ticket_router_llm_budget_spent_usd", {"window": "hour"}
        )
        assert spent == pytest.approx(routed.cost_usd + events[-1][1]["cost_usd"])

    tiny = {"llm_budget_usd_per_hour": "0.00001"}  # the first classification spends it all
    async with router_with_api(bootstrap, **tiny) as setup, aiohttp.ClientSession() as http:
        ticket = event("Cannot log in", "My 2FA device is lost and I cannot log in.")
        assert (await post(http, f"{setup.base}/v1/tickets", orjson.dumps(ticket), bearer()))[0] == 202
        await setup.counter.wait_for(1)
        async with http.get(
            f"{setup.base}/v1/explain", params={"event_id": ticket["event_id"]}, headers=bearer()
        ) as response:
            assert response.status == 503
            body = orjson.loads(await response.read())
            assert 1 <= int(response.headers["Retry-After"]) <= 3_600
        assert body["error"].startswith("LLM budget spent (hour $")
        assert not [sent for sent in setup.api.requests() if sent.get("model") == STRONG]
        outcome = {"outcome": "budget_exhausted"}
        registry = setup.running.metrics.registry
        assert registry.get_sample_value("ticket_router_api_explanations_total", outcome) == 1


async def test_classify_answers_the_route_and_publishes_nothing(bootstrap: str) -> None:
    async with router_with_api(bootstrap) as setup, aiohttp.ClientSession() as http:
        running, api, counter, base = setup.running, setup.api, setup.counter, setup.base
        ticket = event(
            "Production is down", "Our whole production cluster is down since 09:00, all customers affected."
        )
        status, answer, _ = await post(http, f"{base}/v1/classify", orjson.dumps(ticket), bearer())
        assert status == 200 and answer["outcome"] == "routed"
        assert answer["topic"] == setup.settings.queue_topic_prefix + answer["queue"]
        assert set(answer["labels"]) == {"team", "ticket_type", "urgency", "sentiment"}
        assert all(0 <= value <= 1 for value in answer["confidences"].values())
        assert (
            answer["tiers_tried"] == ["fast"]
            and answer["cost_usd"] > 0
            and answer["usage"]["input_tokens"] > 0
        )
        assert len([body for body in api.requests() if body.get("model") == FAST]) == 1

        status, refused, _ = await post(
            http, f"{base}/v1/classify", orjson.dumps({**ticket, "created_at": "soon"}), bearer()
        )
        assert status == 400 and refused["field"] == "$.created_at"
        async with http.post(f"{base}/v1/classify", data=orjson.dumps(ticket)) as response:
            assert response.status == 401

        # Nothing was produced: the input topic is empty to its end, and nothing was routed.
        assert records_on(bootstrap, setup.settings.input_topic, set()) == []
        assert counter.outcomes == []
        registry = running.metrics.registry
        assert (
            registry.get_sample_value("ticket_router_api_classifications_total", {"outcome": "routed"}) == 1
        )


async def test_openapi_describes_exactly_the_routes_served(bootstrap: str) -> None:
    async with router_with_api(bootstrap) as setup, aiohttp.ClientSession() as http:
        async with http.get(f"{setup.base}/v1/openapi.json") as response:
            assert response.status == 401  # documentation is behind the same gate
        async with http.get(f"{setup.base}/v1/openapi.json", headers=bearer()) as response:
            assert response.status == 200
            document = orjson.loads(await response.read())
        validate(document)  # a valid OpenAPI 3.1 document
        served = {(path, method) for path, item in document["paths"].items() for method in item}
        assert served == {
            ("/v1/tickets", "post"),
            ("/v1/webhooks/zendesk", "post"),
            ("/v1/webhooks/intercom", "post"),
            ("/v1/classify", "post"),
            ("/v1/explain", "get"),
            ("/v1/openapi.json", "get"),
        }
        for path, method in served:  # each is routed: authenticated, nothing answers 404 or 405
            async with http.request(method, f"{setup.base}{path}", headers=bearer()) as response:
                assert response.status not in (404, 405), (path, response.status)
        # The request schema is the one the handlers validate with: an accepted event matches it.
        schema = {**document["components"]["schemas"]["TicketEvent"], "components": document["components"]}
        jsonschema.validate(event(), schema)


async def test_done_when_a_signed_ticket_is_routed_drafted_and_explained(bootstrap: str) -> None:
    """The issue's "done when", end to end: a signed POST is on the input topic before its 202, is
    routed, gets a draft on the drafts topic, and ``ticket-tools explain`` streams why. The fast model
    calls it a billing dispute, the type the default taxonomy's ``billing-dispute`` handler answers
    (unscripted, its type would hang on a hash of the random event id, and most types have no handler)."""
    dispute = ModelScript(labels={"ticket_type": FixedLabel(label="billing_dispute")})
    async with router_with_api(bootstrap, fast=dispute) as setup, aiohttp.ClientSession() as http:
        settings = setup.settings.model_copy(
            update={"drafts_topic": unique("drafts"), "draft_metrics_port": 0}
        )
        async with running_drafter(settings, OutcomeCounter()):
            ticket = event("Refund please", "You charged my card twice for the November invoice; refund one.")
            body = orjson.dumps(ticket)
            status, answer, _ = await post(http, f"{setup.base}/v1/tickets", body, signed(body, "zendesk"))
            assert (status, answer) == (202, {"accepted": [ticket["event_id"]]})
            assert ids_on(bootstrap, settings.input_topic, {ticket["event_id"]}) == [ticket["event_id"]]
            await setup.counter.wait_for(1)
            routed = setup.counter.outcomes[0].routed
            assert routed is not None and routed.ticket.event_id == ticket["event_id"]

            drafts = await asyncio.to_thread(
                records_on, bootstrap, settings.drafts_topic, {ticket["event_id"]}
            )
            [draft] = [DraftReply.model_validate(value) for value in drafts]
            assert (draft.event_id, draft.queue, draft.handler) == (
                ticket["event_id"],
                routed.queue,
                "billing-dispute",
            )
            assert draft.review_required is True and draft.reply.strip()

        env = {**os.environ, "TICKET_ROUTER_API_TOKEN": TOKENS["ops"]}
        command = [sys.executable, "-m", "producer_tools.cli", "explain", "--api", setup.base]
        done = await run_tool([*command, "--event-id", ticket["event_id"]], env)
        assert done.returncode == 0, done.stderr
        assert f"queue {routed.queue} by rule {routed.rule}" in done.stderr
        assert all(f"{axis}={p.label}" in done.stdout for axis, p in routed.classification.axes.items())
