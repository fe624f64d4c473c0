"""The fake's Message Batches endpoints, through the real SDK's ``client.messages.batches``.

``ticket-tools backfill`` is tested against this fake, so each behaviour it relies on is checked
here: the batch object's life cycle and counts, results as JSONL keyed by ``custom_id`` (not in
request order), one invalid request being one ``errored`` result rather than a 400 of the whole
batch, the limits, cancel, delete, list paging, and scripted errors, expiry and delay.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import pytest
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from producer_tools.fake_api import FakeApiServer, Scenario
from producer_tools.fake_api.batches import FakeBatch, page_of, parse_batch_requests, request_counts
from producer_tools.fake_api.errors import ApiError
from producer_tools.fake_api.scenario import BatchScript
from tests.test_fake_api import (
    HAIKU,
    SCHEMA,
    SONNET,
    TODAY,
    FakeClock,
    answer_of,
    client,
    clock,
    server,
    system_block,
    user_turn,
)

_FIXTURES = (client, clock, server)  # the fake-API test suite's own fixtures, shared


def params(text: str = "My invoice is wrong.", ticket_id: str = "T-1", **extra: Any) -> dict[str, Any]:
    """What ``ask`` in test_fake_api sends, as a batch request's ``params``."""
    return {
        "model": HAIKU,
        "max_tokens": 1024,
        "system": [system_block(ttl="1h")],
        "messages": [{"role": "user", "content": user_turn(text, ticket_id)}],
        "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
        **extra,
    }


def requests(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"t{index}", "params": params(f"Ticket number {index}", f"T-{index}", **extra)}
        for index in range(count)
    ]


async def ended(api: anthropic.AsyncAnthropic, batch_id: str) -> MessageBatch:
    """Polls until the batch ends (the fake's background processing is the event waited for)."""
    for _ in range(500):
        batch = await api.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        await asyncio.sleep(0.01)
    raise AssertionError(f"batch {batch_id} did not end")


async def results(api: anthropic.AsyncAnthropic, batch_id: str) -> dict[str, MessageBatchIndividualResponse]:
    return {line.custom_id: line async for line in await api.messages.batches.results(batch_id)}


def with_batches(server: FakeApiServer, **script: Any) -> None:
    server.set_scenario(Scenario.model_validate({"models": {HAIKU: {}, SONNET: {}}, "batches": script}))


# -- life cycle and results ---------------------------------------------------------------------------


async def test_a_batch_ends_with_one_succeeded_result_per_request(client: anthropic.AsyncAnthropic) -> None:
    created = await client.messages.batches.create(requests=requests(30))  # type: ignore[arg-type]
    assert created.id.startswith("msgbatch_")
    assert created.type == "message_batch"
    batch = await ended(client, created.id)
    assert batch.request_counts.succeeded == 30
    assert batch.request_counts.processing == 0
    assert batch.results_url is not None and batch.results_url.endswith(f"/{created.id}/results")
    assert batch.ended_at is not None and batch.expires_at > batch.created_at
    found = await results(client, created.id)
    assert set(found) == {f"t{index}" for index in range(30)}
    result = found["t7"].result
    assert result.type == "succeeded"
    assert set(answer_of(result.message)) == {*SCHEMA["properties"]}
    assert result.message.usage.input_tokens > 0


async def test_results_are_not_in_request_order(
    server: FakeApiServer, client: anthropic.AsyncAnthropic
) -> None:
    created = await client.messages.batches.create(requests=requests(40))  # type: ignore[arg-type]
    await ended(client, created.id)
    order = [line.custom_id async for line in await client.messages.batches.results(created.id)]
    assert sorted(order) == sorted(f"t{index}" for index in range(40))
    assert order != [f"t{index}" for index in range(40)]


async def test_the_cached_prefix_is_written_once_and_read_by_the_rest(
    client: anthropic.AsyncAnthropic,
) -> None:
    long_prompt = [system_block("You route support tickets. " * 800, ttl="1h")]
    batch = [{"custom_id": f"c{i}", "params": params(f"Ticket {i}", system=long_prompt)} for i in range(5)]
    created = await client.messages.batches.create(requests=batch)  # type: ignore[arg-type]
    await ended(client, created.id)
    usages = [line.result.message.usage for line in (await results(client, created.id)).values()]  # type: ignore[union-attr]
    assert sorted(u.cache_creation_input_tokens or 0 for u in usages)[-1] > 0
    assert sum(1 for u in usages if (u.cache_read_input_tokens or 0) > 0) == 4


async def test_an_invalid_request_is_one_errored_result_not_a_400(client: anthropic.AsyncAnthropic) -> None:
    batch = requests(3)
    batch[1]["params"] = params(temperature=0.2, model="claude-haiku-5-5")  # a 400 on a 5.5 model alone
    batch[2]["params"] = params(stream=True)
    created = await client.messages.batches.create(requests=batch)  # type: ignore[arg-type]
    done = await ended(client, created.id)
    assert (done.request_counts.succeeded, done.request_counts.errored) == (1, 2)
    found = await results(client, created.id)
    for custom_id in ("t1", "t2"):
        result = found[custom_id].result
        assert result.type == "errored"
        assert result.error.error.type == "invalid_request_error"
    assert "stream" in found["t2"].result.error.error.message  # type: ignore[union-attr]


async def test_the_whole_batch_is_refused_for_its_own_shape(client: anthropic.AsyncAnthropic) -> None:
    duplicate = requests(2)
    duplicate[1]["custom_id"] = "t0"
    with pytest.raises(anthropic.BadRequestError, match="Duplicate custom_id"):
        await client.messages.batches.create(requests=duplicate)  # type: ignore[arg-type]
    bad_id = [{"custom_id": "has space", "params": params()}]
    with pytest.raises(anthropic.BadRequestError, match="should match pattern"):
        await client.messages.batches.create(requests=bad_id)  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError, match="at least 1 item"):
        await client.messages.batches.create(requests=[])


