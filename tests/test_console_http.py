"""The triage console over real HTTP on a running router (real broker): the gate still guards every
/v1 route, the console's own sign-in, CSRF and rate limit refuse what they must, and two people
deciding one record at once route it once."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from consumer.console.app import PERSON_BURST, Console
from consumer.console.decide import CLAIM_TIMEOUT_S, DoneMark, human_route, human_routed_ticket, new_mark_id
from consumer.console.inbox import InboxItem, ticket_of
from consumer.console.passwords import hash_password
from consumer.service import RunningService
from consumer.taxonomy import load_taxonomy
from producer_tools.explain import EventReader
from producer_tools.fake_api.scenario import ModelScript, Scenario
from producer_tools.fake_api.threaded import run_in_thread
from schemas.codec import encode
from schemas.events import AxisPrediction, Classification, ErrorKind, TriageRecord
from tests.kafka_helpers import consume_until, produce, running_router, unique
from tests.test_api_explain import FAST, STRONG, streamed_text
from tests.test_api_ingest import api_settings, bearer, records_on
from tests.test_tools_cli import triage

pytestmark = pytest.mark.integration

USER, PASSWORD = "ana", "ana-password-1"
OTHER, OTHER_PASSWORD = "bob", "bob-password-2"
USERS = f"{USER}:{hash_password(PASSWORD)},{OTHER}:{hash_password(OTHER_PASSWORD)}"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
TAXONOMY = load_taxonomy()


@dataclass
class Setup:
    running: RunningService
    console: Console
    base: str
    bootstrap: str
    settings: Any


@asynccontextmanager
async def console_router(bootstrap: str, **overrides: Any) -> AsyncIterator[Setup]:
    values = {
        "console_users": USERS,
        "console_cookie_secure": False,
        "console_decisions_topic": unique("decisions"),  # only this test's marks
    } | overrides
    settings = api_settings(bootstrap, **values)
    async with running_router(settings) as running:
        assert running.console is not None
        await asyncio.wait_for(running.console.reader.caught_up.wait(), 30)
        yield Setup(running, running.console, f"http://127.0.0.1:{running.api_port}", bootstrap, settings)


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(http: aiohttp.ClientSession, base: str, user: str = USER, password: str = PASSWORD) -> int:
    """The sign-in form's answer; its cookie is sent by hand, so a Secure one works over HTTP too."""
    async with http.get(f"{base}/console/sign-in") as page:
        token = CSRF.search(await page.text())
        sent = {"Cookie": page.headers["Set-Cookie"].split(";")[0]}
    assert token is not None
    form = {"csrf": token.group(1), "user": user, "password": password}
    async with http.post(f"{base}/console/sign-in", data=form, headers=sent, allow_redirects=False) as answer:
        return answer.status


