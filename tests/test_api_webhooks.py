"""Zendesk and Intercom webhooks: the pure adapters on the help desks' documented shapes, and one
signed webhook per help desk over real HTTP to the running service and the real broker."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest

from consumer.api.webhooks import PayloadError, Skipped, html_to_text, intercom_event, zendesk_event
from schemas.events import AccountTier, Channel, EventType, TicketEvent
from tests.kafka_helpers import OutcomeCounter, running_router, unique
from tests.test_api_ingest import api_settings, bearer, post, records_on, signed


def zendesk_payload(**ticket: Any) -> dict[str, Any]:
    """What Zendesk sends with the README's body template, placeholders rendered."""
    fields: dict[str, Any] = {
        "id": "35436",
        "event": "created",
        "subject": "Charged twice for March",
        "description": "Hello, my card was charged twice for the March invoice. Please refund one.",
        "requester_id": "20978392",
        "via": "Mail",
        "created_at": "2026-11-20T09:15:00Z",
        "updated_at": "2026-11-20T09:15:00Z",
    }
    return {"ticket": fields | ticket}


def intercom_payload(topic: str = "conversation.user.created", **item: Any) -> dict[str, Any]:
    """An Intercom notification_event as its webhook docs show it (trimmed to what is read)."""
    conversation: dict[str, Any] = {
        "type": "conversation",
        "id": "147",
        "created_at": 1_795_000_000,
        "updated_at": 1_795_000_100,
        "source": {
            "type": "conversation",
            "id": "403918330",
            "delivered_as": "customer_initiated",
            "subject": "",
            "body": "<p>The app <b>crashes</b> when I log in&nbsp;on iOS.</p><p>Version 4.2 &amp; up.</p>",
            "author": {"type": "user", "id": "5310d8e7598c9a0b24000002", "name": "Ada"},
        },
        "conversation_parts": {"type": "conversation_part.list", "conversation_parts": []},
    }
    return {
        "type": "notification_event",
        "topic": topic,
        "id": unique("notif_"),
        "created_at": 1_795_000_200,
        "data": {"type": "notification_event_data", "item": conversation | item},
    }


def intercom_reply() -> dict[str, Any]:
    payload = intercom_payload("conversation.user.replied")
    payload["data"]["item"]["conversation_parts"]["conversation_parts"] = [
        {
            "type": "conversation_part",
            "id": "9001",
            "part_type": "comment",
            "body": "<p>Still broken after the update.<br>Any news?</p>",
            "created_at": 1_795_000_150,
            "author": {"type": "user", "id": "5310d8e7598c9a0b24000002"},
        }
    ]
    return payload


def payload_error(adapter: Any, payload: object) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        adapter(payload)
    return caught.value


# -- pure adapters --------------------------------------------------------------------------------


def test_a_zendesk_ticket_becomes_a_created_event_with_its_channel_and_default_tier() -> None:
    event = zendesk_event(zendesk_payload())
    assert event.event_id == "zendesk:35436:created"
    assert event.event_type is EventType.CREATED
    assert (event.ticket_id, event.customer_id) == ("zendesk-35436", "20978392")
    assert event.subject == "Charged twice for March"
    assert event.body.startswith("Hello, my card was charged twice")
    assert event.channel is Channel.EMAIL
    assert event.account_tier is AccountTier.STARTER
    assert event.created_at == datetime(2026, 11, 20, 9, 15, tzinfo=UTC)


def test_a_zendesk_comment_is_a_message_added_event_per_comment() -> None:
    first = zendesk_event(
        zendesk_payload(event="comment_added", latest_comment="Any update?", latest_comment_id=7)
    )
    second = zendesk_event(
        zendesk_payload(event="comment_added", latest_comment="Hello?", latest_comment_id=8)
    )
    assert first.event_type is EventType.MESSAGE_ADDED and first.body == "Any update?"
    assert first.event_id == "zendesk:35436:comment:7" != second.event_id
    # Without a comment id the update time tells comments apart.
    later = zendesk_event(
        zendesk_payload(event="comment_added", latest_comment="Hi", updated_at="2026-11-21T10:00:00+01:00")
    )
    assert later.event_id == "zendesk:35436:comment:2026-11-21T10:00:00+01:00"
    assert later.created_at == datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("via", "channel"),
    [
        ("Mail", Channel.EMAIL),
        ("Web form", Channel.WEB),
        ("Web service", Channel.API),
        ("API", Channel.API),
        ("Phone call (incoming)", Channel.PHONE),
        ("Chat", Channel.CHAT),
        ("Messaging", Channel.CHAT),
        ("Something new", Channel.WEB),
        ("", Channel.WEB),
    ],
)
def test_zendesk_via_maps_to_a_router_channel(via: str, channel: Channel) -> None:
    assert zendesk_event(zendesk_payload(via=via)).channel is channel