async def test_limits_refuse_too_many_requests_and_too_many_bytes(
    server: FakeApiServer, client: anthropic.AsyncAnthropic
) -> None:
    with_batches(server, max_requests=3, max_bytes=20_000)
    with pytest.raises(anthropic.BadRequestError, match="at most 3 items"):
        await client.messages.batches.create(requests=requests(4))  # type: ignore[arg-type]
    huge = [{"custom_id": "big", "params": params("x" * 30_000)}]
    with pytest.raises(anthropic.APIStatusError) as raised:
        await client.messages.batches.create(requests=huge)  # type: ignore[arg-type]
    assert raised.value.status_code == 413
    assert raised.value.type == "request_too_large"  # type: ignore[attr-defined]


async def test_results_before_the_end_are_refused_and_counts_stay_processing(
    server: FakeApiServer, client: anthropic.AsyncAnthropic, clock: FakeClock
) -> None:
    with_batches(server, processing_delay_s=60)
    created = await client.messages.batches.create(requests=requests(2))  # type: ignore[arg-type]
    batch = await client.messages.batches.retrieve(created.id)
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 2 and batch.results_url is None
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        await client.messages.batches.results(created.id)
    clock.advance(61)
    assert (await ended(client, created.id)).request_counts.succeeded == 2


async def test_cancel_ends_the_batch_with_every_request_canceled(
    server: FakeApiServer, client: anthropic.AsyncAnthropic
) -> None:
    with_batches(server, processing_delay_s=3600)
    created = await client.messages.batches.create(requests=requests(3))  # type: ignore[arg-type]
    canceling = await client.messages.batches.cancel(created.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    done = await ended(client, created.id)
    assert done.request_counts.canceled == 3
    assert {line.result.type for line in (await results(client, created.id)).values()} == {"canceled"}


async def test_scripted_errors_expiry_and_a_batch_past_its_expiry(
    server: FakeApiServer, client: anthropic.AsyncAnthropic, clock: FakeClock
) -> None:
    with_batches(server, error_rate=0.3, expire_rate=0.3)
    created = await client.messages.batches.create(requests=requests(200))  # type: ignore[arg-type]
    counts = (await ended(client, created.id)).request_counts
    assert counts.succeeded + counts.errored + counts.expired == 200
    assert 30 < counts.errored < 90 and 30 < counts.expired < 90
    errored = [
        line.result for line in (await results(client, created.id)).values() if line.result.type == "errored"
    ]
    assert {result.error.error.type for result in errored} == {"api_error"}  # type: ignore[union-attr]

    with_batches(server, processing_delay_s=100, expires_after_s=50)
    late = await client.messages.batches.create(requests=requests(4))  # type: ignore[arg-type]
    clock.advance(51)
    assert (await ended(client, late.id)).request_counts.expired == 4


async def test_delete_only_once_ended_and_then_gone(
    server: FakeApiServer, client: anthropic.AsyncAnthropic
) -> None:
    with_batches(server, processing_delay_s=3600)
    running = await client.messages.batches.create(requests=requests(1))  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError, match="cancel it first"):
        await client.messages.batches.delete(running.id)
    await client.messages.batches.cancel(running.id)
    await ended(client, running.id)
    deleted = await client.messages.batches.delete(running.id)
    assert (deleted.id, deleted.type) == (running.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.batches.retrieve(running.id)


async def test_list_pages_newest_first_through_every_batch(
    server: FakeApiServer, client: anthropic.AsyncAnthropic
) -> None:
    made = [(await client.messages.batches.create(requests=requests(1))).id for _ in range(5)]  # type: ignore[arg-type]
    first = await client.messages.batches.list(limit=2)
    assert [batch.id for batch in first.data] == made[::-1][:2] and first.has_more
    assert [batch.id async for batch in await client.messages.batches.list(limit=2)] == made[::-1]
    assert [c["id"] for c in server.batch_creations()] == made
    assert server.batch_creations()[0]["custom_ids"] == ["t0"]


async def test_messages_endpoint_is_unchanged_by_batches(client: anthropic.AsyncAnthropic) -> None:
    """A plain create still answers (the batch routes must not shadow /v1/messages)."""
    message = await client.messages.create(**params())
    assert message.type == "message"


# -- pure parts ---------------------------------------------------------------------------------------


def test_page_of_walks_both_directions() -> None:
    ids = ["e", "d", "c", "b", "a"]
    assert page_of(ids, 2, None, None) == (["e", "d"], True)
    assert page_of(ids, 2, "d", None) == (["c", "b"], True)
    assert page_of(ids, 2, "b", None) == (["a"], False)
    assert page_of(ids, 2, None, "c") == (["e", "d"], False)


def test_custom_ids_longer_than_64_are_refused() -> None:
    with pytest.raises(ApiError, match="at most 64 characters"):
        parse_batch_requests({"requests": [{"custom_id": "a" * 65, "params": {}}]}, BatchScript())


def test_counts_sum_to_the_total_once_ended() -> None:
    batch = FakeBatch(
        "msgbatch_x", TODAY, 0.0, parse_batch_requests({"requests": requests(3)}, BatchScript())
    )
    assert request_counts(batch)["processing"] == 3
    batch.results = {"t0": {"type": "succeeded"}, "t1": {"type": "errored"}, "t2": {"type": "expired"}}
    batch.ended_at = TODAY
    assert request_counts(batch) == {
        "processing": 0,
        "succeeded": 1,
        "errored": 1,
        "canceled": 0,
        "expired": 1,
    }