async def page_csrf(http: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    async with http.get(url) as page:
        text = await page.text()
    found = CSRF.search(text)
    assert found is not None, text[:500]
    return text, found.group(1)


async def triaged(setup: Setup, records: list[TriageRecord]) -> dict[str, InboxItem]:
    """Triage records on the triage topic, by ticket id once the console has indexed them all."""
    topic = setup.settings.triage_topic
    produce(setup.bootstrap, topic, [(str(r.ticket_id).encode(), encode(r)) for r in records])
    reader = setup.console.reader
    wanted = {r.ticket_id for r in records}

    def indexed() -> dict[str, InboxItem]:
        return {item.ticket_id: item for item in reader.inbox.items() if item.ticket_id in wanted}

    await asyncio.wait_for(reader.wait_until(lambda: len(indexed()) == len(wanted)), 20)
    return indexed()


async def triaged_record(setup: Setup, index: int) -> tuple[str, int, int]:
    """A low_confidence triage record on the triage topic, once the console has indexed it."""
    found = (await triaged(setup, [triage(index, ErrorKind.LOW_CONFIDENCE)]))[f"T-{index:04d}"]
    return found.topic, found.partition, found.offset


LABELS = {"team": "billing", "ticket_type": "billing_dispute", "urgency": "high", "sentiment": "angry"}


def decide_form(csrf: str) -> dict[str, str]:
    return {"csrf": csrf} | {f"label.{axis}": label for axis, label in LABELS.items()}


async def test_signed_out_requests_see_no_ticket_and_v1_routes_keep_their_gate(bootstrap: str) -> None:
    async with console_router(bootstrap) as setup, client() as http:
        topic, partition, offset = await triaged_record(setup, 1)
        record_url = f"{setup.base}/console/record/{topic}/{partition}/{offset}"
        for url in (f"{setup.base}/console/", record_url, f"{setup.base}/console/overview"):
            async with http.get(url, allow_redirects=False) as answer:
                assert (answer.status, answer.headers["Location"]) == (303, "/console/sign-in")
                assert "body of ticket" not in await answer.text()
        async with http.post(f"{record_url}/decide", data=decide_form("x"), allow_redirects=False) as answer:
            assert answer.status == 401
        async with http.get(f"{setup.base}/console/explain", params={"topic": topic}) as answer:
            assert answer.status == 401
        async with http.get(f"{setup.base}/v1/openapi.json") as answer:  # no credentials: still refused
            assert answer.status == 401
        async with http.post(f"{setup.base}/v1/tickets", data=b"{}") as answer:
            assert answer.status == 401 and "credentials missing" in (await answer.json())["error"]
        async with http.get(f"{setup.base}/v1/openapi.json", headers=bearer()) as answer:
            paths = (await answer.json())["paths"]
            assert paths and not any(path.startswith("/console") for path in paths)
        async with http.get(f"{setup.base}/console/nowhere", allow_redirects=False) as answer:
            assert answer.status == 303  # under the console's prefix: its sign-in, not the gate's 401
        assert await sign_in(http, setup.base) == 303
        async with http.get(record_url) as answer:
            assert answer.status == 200 and "body of ticket 1" in await answer.text()
            assert answer.headers["Cache-Control"] == "no-store"


async def test_a_signed_in_person_is_rate_limited_too(bootstrap: str) -> None:
    async with console_router(bootstrap) as setup, client() as http:
        assert await sign_in(http, setup.base) == 303
        statuses = []
        for _ in range(PERSON_BURST + 5):
            async with http.get(f"{setup.base}/console/overview", allow_redirects=False) as answer:
                statuses.append(answer.status)
                retry_after = answer.headers.get("Retry-After")
        assert statuses.count(200) >= PERSON_BURST - 1 and statuses[-1] == 429
        assert retry_after is not None and int(retry_after) >= 1


async def test_sign_in_refuses_wrong_passwords_forms_without_token_and_too_many_tries(bootstrap: str) -> None:
    jar = aiohttp.DummyCookieJar()  # Secure cookies over plain HTTP: sent by hand below
    async with (
        console_router(bootstrap, console_cookie_secure=True) as setup,
        aiohttp.ClientSession(cookie_jar=jar) as http,
    ):
        async with http.get(f"{setup.base}/console/sign-in") as page:
            pre_cookie = page.headers["Set-Cookie"]
            token = CSRF.search(await page.text())
        assert token is not None and "HttpOnly" in pre_cookie and "Secure" in pre_cookie
        sent = {"Cookie": pre_cookie.split(";")[0]}
        form = {"csrf": token.group(1), "user": USER, "password": PASSWORD}
        url = f"{setup.base}/console/sign-in"
        async with http.post(url, data=form | {"csrf": "forged"}, headers=sent) as answer:
            assert answer.status == 403
        async with http.post(url, data=form, allow_redirects=False) as answer:  # no sign-in cookie
            assert answer.status == 403
        async with http.post(url, data=form, headers=sent, allow_redirects=False) as answer:
            assert answer.status == 303
            cookie = answer.headers["Set-Cookie"]
            for attribute in ("console_session=", "HttpOnly", "SameSite=Strict", "Path=/console", "Secure"):
                assert attribute in cookie, cookie
        async with aiohttp.ClientSession(cookie_jar=jar) as stranger:
            for attempt in range(4):
                assert await sign_in(stranger, setup.base, OTHER, f"guess-{attempt}") == 401
            assert await sign_in(stranger, setup.base, OTHER, "guess-5") == 429
            assert await sign_in(stranger, setup.base, OTHER, OTHER_PASSWORD) == 429  # still limited
        sign_ins = setup.running.metrics.console_sign_ins
        assert sign_ins.labels("rate_limited")._value.get() == 2
        assert sign_ins.labels("refused")._value.get() == 4


async def test_a_post_without_the_session_csrf_token_is_refused_and_changes_nothing(bootstrap: str) -> None:
    async with console_router(bootstrap) as setup, client() as http, client() as other:
        topic, partition, offset = await triaged_record(setup, 2)
        record_url = f"{setup.base}/console/record/{topic}/{partition}/{offset}"
        assert await sign_in(http, setup.base) == 303
        assert await sign_in(other, setup.base, OTHER, OTHER_PASSWORD) == 303
        _, others_token = await page_csrf(other, record_url)
        for token in ("", "forged", others_token):  # another session's token is no good either
            async with http.post(f"{record_url}/decide", data=decide_form(token)) as answer:
                assert answer.status == 403
        async with http.post(f"{setup.base}/console/replay", data={"age": "any"}) as answer:
            assert answer.status == 403
        assert setup.console.reader.done.marks == {}


async def test_two_people_deciding_one_record_at_once_route_it_once(bootstrap: str) -> None:
    async with console_router(bootstrap) as setup, client() as ana, client() as bob:
        topic, partition, offset = await triaged_record(setup, 3)
        record_url = f"{setup.base}/console/record/{topic}/{partition}/{offset}"
        assert await sign_in(ana, setup.base) == 303
        assert await sign_in(bob, setup.base, OTHER, OTHER_PASSWORD) == 303
        (_, ana_token), (_, bob_token) = await asyncio.gather(
            page_csrf(ana, record_url), page_csrf(bob, record_url)
        )

        async def decide(http: aiohttp.ClientSession, token: str) -> int:
            async with http.post(
                f"{record_url}/decide", data=decide_form(token), allow_redirects=False
            ) as answer:
                return answer.status

        statuses = sorted(await asyncio.gather(decide(ana, ana_token), decide(bob, bob_token)))
        assert statuses == [303, 409]
        queue_topic = setup.settings.queue_topic_prefix + "priority-billing"
        routed = await asyncio.to_thread(consume_until, setup.bootstrap, [queue_topic], 2, 5.0)
        assert len(routed) == 1  # waited 5 s for a second one that must not come
        value = orjson.loads(routed[0].value)
        assert value["model_used"] in ("human:ana", "human:bob") and value["tiers_tried"] == ["human"]
        mark = setup.console.reader.done.get(f"{topic}/{partition}/{offset}")
        assert mark is not None and mark.state == "published" and value["model_used"] == f"human:{mark.actor}"
        decisions = setup.running.metrics.console_decisions
        assert decisions.labels("routed")._value.get() == 1 and decisions.labels("lost")._value.get() == 1


async def test_a_trusted_proxy_header_signs_in_without_a_password(bootstrap: str) -> None:
    async with console_router(
        bootstrap, console_users="", console_trusted_header="X-Forwarded-User"
    ) as setup:
        headers = {"X-Forwarded-User": "carol"}
        async with client() as http, http.get(f"{setup.base}/console/", headers=headers) as answer:
            assert answer.status == 200 and "carol" in await answer.text()
            assert "console_session=" in answer.headers["Set-Cookie"]
        async with client() as http, http.get(f"{setup.base}/console/", allow_redirects=False) as answer:
            assert answer.status == 303


# -- replay, explain, stale claims, unconfirmed decisions (issue 15's gaps) ----------------------


async def test_replay_sends_exactly_the_filtered_originals_to_the_input_topic_and_marks_them_done(
    bootstrap: str,
) -> None:
    async with console_router(bootstrap) as setup, client() as http:
        two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
        records = [
            triage(101, ErrorKind.LLM_UNAVAILABLE),
            triage(102, ErrorKind.LLM_UNAVAILABLE),
            triage(103, ErrorKind.LLM_UNAVAILABLE).model_copy(update={"triaged_at": two_hours_ago}),
            triage(104, ErrorKind.LOW_CONFIDENCE),
            triage(105, ErrorKind.INTERNAL),
        ]
        items = await triaged(setup, records)
        assert await sign_in(http, setup.base) == 303
        inbox, token = await page_csrf(http, f"{setup.base}/console/?kind=llm_unavailable&age=1h")
        assert "Send the 2 triage records of this filter" in inbox
        wanted = {"kind": "llm_unavailable", "age": "1h"}
        async with http.post(f"{setup.base}/console/replay", data=wanted) as answer:
            assert answer.status == 403  # no CSRF token: nothing replayed
        async with http.post(f"{setup.base}/console/replay", data=wanted | {"csrf": token}) as answer:
            assert answer.status == 200 and "Replayed 2 records" in await answer.text()

        sent = await asyncio.to_thread(records_on, setup.bootstrap, setup.settings.input_topic, set())
        originals = {str(r.ticket_id): orjson.loads(r.original_value) for r in records}
        assert sorted(value["ticket_id"] for value in sent) == ["T-0101", "T-0102"]
        for value in sent:
            original = originals[value["ticket_id"]]
            assert value["event_id"] != original["event_id"]  # a fresh event id, as the tool gives
            assert value | {"event_id": original["event_id"]} == original

        reader = setup.console.reader
        replayed = {items["T-0101"].key, items["T-0102"].key}
        await asyncio.wait_for(reader.wait_until(lambda: replayed <= set(reader.done.marks)), 20)
        assert set(reader.done.marks) == replayed
        for key in replayed:
            mark = reader.done.get(key)
            assert mark is not None and mark.state == "published" and mark.actor == USER
            assert mark.queue == f"replayed to {setup.settings.input_topic}"


def fake_claude() -> Scenario:
    return Scenario(models={FAST: ModelScript(), STRONG: ModelScript(stream_delay_ms=2)})


async def test_the_explain_button_streams_the_explanation_to_signed_in_people_only(bootstrap: str) -> None:
    partial = Classification(
        axes={"team": AxisPrediction(label="billing", confidence=0.41)}, routing_reason="unsure"
    )
    with run_in_thread(fake_claude()) as api:
        async with (
            console_router(
                bootstrap,
                tiers="fast",
                anthropic_api_key="sk-ant-fake-console",
                anthropic_base_url=api.base_url,
            ) as setup,
            client() as http,
            client() as stranger,
        ):
            record = triage(201, ErrorKind.LOW_CONFIDENCE).model_copy(
                update={"partial_classification": partial}
            )
            item = (await triaged(setup, [record]))["T-0201"]
            where = {"topic": item.topic, "partition": str(item.partition), "offset": str(item.offset)}
            async with stranger.get(f"{setup.base}/console/explain", params=where) as answer:
                assert answer.status == 401 and answer.content_type == "application/json"
                assert "body of ticket" not in await answer.text()
            assert not [body for body in api.requests() if body.get("model") == STRONG]

            assert await sign_in(http, setup.base) == 303
            page, _ = await page_csrf(
                http, f"{setup.base}/console/record/{item.topic}/{item.partition}/{item.offset}"
            )
            assert 'id="explain"' in page and 'fetch("/console/explain?"' in page
            async with http.get(f"{setup.base}/console/explain", params=where) as answer:
                assert answer.status == 200 and answer.content_type == "text/event-stream"
                reader = EventReader()
                events = [
                    event
                    async for chunk in answer.content.iter_any()
                    for event in reader.feed(chunk.decode())
                ]
            names = [name for name, _ in events]
            assert names[0] == "decision" and names[-1] == "done" and "text" in names
            decision = events[0][1]
            assert (decision["ticket_id"], decision["labels"]) == ("T-0201", {"team": "billing"})
            assert "team=billing" in streamed_text(events)  # the fake echoes the labels it was given
            [sent] = [body for body in api.requests() if body.get("model") == STRONG]
            assert "body of ticket 201" in sent["messages"][0]["content"]


def stale_claim(key: str, actor: str, age_s: float) -> DoneMark:
    return DoneMark(
        record=key,
        state="claimed",
        mark_id=new_mark_id(),
        actor=actor,
        labels=LABELS,
        queue="priority-billing",
        at=datetime.now(UTC) - timedelta(seconds=age_s),
    )


async def test_a_claim_whose_decider_stopped_is_taken_over_later_and_the_ticket_routed_once(
    bootstrap: str,
) -> None:
    async with console_router(bootstrap) as setup, client() as bob:
        records = [triage(index, ErrorKind.LOW_CONFIDENCE) for index in (301, 302, 303)]
        items = await triaged(setup, records)
        routed_by_ana, stopped_early, fresh = (items[f"T-0{index}"].key for index in (301, 302, 303))
        claims = [
            stale_claim(routed_by_ana, USER, CLAIM_TIMEOUT_S + 60),
            stale_claim(stopped_early, USER, CLAIM_TIMEOUT_S + 60),
            stale_claim(fresh, USER, 60),
        ]
        decisions = setup.settings.console_decisions_topic
        produce(setup.bootstrap, decisions, [(claim.record.encode(), encode(claim)) for claim in claims])
        # Ana's console routed T-0301 before it stopped, without confirming: the route is on the queue.
        queue_topic = setup.settings.queue_topic_prefix + "priority-billing"
        ticket = ticket_of(records[0])
        assert ticket is not None
        route = human_route(TAXONOMY, LABELS)
        anas = human_routed_ticket(
            ticket, LABELS, route, USER, records[0].source, ("p", "r"), datetime.now(UTC)
        )
        produce(setup.bootstrap, queue_topic, [(b"T-0301", encode(anas))])
        reader = setup.console.reader
        await asyncio.wait_for(reader.wait_until(lambda: all(reader.done.get(c.record) for c in claims)), 20)

        assert await sign_in(bob, setup.base, OTHER, OTHER_PASSWORD) == 303

        async def decide(key: str) -> tuple[int, str]:
            url = f"{setup.base}/console/record/{key}"
            page, token = await page_csrf(bob, url)
            assert "publishing not confirmed" in page
            async with bob.post(f"{url}/decide", data=decide_form(token), allow_redirects=False) as answer:
                return answer.status, await answer.text()

        status, text = await decide(fresh)
        assert status == 409 and "not confirmed yet" in text and "it can be decided again" in text
        status, text = await decide(routed_by_ana)
        assert status == 409 and "Already routed to priority-billing by ana" in text
        status, _ = await decide(stopped_early)
        assert status == 303

        on_queue = await asyncio.to_thread(consume_until, setup.bootstrap, [queue_topic], 3, 5.0)
        by_ticket = sorted((r.key, orjson.loads(r.value)["model_used"]) for r in on_queue)
        assert by_ticket == [(b"T-0301", "human:ana"), (b"T-0302", "human:bob")]  # waited 5 s for more
        marks = {key: reader.done.get(key) for key in (routed_by_ana, stopped_early, fresh)}
        assert {key: (m.state, m.actor) for key, m in marks.items() if m is not None} == {
            routed_by_ana: ("published", USER),
            stopped_early: ("published", OTHER),
            fresh: ("claimed", USER),
        }


async def test_a_decision_published_but_not_read_back_in_time_says_so_and_is_not_a_failure(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("consumer.console.app.DECIDE_TIMEOUT_S", 2.0)
    async with console_router(bootstrap) as setup, client() as http:
        topic, partition, offset = await triaged_record(setup, 401)
        send = setup.console.publish

        async def slow_confirmations(
            topic: str, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]
        ) -> None:
            """The published mark is held back, as if this replica's reader were far behind."""
            if topic != setup.settings.console_decisions_topic or b'"published"' not in value:
                await send(topic, value, key, headers)

        setup.console.publish = slow_confirmations
        assert await sign_in(http, setup.base) == 303
        record_url = f"{setup.base}/console/record/{topic}/{partition}/{offset}"
        _, token = await page_csrf(http, record_url)
        async with http.post(
            f"{record_url}/decide", data=decide_form(token), allow_redirects=False
        ) as answer:
            assert answer.status == 202
            assert "routed to priority-billing and the correction published" in await answer.text()
        queue_topic = setup.settings.queue_topic_prefix + "priority-billing"
        [routed] = await asyncio.to_thread(consume_until, setup.bootstrap, [queue_topic], 1, 20.0)
        assert routed.key == b"T-0401"
        outcomes = setup.running.metrics.console_decisions
        assert outcomes.labels("pending")._value.get() == 1 and outcomes.labels("failed")._value.get() == 0


async def test_the_decisions_topic_is_created_compacted(bootstrap: str) -> None:
    """What the console asks of the broker. Tansu 0.6 stores the setting but does not compact (measured:
    100,000 marks on 1,000 keys all still there after segment.ms=100 and 15 s); the README says what
    that costs."""
    async with console_router(bootstrap) as setup:
        topic = ConfigResource("topic", setup.settings.console_decisions_topic)
        admin = AdminClient({"bootstrap.servers": setup.bootstrap})
        described = await asyncio.to_thread(lambda: admin.describe_configs([topic])[topic].result(10))
        assert described["cleanup.policy"].value == "compact"