def test_a_mapped_tier_field_is_used_and_unknown_plans_fall_back_to_starter() -> None:
    assert zendesk_event(zendesk_payload(account_tier="Enterprise")).account_tier is AccountTier.ENTERPRISE
    assert zendesk_event(zendesk_payload(account_tier="gold")).account_tier is AccountTier.STARTER
    plan = zendesk_payload(plan="pro")
    assert zendesk_event(plan, tier_path=("ticket", "plan")).account_tier is AccountTier.PRO
    intercom = intercom_payload(custom_attributes={"account_tier": "free"})
    event = intercom_event(intercom)
    assert isinstance(event, TicketEvent) and event.account_tier is AccountTier.FREE


def test_a_redelivered_webhook_has_the_same_event_id() -> None:
    assert zendesk_event(zendesk_payload()).event_id == zendesk_event(zendesk_payload()).event_id
    first, again = intercom_payload(), intercom_payload()
    assert first["id"] != again["id"]  # even a fresh notification id for the same message
    one, two = intercom_event(first), intercom_event(again)
    assert isinstance(one, TicketEvent) and isinstance(two, TicketEvent)
    assert one.event_id == two.event_id == "intercom:147:created"


def test_an_intercom_conversation_becomes_a_created_event_with_html_stripped() -> None:
    event = intercom_event(intercom_payload())
    assert isinstance(event, TicketEvent)
    assert event.event_type is EventType.CREATED
    assert (event.ticket_id, event.customer_id) == ("intercom-147", "5310d8e7598c9a0b24000002")
    assert event.body == "The app crashes when I log in on iOS.\nVersion 4.2 & up."
    assert event.channel is Channel.CHAT
    assert event.created_at == datetime.fromtimestamp(1_795_000_000, UTC)
    email = intercom_payload()
    email["data"]["item"]["source"]["type"] = "email"
    email_event = intercom_event(email)
    assert isinstance(email_event, TicketEvent) and email_event.channel is Channel.EMAIL


def test_an_intercom_reply_is_a_message_added_event_from_the_newest_part() -> None:
    event = intercom_event(intercom_reply())
    assert isinstance(event, TicketEvent)
    assert event.event_type is EventType.MESSAGE_ADDED
    assert event.event_id == "intercom:147:part:9001"
    assert event.body == "Still broken after the update.\nAny news?"
    assert event.created_at == datetime.fromtimestamp(1_795_000_150, UTC)


def test_an_intercom_topic_that_is_not_a_customer_message_is_skipped_with_a_reason() -> None:
    outcome = intercom_event(intercom_payload("conversation.admin.replied"))
    assert isinstance(outcome, Skipped) and "conversation.admin.replied" in outcome.reason


def test_html_to_text_drops_scripts_and_keeps_blocks_as_lines() -> None:
    markup = "<div>Hi&lt;3</div><script>alert(1)</script><ul><li>one</li><li>two</li></ul>plain"
    assert html_to_text(markup) == "Hi<3\none\ntwo\nplain"


@pytest.mark.parametrize(
    ("adapter", "payload", "field"),
    [
        (zendesk_event, {"id": 1}, "$.ticket"),
        (zendesk_event, zendesk_payload(id=None), "$.ticket.id"),
        (zendesk_event, zendesk_payload(requester_id=""), "$.ticket.requester_id"),
        (zendesk_event, zendesk_payload(description={"x": 1}), "$.ticket.description"),
        (zendesk_event, zendesk_payload(created_at="last Tuesday"), "$.ticket.created_at"),
        (zendesk_event, zendesk_payload(event="deleted"), "$.ticket.event"),
        (zendesk_event, zendesk_payload(event="comment_added"), "$.ticket.latest_comment"),
        (zendesk_event, zendesk_payload(subject="x" * 3000), "$.subject"),
        (intercom_event, [], "$"),
        (intercom_event, {"type": "notification_event"}, "$.topic"),
    ],
)
def test_an_unreadable_payload_names_the_field(adapter: Any, payload: object, field: str) -> None:
    assert payload_error(adapter, payload).field == field


