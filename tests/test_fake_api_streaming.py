"""Streaming (``"stream": true``) and free-text answers of the fake Messages API, through the real SDK.

The explanation stream and the drafted replies read text as it arrives, so the fake must send the
real event sequence, and what a stream assembles must be exactly what the same request answers
without streaming: otherwise a test could pass against the fake and fail against the API.
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import anthropic
import pytest
from anthropic.types import Message

from producer_tools.fake_api import FakeApiServer, Scenario
from producer_tools.fake_api.answers import free_text_answer, labels_in
from producer_tools.fake_api.streaming import Event, broken_off, chunks, error_event, message_events
from tests.test_fake_api import (
    HAIKU,
    HAIKU5,
    SCHEMA,
    TOOL_NAME,
    answer_of,
    ask,
    client,
    clock,
    scenario,
    server,
    system_block,
    user_turn,
)

_FIXTURES = (client, clock, server)  # the fake-API test suite's own fixtures, shared

ROUTED = "ticket_id: T-7\nRouted to billing-disputes with team=billing, urgency=high.\nsentiment: angry\n"
EXPLAIN = ROUTED + "Explain in plain language why this ticket went where it did."


def text_request(prompt: str = EXPLAIN, *, model: str = HAIKU, **extra: Any) -> dict[str, Any]:
    """A free-text request: no output format, no forced tool, as an explanation feature sends."""
    return {
        "model": model,
        "max_tokens": 1024,
        "system": [system_block("You explain routing decisions.")],
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


def structured_request(mode: str, **extra: Any) -> dict[str, Any]:
    """The same request ``ask`` sends, for streaming it through ``messages.stream``."""
    kwargs: dict[str, Any] = {
        "model": HAIKU,
        "max_tokens": 1024,
        "system": [system_block()],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": user_turn("My invoice is wrong.", "T-1")}]}
        ],
    }
    if mode == "json":
        kwargs["output_config"] = {"format": {"type": "json_schema", "schema": SCHEMA}}
    else:
        kwargs["tools"] = [{"name": TOOL_NAME, "description": "Record the routing.", "input_schema": SCHEMA}]
        kwargs["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
    return {**kwargs, **extra}


async def streamed(api: anthropic.AsyncAnthropic, kwargs: dict[str, Any]) -> tuple[list[str], Message]:
    """The text pieces as ``text_stream`` yields them, and the message the SDK assembled."""
    pieces: list[str] = []
    async with api.messages.stream(**kwargs) as stream:
        async for text in stream.text_stream:
            pieces.append(text)
        final = await stream.get_final_message()
    return pieces, final


def text_of(message: Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


# -- free text ------------------------------------------------------------------------------------------


async def test_free_text_request_gets_an_explanation_echoing_the_labels(
    client: anthropic.AsyncAnthropic,
) -> None:
    message = await client.messages.create(**text_request())
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason == "end_turn"
    text = text_of(message)
    assert "team=billing, urgency=high, sentiment=angry" in text
    assert text == free_text_answer(EXPLAIN)


async def test_free_text_beside_optional_tools_is_still_text(client: anthropic.AsyncAnthropic) -> None:
    tools = [{"name": TOOL_NAME, "description": "Record the routing.", "input_schema": SCHEMA}]
    message = await client.messages.create(**text_request(tools=tools, tool_choice={"type": "auto"}))
    assert [block.type for block in message.content] == ["text"]


async def test_tool_choice_any_stays_outside_the_contract(client: anthropic.AsyncAnthropic) -> None:
    tools = [{"name": TOOL_NAME, "description": "Record the routing.", "input_schema": SCHEMA}]
    with pytest.raises(anthropic.BadRequestError, match="tool_choice 'any'"):
        await client.messages.create(**text_request(tools=tools, tool_choice={"type": "any"}))


def test_labels_in_reads_pairs_and_label_lines_but_not_ids_or_prose() -> None:
    prompt = "ticket_id: T-1\nteam=billing and team=security\nurgency: high\nNote: the customer is upset\n"
    assert labels_in(prompt) == [("team", "billing"), ("urgency", "high")]
    assert free_text_answer("hello there").endswith("It reads: hello there")


# -- streaming through the SDK --------------------------------------------------------------------------


async def test_streamed_text_equals_the_unstreamed_text(client: anthropic.AsyncAnthropic) -> None:
    plain = await client.messages.create(**text_request())
    pieces, final = await streamed(client, text_request())
    assert len(pieces) > 1, "the text must arrive in several deltas"
    assert "".join(pieces) == text_of(plain) == text_of(final)
    assert final.stop_reason == plain.stop_reason == "end_turn"
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens


async def test_event_sequence_of_create_stream_true(client: anthropic.AsyncAnthropic) -> None:
    stream = await client.messages.create(**text_request(), stream=True)
    events = [event async for event in stream]
    names = [event.type for event in events]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and start.message.content == [] and start.message.stop_reason is None
    assert delta.type == "message_delta" and delta.delta.stop_reason == "end_turn"
    plain = await client.messages.create(**text_request())
    assert delta.usage.output_tokens == plain.usage.output_tokens > start.message.usage.output_tokens


async def test_wire_format_headers_and_named_events(server: FakeApiServer) -> None:
    headers = {"x-api-key": "k", "anthropic-version": "2026-10-21"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.base_url}/v1/messages", json=text_request(stream=True), headers=headers
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["request-id"].startswith("req_fake_")
        raw = (await resp.read()).decode()
    frames = [frame.split("\n") for frame in raw.strip().split("\n\n")]
    for name_line, data_line in frames:
        assert name_line.removeprefix("event: ") == json.loads(data_line.removeprefix("data: "))["type"]
    assert [frame[0] for frame in frames[:2]] == ["event: message_start", "event: ping"]


async def test_tool_use_stream_assembles_the_same_input(client: anthropic.AsyncAnthropic) -> None:
    plain = await ask(client, mode="tool")
    stream = await client.messages.create(**structured_request("tool"), stream=True)
    events = [event async for event in stream]
    partial = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(partial) > 1
    assert json.loads("".join(partial)) == answer_of(plain)
    _, final = await streamed(client, structured_request("tool"))
    block = final.content[0]
    assert block.type == "tool_use" and block.name == TOOL_NAME
    assert block.input == answer_of(plain)
    assert final.stop_reason == "tool_use"


async def test_json_schema_answer_streams_as_text(client: anthropic.AsyncAnthropic) -> None:
    plain = await ask(client)
    pieces, final = await streamed(client, structured_request("json"))
    assert json.loads("".join(pieces)) == answer_of(plain) == answer_of(final)


async def test_thinking_streams_thinking_and_signature_deltas(client: anthropic.AsyncAnthropic) -> None:
    kwargs = text_request(model=HAIKU5, max_tokens=20_000)
    plain = await client.messages.create(**kwargs)
    stream = await client.messages.create(**kwargs, stream=True)
    deltas = [e.delta.type async for e in stream if e.type == "content_block_delta"]
    assert deltas[0] == "thinking_delta" and "signature_delta" in deltas and deltas[-1] == "text_delta"
    _, final = await streamed(client, kwargs)
    assert [block.model_dump() for block in final.content] == [block.model_dump() for block in plain.content]
    assert final.usage.output_tokens_details == plain.usage.output_tokens_details


async def test_refusal_streams_no_content_and_its_stop_reason(
    server: FakeApiServer, client: anthropic.AsyncAnthropic
) -> None:
    server.set_scenario(scenario(script=["refusal"]))
    _, final = await streamed(client, text_request())
    assert final.content == [] and final.stop_reason == "refusal"
    assert final.stop_details is not None and final.stop_details.type == "refusal"


async def test_invalid_stream_flag_is_a_400(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="stream: Input should be a valid boolean"):
        await client.messages.create(**text_request(), extra_body={"stream": "yes"})


async def test_faults_before_the_reply_are_plain_http_errors(
    server: FakeApiServer, client: anthropic.AsyncAnthropic
) -> None:
    server.set_scenario(scenario(script=["429"]))
    with pytest.raises(anthropic.RateLimitError):
        await streamed(client, text_request())


# -- a failure in the middle of a stream ----------------------------------------------------------------


async def test_mid_stream_overload_surfaces_as_the_sdk_error_after_some_text(
    server: FakeApiServer, client: anthropic.AsyncAnthropic
) -> None:
    server.set_scenario(scenario(script=["529_mid_stream"]))
    pieces: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with client.messages.stream(**text_request()) as stream:
            async for text in stream.text_stream:
                pieces.append(text)
    assert caught.value.type == "overloaded_error"
    assert caught.value.api_message == "Overloaded"
    whole = free_text_answer(EXPLAIN)
    assert pieces and whole.startswith("".join(pieces)) and "".join(pieces) != whole


async def test_mid_stream_fault_on_an_unstreamed_request_is_a_529(
    server: FakeApiServer, client: anthropic.AsyncAnthropic
) -> None:
    server.set_scenario(Scenario.model_validate({"models": {HAIKU: {"script": ["529_mid_stream", "ok"]}}}))
    with pytest.raises(anthropic.InternalServerError) as caught:
        await client.messages.create(**text_request())
    assert caught.value.status_code == 529
    assert text_of(await client.messages.create(**text_request())) == free_text_answer(EXPLAIN)


# -- the pure event builder -----------------------------------------------------------------------------


def _message(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "msg_x",
        "type": "message",
        "role": "assistant",
        "model": HAIKU,
        "content": content,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "stop_details": None,
        "usage": {"input_tokens": 10, "output_tokens": 7},
    }


def test_chunks_rejoin_and_an_empty_text_still_has_one_piece() -> None:
    assert "".join(chunks("x" * 50, 24)) == "x" * 50 and len(chunks("x" * 50, 24)) == 3
    assert chunks("", 24) == [""]


def test_cut_tool_call_streams_no_json() -> None:
    block = {"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME, "input": {}}
    names = [event.name for event in message_events(_message([block]))]
    assert "content_block_delta" not in names


def test_broken_off_keeps_two_deltas_then_the_error() -> None:
    events = message_events(_message([{"type": "text", "text": "y" * 100}]), chunk_chars=10)
    error = error_event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    cut = broken_off(events, error)
    assert [event.name for event in cut] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "error",
    ]
    assert cut[-1] == Event("error", error.data)


async def test_stream_delay_spaces_the_deltas_out(
    server: FakeApiServer, client: anthropic.AsyncAnthropic
) -> None:
    server.set_scenario(scenario(stream_delay_ms=20))
    pieces = 0
    started = time.monotonic()
    async with client.messages.stream(**text_request()) as stream:
        async for _ in stream.text_stream:
            pieces += 1
    # A lower bound only (the server sleeps before every delta), so a loaded machine cannot break it.
    assert pieces > 3
    assert time.monotonic() - started >= 0.02 * pieces
