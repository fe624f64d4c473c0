"""Thinking, tokenizers, refusals and cache pre-warming on today's models, through the real SDK.

These are the behaviours that decide whether the router's max_tokens, cost estimates and cache
set-up still work on the 5.x models: thinking is on by default and paid out of ``max_tokens``, the
same text is about 30% more tokens, a refusal is an HTTP 200, and ``max_tokens`` 0 warms the cache.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from anthropic.types import Message

from consumer.classify.models import EFFORTS, MODELS, effective_thinking, is_retired
from consumer.classify.tokens import estimate_tokens
from producer_tools.fake_api import FakeApiServer, Scenario
from producer_tools.fake_api.outcome import REFUSAL_OUTPUT_TOKENS
from producer_tools.fake_api.thinking import SIGNATURE_PREFIX, THINKING_BASE_TOKENS
from tests.test_fake_api import (
    HAIKU,
    HAIKU5,
    OPUS5,
    SCHEMA,
    SONNET5,
    TODAY,
    answer_of,
    ask,
    client,
    clock,
    server,
    system_block,
    user_turn,
    violations,
)

_FIXTURES = (client, clock, server)  # the fake-API test suite's own fixtures, shared

ROOMY = 20_000
# ≈ 460 tokens on the 4.x tokenizer and ≈ 600 on the 5.x one: below 512 for one, above for the other.
MID = "Escalate outages to infrastructure, refunds to billing." * 29


def thinking_tokens(message: Message) -> int:
    details = message.usage.output_tokens_details
    assert details is not None, "output_tokens_details is on every reply"
    return details.thinking_tokens


def block_types(message: Message) -> list[str]:
    return [block.type for block in message.content]


def text_of(message: Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def with_effort(effort: str) -> dict[str, Any]:
    return {"format": {"type": "json_schema", "schema": SCHEMA}, "effort": effort}


# -- thinking on and off --------------------------------------------------------------------------------


async def test_haiku_5_5_thinks_by_default(client: anthropic.AsyncAnthropic) -> None:
    message = await ask(client, model=HAIKU5, max_tokens=ROOMY)
    assert block_types(message) == ["thinking", "text"]
    block = message.content[0]
    assert block.type == "thinking" and block.thinking and block.signature.startswith(SIGNATURE_PREFIX)
    thought = thinking_tokens(message)
    base = THINKING_BASE_TOKENS["medium"]  # Haiku 5.5's default effort
    assert 0.75 * base <= thought <= 1.25 * base
    assert message.usage.output_tokens == thought + estimate_tokens(text_of(message), 1.3)
    assert message.stop_reason == "end_turn" and violations(answer_of_text(message)) == []


def answer_of_text(message: Message) -> Any:
    """The answer with thinking blocks skipped, as a caller must select blocks by type."""
    return json.loads(text_of(message))


@pytest.mark.parametrize(("model", "off"), [(HAIKU5, "disabled"), (SONNET5, "between_tools")])
async def test_thinking_off_leaves_no_thinking_block(
    client: anthropic.AsyncAnthropic, model: str, off: str
) -> None:
    message = await ask(client, model=model, thinking={"type": off})
    assert block_types(message) == ["text"]
    assert thinking_tokens(message) == 0
    assert message.usage.output_tokens == estimate_tokens(text_of(message), 1.3)


async def test_legacy_models_report_zero_thinking(client: anthropic.AsyncAnthropic) -> None:
    message = await ask(client, model=HAIKU)
    assert block_types(message) == ["text"] and thinking_tokens(message) == 0


async def test_opus_5_5_always_thinks(client: anthropic.AsyncAnthropic) -> None:
    message = await ask(client, model=OPUS5, max_tokens=ROOMY)
    assert block_types(message)[0] == "thinking" and thinking_tokens(message) > 0


async def test_thinking_tokens_grow_with_effort(client: anthropic.AsyncAnthropic) -> None:
    spent = []
    for effort in EFFORTS:
        message = await ask(
            client,
            model=HAIKU5,
            max_tokens=ROOMY,
            thinking={"type": "adaptive"},
            output_config=with_effort(effort),
        )
        assert message.stop_reason == "end_turn"
        spent.append(thinking_tokens(message))
    assert spent == sorted(spent) and len(set(spent)) == len(EFFORTS)
    for effort, tokens in zip(EFFORTS, spent, strict=True):
        assert 0.75 * THINKING_BASE_TOKENS[effort] <= tokens <= 1.25 * THINKING_BASE_TOKENS[effort]


async def test_thinking_is_stable_per_ticket_and_varies_across_tickets(
    client: anthropic.AsyncAnthropic,
) -> None:
    first = [
        thinking_tokens(await ask(client, f"ticket {index}", model=HAIKU5, max_tokens=ROOMY))
        for index in range(8)
    ]
    again = [
        thinking_tokens(await ask(client, f"ticket {index}", model=HAIKU5, max_tokens=ROOMY))
        for index in range(8)
    ]
    assert first == again
    assert len(set(first)) > 1


# -- thinking inside max_tokens -------------------------------------------------------------------------


async def test_600_token_cap_is_spent_on_default_thinking(client: anthropic.AsyncAnthropic) -> None:
    """Haiku 5.5 thinks 675-1,125 tokens at its default effort, so a 600 cap never reaches the answer."""
    cut = await ask(client, model=HAIKU5, max_tokens=600)
    assert cut.stop_reason == "max_tokens"
    assert block_types(cut) == ["thinking"]
    assert cut.usage.output_tokens == thinking_tokens(cut) == 600
    complete = await ask(client, model=HAIKU5, max_tokens=600, thinking={"type": "disabled"})
    assert complete.stop_reason == "end_turn" and block_types(complete) == ["text"]
    assert violations(answer_of(complete)) == []


async def test_answer_gets_what_thinking_leaves(client: anthropic.AsyncAnthropic) -> None:
    thought = thinking_tokens(await ask(client, model=HAIKU5, max_tokens=ROOMY))
    message = await ask(client, model=HAIKU5, max_tokens=thought + 10)
    assert message.stop_reason == "max_tokens"
    assert block_types(message) == ["thinking", "text"]
    assert thinking_tokens(message) == thought and message.usage.output_tokens == thought + 10
    with pytest.raises(json.JSONDecodeError):
        answer_of_text(message)


async def test_forced_tool_after_thinking(client: anthropic.AsyncAnthropic) -> None:
    message = await ask(client, model=HAIKU5, mode="tool", max_tokens=ROOMY)
    assert block_types(message) == ["thinking", "tool_use"] and message.stop_reason == "tool_use"


# -- tokenizer and cache minimums -----------------------------------------------------------------------


async def test_same_answer_costs_more_output_tokens_on_5x(client: anthropic.AsyncAnthropic) -> None:
    message = await ask(client, model=SONNET5, thinking={"type": "between_tools"})
    text = text_of(message)
    assert message.usage.output_tokens == estimate_tokens(text, 1.3) > estimate_tokens(text)


async def test_tokenizer_decides_whether_a_prefix_reaches_the_minimum(
    client: anthropic.AsyncAnthropic,
) -> None:
    assert estimate_tokens(MID) < 512 <= estimate_tokens(MID, 1.3)
    assert MODELS[HAIKU5].min_cacheable_tokens == 512
    system = [system_block(MID)]
    first = await ask(client, model=HAIKU5, system=system, thinking={"type": "disabled"})
    second = await ask(client, model=HAIKU5, system=system, thinking={"type": "disabled"}, ticket_id="T-2")
    assert first.usage.cache_creation_input_tokens == estimate_tokens(MID, 1.3)
    assert second.usage.cache_read_input_tokens == estimate_tokens(MID, 1.3)


async def test_max_tokens_zero_prewarms_the_cache(client: anthropic.AsyncAnthropic) -> None:
    system = [system_block(MID, ttl="1h")]
    prefix = estimate_tokens(MID, 1.3)
    warm = await ask(client, model=HAIKU5, system=system, max_tokens=0)
    assert (warm.content, warm.stop_reason, warm.usage.output_tokens) == ([], "max_tokens", 0)
    assert thinking_tokens(warm) == 0
    assert (warm.usage.cache_creation_input_tokens, warm.usage.cache_read_input_tokens) == (prefix, 0)
    assert (
        warm.usage.cache_creation is not None
        and warm.usage.cache_creation.ephemeral_1h_input_tokens == prefix
    )
    real = await ask(client, model=HAIKU5, system=system, max_tokens=600, thinking={"type": "disabled"})
    assert (real.usage.cache_creation_input_tokens, real.usage.cache_read_input_tokens) == (0, prefix)
    assert real.stop_reason == "end_turn"


# -- refusals -------------------------------------------------------------------------------------------


async def test_scripted_refusal(server: FakeApiServer, client: anthropic.AsyncAnthropic) -> None:
    server.set_scenario(Scenario.model_validate({"models": {HAIKU5: {"script": ["refusal", "ok"]}}}))
    refused = await ask(client, model=HAIKU5, max_tokens=ROOMY)
    assert (refused.stop_reason, refused.content) == ("refusal", [])
    assert refused.stop_details is not None
    assert (refused.stop_details.type, refused.stop_details.category) == ("refusal", None)
    assert refused.stop_details.explanation
    assert refused.usage.input_tokens > 0 and refused.usage.output_tokens == REFUSAL_OUTPUT_TOKENS
    assert thinking_tokens(refused) == 0
    answered = await ask(client, model=HAIKU5, max_tokens=ROOMY)
    assert answered.stop_reason == "end_turn" and answered.stop_details is None


async def test_refusal_rate_refuses_the_same_tickets_again(
    server: FakeApiServer, client: anthropic.AsyncAnthropic
) -> None:
    server.set_scenario(Scenario.model_validate({"models": {HAIKU: {"refusal_rate": 0.5}}}))

    async def refused() -> list[bool]:
        return [(await ask(client, f"ticket text {index}")).stop_reason == "refusal" for index in range(40)]

    first = await refused()
    assert await refused() == first
    assert 0 < sum(first) < 40


# -- the router's default request, for every model it may be configured with ---------------------------

SMALL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["team"],
    "properties": {
        "team": {
            "type": "object",
            "additionalProperties": False,
            "required": ["label", "confidence"],
            "properties": {
                "label": {"type": "string", "enum": ["billing", "infrastructure"]},
                "confidence": {"type": "number"},
            },
        }
    },
}
LIVE_MODELS = [model for model, facts in MODELS.items() if not is_retired(facts, TODAY.date())]


@pytest.mark.parametrize("model", LIVE_MODELS)
async def test_router_default_request_succeeds_on_every_live_model(
    client: anthropic.AsyncAnthropic, model: str
) -> None:
    """The table's tier defaults must be a request the API takes and that fits in 600 tokens."""
    defaults = MODELS[model].defaults
    config: dict[str, Any] = {"format": {"type": "json_schema", "schema": SMALL_SCHEMA}}
    extra: dict[str, Any] = {}
    if defaults.effort is not None:
        config["effort"] = defaults.effort
    if defaults.thinking is not None:
        extra["thinking"] = {"type": defaults.thinking}
    message = await client.messages.create(
        model=model,
        max_tokens=600,
        system=[{"type": "text", "text": "Route tickets."}, system_block("Reply with JSON only.")],
        messages=[{"role": "user", "content": user_turn("The site is down.", "T-5")}],
        output_config=config,
        **extra,
    )
    assert message.stop_reason == "end_turn"
    thinks = effective_thinking(MODELS[model], defaults.thinking)
    # Only Opus 5.5 cannot turn thinking off; its default (effort low) still leaves room for the answer.
    assert ("thinking" in block_types(message)) == thinks == (model == OPUS5)
    assert json.loads(text_of(message))["team"]["label"] in ("billing", "infrastructure")
