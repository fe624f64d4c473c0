"""Generic JSON webhook mappings (API_WEBHOOK_MAPPINGS): the pure mapping on a Freshdesk-like
payload, its start-up checks, and one mapped webhook over real HTTP to the running service and the
real broker."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from consumer.api.mapping import mapped_event, parse_mappings, parse_path
from consumer.api.webhooks import PayloadError
from consumer.config import ConfigError, load_settings
from schemas.events import AccountTier, Channel, EventType
from tests.kafka_helpers import OutcomeCounter, running_router, unique
from tests.test_api_ingest import api_settings, bearer, post, records_on
from tests.test_config import consume_with

NOW = datetime(2026, 11, 20, 9, 15, tzinfo=UTC)
FRESHDESK_MAPPING: dict[str, Any] = {
    "freshdesk": {
        "event_id": ["ticket.id"],
        "fields": {
            "ticket_id": {"path": "ticket.id", "prefix": "freshdesk-"},
            "subject": "ticket.subject",
            "body": {"path": "ticket.description", "html": True},
            "customer_id": "ticket.requester_email",
            "account_tier": {
                "path": "ticket.plan",
                "map": {"Enterprise plan": "enterprise", "Growth": "pro", "Starter": "starter"},
                "default": "starter",
            },
            "channel": {
                "path": "ticket.source",
                "map": {"Email": "email", "Portal": "web", "Phone": "phone", "Chat": "chat"},
                "default": "web",
            },
            "metadata.freshdesk_url": "ticket.url",
        },
    }
}


def freshdesk_payload(**ticket: Any) -> dict[str, Any]:
    """What a Freshdesk "Trigger webhook" action sends with the README's body template."""
    fields: dict[str, Any] = {
        "id": "4711",
        "subject": "Refund for a double charge",
        "description": "<div>I was charged <b>twice</b> this month.</div><div>Order 88&amp;89</div>",
        "requester_email": "ada@example.com",
        "plan": "GROWTH",
        "source": "Email",
        "url": "https://acme.freshdesk.com/a/tickets/4711",
    }
    return {"ticket": fields | ticket}


def freshdesk() -> Any:
    return parse_mappings(FRESHDESK_MAPPING)["freshdesk"]


def unreadable(payload: object, mapping: dict[str, Any] | None = None) -> PayloadError:
    chosen = parse_mappings(mapping)["freshdesk"] if mapping else freshdesk()
    with pytest.raises(PayloadError) as caught:
        mapped_event(chosen, payload, NOW)
    return caught.value


# -- pure: paths and one payload -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("ticket.id", ("ticket", "id")),
        ("$.data.items[0].body", ("data", "items", 0, "body")),
        ("parts[-1]", ("parts", -1)),
        ("[2].x", (2, "x")),
        ("a[0][1]", ("a", 0, 1)),
    ],
)
def test_json_paths_are_dotted_keys_with_list_indices(text: str, steps: tuple[str | int, ...]) -> None:
    assert parse_path(text) == steps


@pytest.mark.parametrize("text", ["", "a..b", "a.", "a[x]", "a]b", "$."])
def test_a_malformed_json_path_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a JSON path"):
        parse_path(text)


def test_a_freshdesk_payload_becomes_a_ticket_event() -> None:
    event = mapped_event(freshdesk(), freshdesk_payload(), NOW)
    assert event.event_id == "freshdesk:4711"
    assert event.ticket_id == "freshdesk-4711"
    assert event.event_type is EventType.CREATED
    assert event.body == "I was charged twice this month.\nOrder 88&89"
    assert event.customer_id == "ada@example.com"
    assert event.account_tier is AccountTier.PRO  # "GROWTH": value maps ignore case
    assert event.channel is Channel.EMAIL
    assert event.created_at == NOW  # not mapped: the time the webhook arrived
    assert event.metadata == {
        "source": "freshdesk",
        "freshdesk_url": "https://acme.freshdesk.com/a/tickets/4711",
    }


def test_a_redelivered_payload_has_the_same_event_id_and_unknown_values_take_the_default() -> None:
    later = datetime(2026, 11, 21, tzinfo=UTC)
    assert mapped_event(freshdesk(), freshdesk_payload(), NOW).event_id == (
        mapped_event(freshdesk(), freshdesk_payload(), later).event_id
    )
    odd = mapped_event(freshdesk(), freshdesk_payload(plan="Legacy gold", source=None), NOW)
    assert (odd.account_tier, odd.channel) == (AccountTier.STARTER, Channel.WEB)


