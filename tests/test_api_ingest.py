"""POST /v1/tickets over real HTTP against the running service and the real broker: what is
answered 202 is on the input topic (once) and routed; what is refused reaches nothing."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
import uuid
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer, KafkaError, TopicPartition
from pydantic import SecretStr

from consumer.api.auth import signature_of
from consumer.api.ingest import IngestConfig, build_ingest_app, kafka_delivery, start_api
from consumer.errors import UserError
from consumer.kafka.embedded_broker import EmbeddedBroker
from consumer.metrics import Metrics
from tests.fault_helpers import ticket_document
from tests.kafka_helpers import OutcomeCounter, create_topics, router_settings, running_router, unique

pytestmark = pytest.mark.integration

SECRETS = {"zendesk": "zendesk-secret-0123456789abcdef", "intercom": "intercom-secret-0123456789abcd"}
TOKENS = {"intake": "intake-token-0123456789abcdef", "ops": "ops-token-0123456789abcdefgh"}
SLOW_TOKEN = "slow-token-0123456789abcdefgh"


def pairs(credentials: dict[str, str]) -> str:
    return ",".join(f"{client}:{secret}" for client, secret in credentials.items())


def event(
    subject: str = "Refund for a double charge", body: str = "I was charged twice this month."
) -> dict[str, Any]:
    return ticket_document(unique("T"), subject, body, event_id=unique("E"))


def signed(
    body: bytes, client: str = "zendesk", secret: str | None = None, at: float | None = None
) -> dict[str, str]:
    stamp = str(int(time.time() if at is None else at))
    return {
        "Content-Type": "application/json",
        "X-Client": client,
        "X-Timestamp": stamp,
        "X-Signature": signature_of(secret or SECRETS[client], stamp, body),
    }


def bearer(client: str = "intake") -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {TOKENS[client]}"}


def records_on(bootstrap: str, topic: str, expected: set[str], partitions: int = 3) -> list[dict[str, Any]]:
    """Every record of ``topic`` until each ``expected`` event id was read and every partition is
    at its end (partition EOF since its last record), as JSON: a record produced twice, or one
    that should not be there, is in the answer. (Tansu's ListOffsets high watermark can lag what a
    fetch returns, so the end is the fetch's own EOF, not a watermark asked for beforehand.)"""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("check"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        values: list[dict[str, Any]] = []
        waiting = set(expected)
        at_end: set[int] = set()
        deadline = time.monotonic() + 60
        while (waiting or len(at_end) < partitions) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:  # reported once per arrival at the end
                    at_end.add(msg.partition())
                continue
            value = orjson.loads(msg.value())
            values.append(value)
            waiting.discard(str(value["event_id"]))
            at_end.discard(msg.partition())
        assert not waiting, f"{len(waiting)} accepted events never appeared on {topic}"
        assert len(at_end) == partitions, "the topic was not read to its end"
        return values
    finally:
        consumer.close()


def ids_on(bootstrap: str, topic: str, expected: set[str]) -> list[str]:
    return [str(value["event_id"]) for value in records_on(bootstrap, topic, expected)]


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.post(url, data=body, headers=headers) as response:
        return response.status, orjson.loads(await response.read()), dict(response.headers)


def api_settings(bootstrap: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "api_port": 0,
        "api_hmac_secrets": pairs(SECRETS),
        "api_tokens": pairs(TOKENS),
        "low_confidence_action": "route_flagged",
    }
    return router_settings(bootstrap, **(values | overrides))


async def test_a_signed_ticket_is_on_the_topic_before_202_and_is_routed(bootstrap: str) -> None:
    settings = api_settings(bootstrap)
    counter = OutcomeCounter()
    async with (
        running_router(settings, extra_hooks=[counter.hook]) as running,
        aiohttp.ClientSession() as http,
    ):
        url = f"http://127.0.0.1:{running.api_port}/v1/tickets"
        ticket = event()
        body = orjson.dumps(ticket)
        status, answer, _ = await post(http, url, body, signed(body))
        assert (status, answer) == (202, {"accepted": [ticket["event_id"]]})
        assert ids_on(bootstrap, settings.input_topic, {ticket["event_id"]}) == [ticket["event_id"]]
        await counter.wait_for(1)
        assert counter.outcomes[0].kind == "routed" and counter.outcomes[0].ticket_id == ticket["ticket_id"]

        # A batch by bearer token; the same event id again (alone or in a batch) is not produced again.
        batch = [event(), event(subject="App crashes on login", body="The iOS app crashes at start.")]
        body = orjson.dumps({"tickets": batch})
        status, answer, _ = await post(http, url, body, bearer())
        assert (status, answer) == (202, {"accepted": [item["event_id"] for item in batch]})
        again = orjson.dumps({"tickets": [batch[1], ticket, batch[1]]})
        status, answer, _ = await post(http, url, again, signed(again, "intercom"))
        assert (status, answer) == (202, {"accepted": [batch[1]["event_id"], ticket["event_id"]]})
        await counter.wait_for(3)
        expected = {ticket["event_id"], *(item["event_id"] for item in batch)}
        on_topic = ids_on(bootstrap, settings.input_topic, expected)
        assert sorted(on_topic) == sorted([ticket["event_id"], *(item["event_id"] for item in batch)])
        assert running.metrics.registry.get_sample_value("ticket_router_api_accepted_tickets_total") == 3
        assert (
            running.metrics.registry.get_sample_value(
                "ticket_router_api_requests_total", {"route": "/v1/tickets", "status": "202"}
            )
            == 3
        )


async def test_forged_stale_replayed_malformed_and_oversized_requests_reach_nothing(bootstrap: str) -> None:
    settings = api_settings(bootstrap, api_max_body_bytes=4096, api_max_batch=2)
    async with running_router(settings) as running, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{running.api_port}/v1/tickets"
        refused: list[str] = []

        async def expect(status: int, body: bytes, headers: dict[str, str], says: str) -> dict[str, Any]:
            got, answer, response_headers = await post(http, url, body, headers)
            assert got == status, (says, got, answer)
            assert says in answer["error"], answer
            for secret in (*SECRETS.values(), *TOKENS.values()):
                assert secret not in str(answer) and secret not in str(response_headers)
            return answer

        def fresh() -> bytes:
            ticket = event()
            refused.append(ticket["event_id"])
            return orjson.dumps(ticket)

        body = fresh()
        await expect(
            401, body, signed(body, secret="an-attacker-guessed-this-one"), "signature does not match"
        )
        await expect(401, body, signed(body, at=time.time() - 301), "s old (allowed: 300 s)")
        await expect(401, body, signed(body, at=time.time() + 600), "in the future")
        await expect(401, body, {"Content-Type": "application/json"}, "credentials missing")
        await expect(
            401, body, {"Content-Type": "application/json", "Authorization": "Bearer guessed"}, "unknown"
        )
        await expect(401, body, signed(body, client="freshdesk", secret="x" * 20), "unknown X-Client")
        tampered = signed(body)
        await expect(401, body.replace(b"charged", b"CHARGED"), tampered, "signature does not match")

        # A valid request, then the very same bytes and headers again: the replay is refused.
        accepted = event()
        body = orjson.dumps(accepted)
        headers = signed(body)
        status, answer, _ = await post(http, url, body, headers)
        assert (status, answer) == (202, {"accepted": [accepted["event_id"]]})
        await expect(401, body, headers, "replayed request")

        big = orjson.dumps(event(body="x" * 5000))
        refused.append(orjson.loads(big)["event_id"])
        await expect(413, big, signed(big), "API_MAX_BODY_BYTES")

        async def chunks() -> Any:  # no Content-Length: the limit holds while reading
            for _ in range(5):
                yield b" " * 1024

        async with http.post(url, data=chunks(), headers=bearer()) as response:
            assert response.status == 413

        body = fresh()
        await expect(415, body, {**signed(body), "Content-Type": "text/plain"}, "must be application/json")
        body = b'{"event_id": "E-broken", '
        await expect(400, body, signed(body), "not valid JSON")

        good, bad = event(), event()
        refused += [good["event_id"], bad["event_id"]]
        del bad["created_at"]
        body = orjson.dumps({"tickets": [good, bad]})
        answer = await expect(400, body, signed(body), "Field required")
        assert (answer["field"], answer["index"]) == ("$.tickets[1].created_at", 1)
        invalid = {**event(), "account_tier": "platinum"}
        refused.append(invalid["event_id"])
        body = orjson.dumps(invalid)
        answer = await expect(400, body, bearer("ops"), "invalid TicketEvent at $.account_tier")
        assert "platinum" not in answer["error"] and answer["index"] == 0
        body = orjson.dumps({"tickets": [event(), event(), event()]})
        await expect(400, body, bearer(), "at most 2 per request")
        other = url.replace("/v1/tickets", "/v1/other")
        async with http.post(other, data=b"{}") as response:
            assert response.status == 401, "an unknown route is authenticated first"
        async with http.post(other, data=b"{}", headers=bearer()) as response:
            assert response.status == 404

        on_topic = ids_on(bootstrap, settings.input_topic, {accepted["event_id"]})
        assert on_topic == [accepted["event_id"]] and not set(refused) & set(on_topic)


async def test_a_burst_from_many_clients_loses_nothing_accepted_and_lets_nothing_else_in(
    bootstrap: str,
) -> None:
    tokens = {**TOKENS, "slow": SLOW_TOKEN}
    # 10,000 requests. Every client may send 1,820 at once (rate 1/s refills almost nothing): the
    # four busy clients' 1,800 each always fit, the slow client's 2,000 cannot, and its extra ones get 429.
    burst = 1_820
    settings = api_settings(bootstrap, api_tokens=pairs(tokens), api_rate_per_s=1, api_rate_burst=burst)
    per_client, slow_requests, forged_requests = 1_800, 2_000, 800
    async with running_router(settings) as running:
        url = f"http://127.0.0.1:{running.api_port}/v1/tickets"
        connector = aiohttp.TCPConnector(limit=64)
        outcomes: dict[str, list[str]] = {"202": [], "401": [], "429": [], "other": []}

        async def send(kind: str, client: str) -> None:
            ticket = event()
            body = orjson.dumps(ticket)
            if kind == "hmac":
                headers = signed(body, client)
            elif kind == "bearer":
                headers = {"Content-Type": "application/json", "Authorization": f"Bearer {tokens[client]}"}
            else:
                headers = signed(body, "zendesk", secret="forged-secret-0123456789abcdef")
            async with http.post(url, data=body, headers=headers) as response:
                answer = orjson.loads(await response.read())
                key = str(response.status) if str(response.status) in outcomes else "other"
                if response.status == 202:
                    assert answer == {"accepted": [ticket["event_id"]]}
                if response.status == 429:
                    assert int(response.headers["Retry-After"]) >= 1
                outcomes[key].append(ticket["event_id"])

        plan = [
            *[("hmac", "zendesk")] * per_client,
            *[("hmac", "intercom")] * per_client,
            *[("bearer", "intake")] * per_client,
            *[("bearer", "ops")] * per_client,
            *[("bearer", "slow")] * slow_requests,
            *[("forged", "zendesk")] * forged_requests,
        ]
        order = list(itertools.chain.from_iterable(itertools.zip_longest(*[plan[i::7] for i in range(7)])))
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.gather(
                *(send(kind, client) for kind, client in (o for o in order if o is not None))
            )

        assert outcomes["other"] == []
        assert len(outcomes["401"]) == forged_requests
        assert len(order) - order.count(None) == 10_000
        assert 0 < len(outcomes["429"]) <= slow_requests - burst + 120  # refill is 1/s: a bounded few
        assert len(outcomes["202"]) == 4 * per_client + slow_requests - len(outcomes["429"])
        on_topic = ids_on(bootstrap, settings.input_topic, set(outcomes["202"]))
        assert len(on_topic) == len(set(on_topic)), "an accepted ticket was produced twice"
        assert set(on_topic) == set(outcomes["202"]), "accepted and on the topic differ"
        refused_requests = running.metrics.registry.get_sample_value(
            "ticket_router_api_requests_total", {"route": "/v1/tickets", "status": "429"}
        )
        assert refused_requests == len(outcomes["429"])


def api_config(topic: str) -> IngestConfig:
    """The API alone (no router), waiting at most a second for acknowledgements."""
    return IngestConfig(
        topic=topic,
        tokens={},
        hmac_secrets={client: SecretStr(secret) for client, secret in SECRETS.items()},
        max_body_bytes=1_048_576,
        max_batch=10,
        rate_per_s=100,
        rate_burst=100,
        dedup_window=100,
        produce_timeout_s=1.0,
    )


async def test_a_broker_outage_answers_503_with_retry_after_and_accepts_nothing() -> None:
    own_broker = EmbeddedBroker()
    own_broker.start()
    topic = f"tickets-{uuid.uuid4().hex[:8]}"
    producer: AIOKafkaProducer | None = None
    runner = None
    try:
        create_topics(own_broker.bootstrap_servers, [topic])
        producer = AIOKafkaProducer(
            bootstrap_servers=own_broker.bootstrap_servers, acks="all", request_timeout_ms=3000
        )
        await producer.start()
        app = build_ingest_app(api_config(topic), kafka_delivery(producer, topic), Metrics())
        runner, port = await start_api(app, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}/v1/tickets"
        async with aiohttp.ClientSession() as http:
            body = orjson.dumps(event())
            status, _, _ = await post(http, url, body, signed(body))
            assert status == 202
            own_broker.stop()
            body = orjson.dumps(event())
            status, answer, headers = await post(http, url, body, signed(body))
            assert status == 503 and headers["Retry-After"] == "5"
            assert "accepted" not in answer and "retry with the same event ids" in answer["error"]
    finally:
        if runner is not None:
            await runner.cleanup()
        if producer is not None:
            await asyncio.wait_for(producer.stop(), 30)
        own_broker.stop()


async def test_a_taken_api_port_is_one_line_naming_api_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = build_ingest_app(api_config("unused"), kafka_delivery(AIOKafkaProducer(), "unused"), Metrics())
        with pytest.raises(UserError, match=rf"^API_PORT={port}: the port is already in use on 127\.0\.0\.1"):
            await start_api(app, "127.0.0.1", port)