def test_an_unreadable_intercom_payload_names_the_field() -> None:
    no_author = intercom_payload()
    del no_author["data"]["item"]["source"]["author"]
    assert payload_error(intercom_event, no_author).field == "$.data.item.source.author.id"
    only_tags = intercom_payload()
    only_tags["data"]["item"]["source"]["body"] = "<p> </p>"
    assert payload_error(intercom_event, only_tags).field == "$.data.item.source.body"
    no_parts = intercom_payload("conversation.user.replied")
    assert (
        payload_error(intercom_event, no_parts).field == "$.data.item.conversation_parts.conversation_parts"
    )
    no_item = copy.deepcopy(intercom_payload())
    del no_item["data"]["item"]
    assert payload_error(intercom_event, no_item).field == "$.data.item.id"


# -- over HTTP, with the real broker -------------------------------------------------------------


async def deliver_twice_and_check(bootstrap: str, route: str, payload: dict[str, Any], client: str) -> None:
    """A signed webhook is answered 202 with its event id, is on the input topic once even when
    the help desk delivers it again, and is routed."""
    settings = api_settings(bootstrap)
    counter = OutcomeCounter()
    async with (
        running_router(settings, extra_hooks=[counter.hook]) as running,
        aiohttp.ClientSession() as http,
    ):
        url = f"http://127.0.0.1:{running.api_port}{route}"
        body = orjson.dumps(payload)
        status, answer, _ = await post(http, url, body, signed(body, client))
        assert status == 202, answer
        [event_id] = answer["accepted"]
        # Redelivered (by bearer token, as the README sets help desks up): answered, not produced again.
        assert (await post(http, url, body, bearer()))[:2] == (202, {"accepted": [event_id]})
        [record] = [
            r for r in records_on(bootstrap, settings.input_topic, {event_id}) if r["event_id"] == event_id
        ]
        assert record["metadata"]["source"] == route.rsplit("/", 1)[1]
        await counter.wait_for(1)
        assert counter.outcomes[0].kind == "routed" and counter.outcomes[0].ticket_id == record["ticket_id"]

        # Unreadable: 400 naming the field, nothing produced (the topic still holds one record).
        broken = orjson.dumps({"unexpected": True})
        status, answer, _ = await post(http, url, broken, signed(broken, client))
        assert status == 400 and answer["field"] in {"$.ticket", "$.topic"}
        assert len(records_on(bootstrap, settings.input_topic, {event_id})) == 1


@pytest.mark.integration
async def test_a_signed_zendesk_webhook_is_on_the_topic_before_202_and_is_routed(bootstrap: str) -> None:
    payload = zendesk_payload(id=unique("Z"))
    await deliver_twice_and_check(bootstrap, "/v1/webhooks/zendesk", payload, "zendesk")


@pytest.mark.integration
async def test_a_signed_intercom_webhook_is_on_the_topic_before_202_and_is_routed(bootstrap: str) -> None:
    payload = intercom_payload(id=unique("C"))
    await deliver_twice_and_check(bootstrap, "/v1/webhooks/intercom", payload, "intercom")
    # An admin's reply is acknowledged and skipped; an unsigned webhook is refused.
    settings = api_settings(bootstrap)
    async with running_router(settings) as running, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{running.api_port}/v1/webhooks/intercom"
        admin = orjson.dumps(intercom_payload("conversation.admin.replied"))
        status, answer, _ = await post(http, url, admin, signed(admin, "intercom"))
        assert status == 202 and answer["accepted"] == [] and "admin.replied" in answer["skipped"]
        unsigned = orjson.dumps(intercom_payload(id=unique("C")))
        status, answer, _ = await post(http, url, unsigned, {"Content-Type": "application/json"})
        assert status == 401