def test_paths_with_list_indices_constants_and_a_mapped_created_at() -> None:
    mapping = copy.deepcopy(FRESHDESK_MAPPING)
    fields = mapping["freshdesk"]["fields"]
    fields["customer_id"] = "ticket.requester.emails[0]"
    fields["event_type"] = {"const": "ticket.message_added"}
    fields["created_at"] = "ticket.created_at"
    mapping["freshdesk"]["event_id"] = ["ticket.id", "ticket.conversations[-1].id"]
    payload = freshdesk_payload(
        requester={"emails": ["first@example.com", "second@example.com"]},
        conversations=[{"id": 1}, {"id": 2}],
        created_at="2026-11-19T08:00:00+01:00",
    )
    event = mapped_event(parse_mappings(mapping)["freshdesk"], payload, NOW)
    assert (event.customer_id, event.event_id) == ("first@example.com", "freshdesk:4711:2")
    assert event.event_type is EventType.MESSAGE_ADDED
    assert event.created_at == datetime(2026, 11, 19, 7, 0, tzinfo=UTC)


def test_an_unreadable_payload_names_its_json_path_and_never_its_value() -> None:
    assert unreadable([1, 2]).field == "$"
    assert unreadable(freshdesk_payload(id=None)).field == "$.ticket.id"  # the event id's part
    assert unreadable(freshdesk_payload(requester_email="")).field == "$.ticket.requester_email"
    assert unreadable(freshdesk_payload(description="<p> </p>")).field == "$.ticket.description"
    assert unreadable(freshdesk_payload(subject="x" * 3000)).field == "$.ticket.subject"
    mapping = copy.deepcopy(FRESHDESK_MAPPING)
    mapping["freshdesk"]["fields"]["channel"] = "ticket.source"  # no map: must already be a channel
    problem = unreadable(freshdesk_payload(source="Carrier pigeon"), mapping)
    assert problem.field == "$.ticket.source" and "allowed: email, web" in problem.problem
    assert "pigeon" not in str(problem)
    mapping["freshdesk"]["fields"]["created_at"] = "ticket.created_at"
    assert unreadable(freshdesk_payload(created_at="last Tuesday"), mapping).field == "$.ticket.created_at"


# -- start-up checks ------------------------------------------------------------------------------


def with_change(change: dict[str, Any], drop: str | None = None) -> dict[str, Any]:
    mapping = copy.deepcopy(FRESHDESK_MAPPING)
    mapping["freshdesk"]["fields"].update(change)
    if drop:
        del mapping["freshdesk"]["fields"][drop]
    return mapping


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            with_change({"colour": "ticket.colour"}),
            "freshdesk.fields: unknown field 'colour' (fields: event_type,",
        ),
        (with_change({"event_id": "ticket.id"}), "unknown field 'event_id' (event_id has its own key"),
        (with_change({}, drop="body"), "freshdesk.fields: body must be mapped (a path or a const)"),
        (
            with_change({"subject": {"path": "a", "html": "yes"}}),
            "freshdesk.fields.subject.html: expected true",
        ),
        (
            with_change({"subject": {"path": "a", "colour": 1}}),
            "subject: unknown key 'colour' (allowed: path,",
        ),
        (with_change({"subject": {"path": "a", "const": "b"}}), "subject: give exactly one of path or const"),
        (with_change({"subject": "a..b"}), "freshdesk.fields.subject: 'a..b' is not a JSON path"),
        (
            with_change({"channel": {"path": "s", "map": {"Portal": "site"}}}),
            "channel.map.Portal: 'site' is not a valid channel (allowed: email, web, chat, phone, api)",
        ),
        (
            with_change({"account_tier": {"const": "gold"}}),
            "const: 'gold' is not a valid account_tier (allowed: free, starter, pro, enterprise)",
        ),
        (with_change({"channel": {"path": "s", "prefix": "x"}}), "channel.prefix: only for text fields"),
        ({"freshdesk": {"fields": {}}}, "freshdesk.event_id: expected the JSON paths that identify one"),
        ({"freshdesk": {"event_id": "id", "fields": {}, "extra": 1}}, "freshdesk: unknown key 'extra'"),
        ({"zendesk": FRESHDESK_MAPPING["freshdesk"]}, "zendesk: reserved (the zendesk adapter has its own"),
        ({"Fresh Desk": FRESHDESK_MAPPING["freshdesk"]}, "'Fresh Desk': a mapping name is 1-40 of a-z"),
        ([1], "expected an object of mapping name: {event_id, fields}"),
    ],
)
def test_a_bad_mapping_is_one_line_naming_the_key_and_the_allowed_values(
    document: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tiers="local", api_webhook_mappings=document)
    message = str(caught.value)
    assert message.startswith("API_WEBHOOK_MAPPINGS: ") and expected in message, message
    assert "\n" not in message


