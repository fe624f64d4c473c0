"""The help desks' own webhook signatures: Zendesk's X-Zendesk-Webhook-Signature and Intercom's
X-Hub-Signature, checked purely (forged, stale, replayed, malformed) and over real HTTP to the
running service and the real broker, where nothing refused reaches the topic."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import SecretStr

from consumer.api.auth import (
    INTERCOM_MAX_AGE_S,
    SeenSignatures,
    SignedRequest,
    Unauthorized,
    intercom_client,
    intercom_signature_of,
    signature_key,
    zendesk_client,
    zendesk_signature_of,
)
from consumer.api.ingest import IngestConfig
from consumer.config import load_settings
from tests.kafka_helpers import running_router, unique
from tests.test_api_ingest import api_settings, bearer, pairs, post, records_on, signed
from tests.test_api_webhooks import intercom_payload, zendesk_payload

NOW = 1_795_000_000.0
ZENDESK = {
    "zendesk-eu": "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==",
    "zendesk-us": "us-signing-secret-0123456789",
}
INTERCOM = {"intercom": "a3c1f2d4-intercom-client-secret-99"}
ZENDESK_SECRETS = {client: SecretStr(secret) for client, secret in ZENDESK.items()}
INTERCOM_SECRETS = {client: SecretStr(secret) for client, secret in INTERCOM.items()}


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def zendesk_headers(
    body: bytes, secret: str = ZENDESK["zendesk-us"], at: float | None = None
) -> dict[str, str]:
    """What Zendesk sends with a webhook that has a signing secret."""
    stamp = iso(time.time() if at is None else at)
    return {
        "Content-Type": "application/json",
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        "X-Zendesk-Webhook-Signature": zendesk_signature_of(secret, stamp, body),
    }


def zendesk_request(body: bytes = b'{"ticket": {}}', **changes: Any) -> SignedRequest:
    headers = zendesk_headers(body, at=NOW) | changes
    return SignedRequest(
        None, headers["X-Zendesk-Webhook-Signature-Timestamp"], headers["X-Zendesk-Webhook-Signature"], body
    )


def intercom_headers(body: bytes, secret: str = INTERCOM["intercom"]) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hub-Signature": intercom_signature_of(secret, body)}


def refusal_of(check: Any) -> str:
    with pytest.raises(Unauthorized) as caught:
        check()
    message = str(caught.value)
    for secret in (*ZENDESK.values(), *INTERCOM.values()):
        assert secret not in message
    return message


# -- pure -----------------------------------------------------------------------------------------


def test_zendesk_signs_base64_hmac_sha256_of_the_timestamp_then_the_body() -> None:
    body, stamp, secret = b'{"say": "hello"}', "2021-07-25T10:00:00Z", "a-webhook-signing-secret"
    digest = hmac.new(secret.encode(), b"2021-07-25T10:00:00Z" + body, hashlib.sha256).digest()
    assert zendesk_signature_of(secret, stamp, body) == base64.b64encode(digest).decode()
    assert (
        intercom_signature_of(secret, body) == "sha1=" + hmac.new(secret.encode(), body, "sha1").hexdigest()
    )


def test_a_zendesk_signature_names_the_client_whose_secret_matches() -> None:
    assert zendesk_client(zendesk_request(), ZENDESK_SECRETS, NOW + 5, SeenSignatures()) == "zendesk-us"
    eu = SignedRequest(None, iso(NOW), zendesk_signature_of(ZENDESK["zendesk-eu"], iso(NOW), b"{}"), b"{}")
    assert zendesk_client(eu, ZENDESK_SECRETS, NOW, SeenSignatures()) == "zendesk-eu"


def test_forged_stale_malformed_and_replayed_zendesk_signatures_are_refused() -> None:
    seen = SeenSignatures()

    def refused(request: SignedRequest, now: float = NOW) -> str:
        return refusal_of(lambda: zendesk_client(request, ZENDESK_SECRETS, now, seen))

    forged = zendesk_request(
        **{"X-Zendesk-Webhook-Signature": zendesk_signature_of("guess" * 4, iso(NOW), b"{}")}
    )
    assert "does not match the body and timestamp" in refused(forged)
    tampered = zendesk_request()
    assert "does not match" in refused(
        SignedRequest(None, tampered.timestamp, tampered.signature, b'{"x": 1}')
    )
    assert "s old (allowed: 300 s)" in refused(zendesk_request(), now=NOW + 301)
    assert "in the future" in refused(zendesk_request(), now=NOW - 301)
    assert "must be base64" in refused(zendesk_request(**{"X-Zendesk-Webhook-Signature": "sha256=abc"}))
    assert "is not an ISO 8601 time" in refused(
        zendesk_request(**{"X-Zendesk-Webhook-Signature-Timestamp": "yesterday"})
    )
    assert "has no time zone" in refused(
        zendesk_request(**{"X-Zendesk-Webhook-Signature-Timestamp": "2026-11-20T09:15:00"})
    )
    assert len(seen) == 0, "nothing refused is remembered"
    request = zendesk_request()
    assert zendesk_client(request, ZENDESK_SECRETS, NOW, seen) == "zendesk-us"
    assert "already used (replayed request)" in refused(request, now=NOW + 10)
    seen.forget(signature_key(request.signature))  # what the API does when it did not accept the request
    assert zendesk_client(request, ZENDESK_SECRETS, NOW + 20, seen) == "zendesk-us"


def test_an_intercom_signature_is_checked_and_its_created_at_bounds_a_replay() -> None:
    body = orjson.dumps({"type": "notification_event", "created_at": int(NOW)})

    def refused(signature: str | None, payload: bytes = body, now: float = NOW) -> str:
        return refusal_of(lambda: intercom_client(signature, payload, INTERCOM_SECRETS, now))

    good = intercom_signature_of(INTERCOM["intercom"], body)
    assert intercom_client(good, body, INTERCOM_SECRETS, NOW + 60) == "intercom"
    assert intercom_client(good.upper().replace("SHA1=", "sha1="), body, INTERCOM_SECRETS, NOW) == "intercom"
    assert "does not match the body" in refused(intercom_signature_of("guessed-client-secret", body))
    assert "does not match the body" in refused(good, body.replace(b"notification", b"Notification"))
    assert "must be sha1=<40 hex digits>" in refused("sha256=" + "0" * 64)
    assert "must be sha1=<40 hex digits>" in refused(None)
    assert "s old" in refused(good, now=NOW + INTERCOM_MAX_AGE_S + 1)
    assert "in the future" in refused(good, now=NOW - 301)
    undated = orjson.dumps({"type": "notification_event"})
    assert "no numeric created_at" in refused(intercom_signature_of(INTERCOM["intercom"], undated), undated)


def test_secrets_and_tier_paths_are_settings_and_reach_the_api() -> None:
    settings = load_settings(
        tiers="local",
        api_port=0,
        api_tokens=pairs({"intake": "intake-token-0123456789abcdef"}),
        api_zendesk_secrets=pairs(ZENDESK),
        api_intercom_secrets=pairs(INTERCOM),
        api_zendesk_tier_path="ticket.organization.plan",
        api_intercom_tier_path="data.item.contacts.contacts[0].custom_attributes.plan",
    )
    config = IngestConfig.from_settings(settings)
    assert config.zendesk_secrets["zendesk-us"].get_secret_value() == ZENDESK["zendesk-us"]
    assert config.intercom_secrets["intercom"].get_secret_value() == INTERCOM["intercom"]
    assert config.zendesk_tier_path == ("ticket", "organization", "plan")
    assert config.intercom_tier_path == (
        "data",
        "item",
        "contacts",
        "contacts",
        0,
        "custom_attributes",
        "plan",
    )
    assert not any(secret in repr(settings) for secret in (*ZENDESK.values(), *INTERCOM.values()))


# -- over HTTP, with the real broker -------------------------------------------------------------


def native_settings(bootstrap: str) -> Any:
    return api_settings(
        bootstrap,
        api_zendesk_secrets=pairs(ZENDESK),
        api_intercom_secrets=pairs(INTERCOM),
        api_zendesk_tier_path="ticket.plan",
    )


@pytest.mark.integration
async def test_a_natively_signed_zendesk_webhook_is_accepted_and_forgeries_reach_nothing(
    bootstrap: str,
) -> None:
    settings = native_settings(bootstrap)
    async with running_router(settings) as running, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{running.api_port}"
        url = base + "/v1/webhooks/zendesk"
        refused: list[str] = []

        async def expect_401(body: bytes, headers: dict[str, str], says: str, to: str = url) -> None:
            refused.append(f"zendesk:{orjson.loads(body)['ticket']['id']}:created")
            status, answer, response_headers = await post(http, to, body, headers)
            assert (status, says in answer["error"]) == (401, True), answer
            assert not any(secret in str(answer) + str(response_headers) for secret in ZENDESK.values())

        def fresh() -> bytes:
            return orjson.dumps(zendesk_payload(id=unique("Z")))

        body = fresh()
        await expect_401(body, zendesk_headers(body, secret="an-attacker-guessed-this"), "does not match")
        body = fresh()
        await expect_401(body, zendesk_headers(body, at=time.time() - 301), "s old (allowed: 300 s)")
        body = fresh()
        tampered = zendesk_headers(body)
        await expect_401(body.replace(b"charged", b"CHARGED"), tampered, "does not match")
        body = fresh()
        no_stamp = {k: v for k, v in zendesk_headers(body).items() if "Timestamp" not in k}
        await expect_401(body, no_stamp, "Timestamp header missing")
        body = fresh()  # Zendesk's signature is accepted on its own route only
        await expect_401(body, zendesk_headers(body), "credentials missing", to=base + "/v1/tickets")

        ticket = unique("Z")
        body = orjson.dumps(zendesk_payload(id=ticket, plan="enterprise"))
        headers = zendesk_headers(body)
        status, answer, _ = await post(http, url, body, headers)
        accepted = f"zendesk:{ticket}:created"
        assert (status, answer) == (202, {"accepted": [accepted]})
        refused_replay = await post(http, url, body, headers)
        assert refused_replay[0] == 401 and "replayed request" in refused_replay[1]["error"]

        # A signed delivery that was not accepted (400 here) may come again as it was: a retry.
        unreadable = orjson.dumps({"ticket": {"id": unique("Z")}})
        headers = zendesk_headers(unreadable)
        for _ in range(2):
            status, answer, _ = await post(http, url, unreadable, headers)
            assert status == 400 and answer["field"] == "$.ticket.description", answer

        # Bearer tokens stay accepted on the route (Zendesk's "Bearer token" authentication).
        again = orjson.dumps(zendesk_payload(id=unique("Z")))
        assert (await post(http, url, again, bearer()))[0] == 202
        on_topic = records_on(bootstrap, settings.input_topic, {accepted})
        [record] = [r for r in on_topic if r["event_id"] == accepted]
        assert record["account_tier"] == "enterprise", "API_ZENDESK_TIER_PATH=ticket.plan"
        assert not {r["event_id"] for r in on_topic} & set(refused)
        assert len(on_topic) == 2


@pytest.mark.integration
async def test_a_natively_signed_intercom_webhook_is_accepted_and_a_forged_one_reaches_nothing(
    bootstrap: str,
) -> None:
    settings = native_settings(bootstrap)
    async with running_router(settings) as running, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{running.api_port}"
        url = base + "/v1/webhooks/intercom"

        def notification() -> tuple[bytes, str]:
            payload = intercom_payload(id=unique("C"))
            payload["created_at"] = int(time.time())
            return orjson.dumps(payload), f"intercom:{payload['data']['item']['id']}:created"

        body, accepted = notification()
        assert (await post(http, url, body, intercom_headers(body)))[:2] == (202, {"accepted": [accepted]})
        # Intercom's retry (or a replay) of the same bytes: a duplicate, answered and not produced again.
        assert (await post(http, url, body, intercom_headers(body)))[:2] == (202, {"accepted": [accepted]})

        forged, forged_id = notification()
        status, answer, _ = await post(
            http, url, forged, intercom_headers(forged, secret="guessed-secret-value")
        )
        assert status == 401 and "does not match the body" in answer["error"]
        stale = orjson.loads(forged) | {"created_at": int(time.time()) - INTERCOM_MAX_AGE_S - 60}
        stale_body = orjson.dumps(stale)
        status, answer, _ = await post(http, url, stale_body, intercom_headers(stale_body))
        assert status == 401 and "s old" in answer["error"]
        elsewhere, elsewhere_id = notification()  # Intercom's signature on Zendesk's route
        status, answer, _ = await post(
            http, base + "/v1/webhooks/zendesk", elsewhere, intercom_headers(elsewhere)
        )
        assert status == 401 and "credentials missing" in answer["error"]
        # Our own X-Signature remains accepted beside Intercom's.
        ours, ours_id = notification()
        assert (await post(http, url, ours, signed(ours, "intercom")))[:2] == (202, {"accepted": [ours_id]})

        on_topic = [r["event_id"] for r in records_on(bootstrap, settings.input_topic, {accepted, ours_id})]
        assert sorted(on_topic) == sorted([accepted, ours_id])
        assert forged_id not in on_topic and elsewhere_id not in on_topic