def test_a_mapping_file_is_read_at_start_up(tmp_path: Path) -> None:
    good = tmp_path / "mappings.yaml"
    good.write_text(yaml.safe_dump(FRESHDESK_MAPPING))
    settings = load_settings(tiers="local", api_webhook_mappings=str(good))
    assert list(settings.api_webhook_mappings) == ["freshdesk"]
    assert load_settings(tiers="local", api_webhook_mappings="").api_webhook_mappings == {}
    broken = tmp_path / "broken.yaml"
    broken.write_text("freshdesk:\n  fields: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^API_WEBHOOK_MAPPINGS: {broken}: not valid YAML at line \d+$"):
        load_settings(tiers="local", api_webhook_mappings=str(broken))
    with pytest.raises(
        ConfigError, match=r"^API_WEBHOOK_MAPPINGS: cannot read .*: No such file or directory$"
    ):
        load_settings(tiers="local", api_webhook_mappings=str(tmp_path / "absent.yaml"))


def test_a_bad_mapping_stops_the_service_with_one_line_and_status_2(tmp_path: Path) -> None:
    bad = tmp_path / "mappings.yaml"
    bad.write_text(yaml.safe_dump(with_change({"channel": {"path": "s", "map": {"Portal": "site"}}})))
    done = consume_with(API_WEBHOOK_MAPPINGS=str(bad))
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line == (
        f"ticket-router: error: API_WEBHOOK_MAPPINGS: {bad}: freshdesk.fields.channel.map.Portal: "
        "'site' is not a valid channel (allowed: email, web, chat, phone, api)"
    )


# -- over HTTP, with the real broker -------------------------------------------------------------


@pytest.mark.integration
async def test_a_mapped_webhook_is_on_the_topic_once_and_routed_and_a_bad_one_is_400(
    bootstrap: str, tmp_path: Path
) -> None:
    mappings = tmp_path / "mappings.yaml"
    mappings.write_text(yaml.safe_dump(FRESHDESK_MAPPING))
    settings = api_settings(bootstrap, api_webhook_mappings=str(mappings))
    counter = OutcomeCounter()
    async with (
        running_router(settings, extra_hooks=[counter.hook]) as running,
        aiohttp.ClientSession() as http,
    ):
        url = f"http://127.0.0.1:{running.api_port}/v1/webhooks/freshdesk"
        ticket = unique("F")
        body = orjson.dumps(freshdesk_payload(id=ticket))
        assert (await post(http, url, body, bearer()))[:2] == (202, {"accepted": [f"freshdesk:{ticket}"]})
        # Freshdesk delivers it again: answered the same, not produced again.
        assert (await post(http, url, body, bearer()))[:2] == (202, {"accepted": [f"freshdesk:{ticket}"]})
        await counter.wait_for(1)
        assert counter.outcomes[0].kind == "routed" and counter.outcomes[0].ticket_id == f"freshdesk-{ticket}"

        broken = orjson.dumps(freshdesk_payload(id=unique("F"), requester_email=None))
        status, answer, _ = await post(http, url, broken, bearer())
        assert status == 400 and answer["field"] == "$.ticket.requester_email", answer
        async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
            assert response.status == 401, "a mapped route is authenticated like every other"
        other = url.replace("/freshdesk", "/helpscout")
        assert (await post(http, other, body, bearer()))[0] == 404

        [record] = records_on(bootstrap, settings.input_topic, {f"freshdesk:{ticket}"})
        assert record["ticket_id"] == f"freshdesk-{ticket}" and record["account_tier"] == "pro"
        assert record["body"] == "I was charged twice this month.\nOrder 88&89"
