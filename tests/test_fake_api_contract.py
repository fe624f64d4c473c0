"""Today's Messages API contract (version 2026-10-21) as the fake enforces it, through the real SDK.

The router is tested against this fake, so each rule is checked with the status code and the exact
message the real API gives: a router change that sends a parameter the API no longer takes must
fail here, not in production.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anthropic
import pytest

from consumer.classify.models import MODELS, is_retired
from producer_tools.fake_api import FakeApiServer, Scenario
from producer_tools.fake_api.contract import FORCED_TOOL_MESSAGE, PREFILL_MESSAGE
from producer_tools.fake_api.scenario import DEFAULT_MODELS
from tests.test_fake_api import (
    HAIKU,
    HAIKU5,
    OPUS5,
    RETIRED,
    SCHEMA,
    SONNET,
    SONNET5,
    TODAY,
    TOOL_NAME,
    answer_of,
    ask,
    client,
    clock,
    sdk,
    server,
    system_block,
    violations,
)

_FIXTURES = (client, clock, server)  # the fake-API test suite's own fixtures, shared

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

LEGACY_VERSION = {"anthropic-version": "2023-06-01"}
# Room for the 5.x models' default thinking (up to 1,125 tokens at medium), so only the rule under
# test decides the outcome.
ROOMY = 8_000
ENABLED_MESSAGE = (
    '"thinking.type.enabled" is not supported for this model. '
    'Use "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
)


async def rejected(api: anthropic.AsyncAnthropic, **kwargs: Any) -> anthropic.BadRequestError:
    """The 400 a request gets; ``ask``'s defaults fill in everything not given."""
    with pytest.raises(anthropic.BadRequestError) as caught:
        await ask(api, **{"max_tokens": ROOMY, **kwargs})
    assert caught.value.status_code == 400 and caught.value.type == "invalid_request_error"
    return caught.value


def output_config(effort: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"format": {"type": "json_schema", "schema": SCHEMA}}
    if effort is not None:
        config["effort"] = effort
    return config


# -- 1. the anthropic-version header ------------------------------------------------------------------


async def test_missing_version_header_is_rejected(client: anthropic.AsyncAnthropic) -> None:
    error = await rejected(client, extra_headers={"anthropic-version": anthropic.omit})
    assert error.api_message == "anthropic-version: header is required"


async def test_unknown_version_is_rejected(client: anthropic.AsyncAnthropic) -> None:
    error = await rejected(client, extra_headers={"anthropic-version": "2025-01-01"})
    assert error.api_message == 'anthropic-version: "2025-01-01" is not a valid version'


@pytest.mark.parametrize("version", ["2023-06-01", "2026-10-21"])
async def test_both_published_versions_are_accepted(client: anthropic.AsyncAnthropic, version: str) -> None:
    message = await ask(client, model=HAIKU5, max_tokens=ROOMY, extra_headers={"anthropic-version": version})
    assert message.stop_reason == "end_turn"


# -- 2. sampling parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [("temperature", 1.0), ("top_p", 0.99), ("top_k", 40)])
@pytest.mark.parametrize("model", [HAIKU, HAIKU5])
async def test_sampling_parameters_are_extra_inputs_under_2026_10_21(
    client: anthropic.AsyncAnthropic, name: str, value: float, model: str
) -> None:
    error = await rejected(client, model=model, extra_body={name: value})
    assert error.api_message == f"{name}: Extra inputs are not permitted"


@pytest.mark.parametrize("model", [HAIKU, SONNET])
async def test_sampling_parameters_still_work_on_4x_under_2023_06_01(
    client: anthropic.AsyncAnthropic, model: str
) -> None:
    message = await ask(
        client, model=model, extra_body={"temperature": 0.0, "top_k": 5}, extra_headers=LEGACY_VERSION
    )
    assert violations(answer_of(message)) == []


@pytest.mark.parametrize("name", ["temperature", "top_p", "top_k"])
async def test_sampling_parameters_are_deprecated_on_5x_under_2023_06_01(
    client: anthropic.AsyncAnthropic, name: str
) -> None:
    error = await rejected(client, model=SONNET5, extra_body={name: 0}, extra_headers=LEGACY_VERSION)
    assert error.api_message == f"{name} is deprecated for this model"


# -- 3. assistant prefill ------------------------------------------------------------------------------


def prefilled(text: str = "My invoice is wrong.") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}, {"role": "assistant", "content": '{"team":'}]


@pytest.mark.parametrize("model", [HAIKU5, SONNET5, SONNET])
async def test_prefill_is_rejected_where_the_table_says_so(
    client: anthropic.AsyncAnthropic, model: str
) -> None:
    assert not MODELS[model].capabilities.prefill
    error = await rejected(client, model=model, messages=prefilled())
    assert error.api_message == PREFILL_MESSAGE


async def test_prefill_still_works_on_haiku_4_5(client: anthropic.AsyncAnthropic) -> None:
    message = await ask(client, model=HAIKU, messages=prefilled())
    assert message.stop_reason == "end_turn"


# -- 4. forced tool_choice ------------------------------------------------------------------------------


@pytest.mark.parametrize("choice", [{"type": "tool", "name": TOOL_NAME}, {"type": "any"}])
@pytest.mark.parametrize("model", [SONNET5, OPUS5])
async def test_forced_tool_choice_is_rejected_on_sonnet_and_opus_5_5(
    client: anthropic.AsyncAnthropic, model: str, choice: dict[str, Any]
) -> None:
    error = await rejected(client, model=model, mode="tool", tool_choice=choice)
    assert error.api_message == FORCED_TOOL_MESSAGE


async def test_haiku_5_5_still_takes_a_forced_tool(client: anthropic.AsyncAnthropic) -> None:
    message = await ask(client, model=HAIKU5, mode="tool", max_tokens=ROOMY)
    assert message.stop_reason == "tool_use"
    tool_use = [block for block in message.content if block.type == "tool_use"]
    assert len(tool_use) == 1 and violations(tool_use[0].input) == []


# -- 5. thinking -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "thinking",
    [
        {"type": "enabled", "budget_tokens": 2_000},
        {"type": "adaptive", "budget_tokens": 2_000},  # a budget alone is manual thinking
    ],
)
@pytest.mark.parametrize("model", [HAIKU5, SONNET5, OPUS5])
async def test_manual_thinking_is_rejected_on_5x(
    client: anthropic.AsyncAnthropic, model: str, thinking: dict[str, Any]
) -> None:
    error = await rejected(client, model=model, thinking=thinking)
    assert error.api_message == ENABLED_MESSAGE


async def test_disabled_thinking_on_sonnet_5_5_points_to_between_tools(
    client: anthropic.AsyncAnthropic,
) -> None:
    error = await rejected(client, model=SONNET5, thinking={"type": "disabled"})
    assert error.api_message == (
        '"thinking.type.disabled" is not supported for this model. '
        'Use "thinking.type.between_tools" to keep the model from thinking outside tool use.'
    )


@pytest.mark.parametrize(
    ("model", "kind", "hint"),
    [
        (OPUS5, "disabled", 'This model always thinks; use "output_config.effort" to control how much.'),
        (HAIKU5, "between_tools", 'Use "thinking.type.disabled" to turn thinking off.'),
        (HAIKU, "adaptive", 'Use "thinking.type.enabled" with "thinking.budget_tokens" to control'),
    ],
)
async def test_unsupported_thinking_type_names_it_with_a_hint(
    client: anthropic.AsyncAnthropic, model: str, kind: str, hint: str
) -> None:
    error = await rejected(client, model=model, thinking={"type": kind})
    assert error.api_message is not None
    assert error.api_message.startswith(f'"thinking.type.{kind}" is not supported for this model. {hint}')


@pytest.mark.parametrize(("model", "kind"), [(HAIKU5, "disabled"), (SONNET5, "between_tools")])
@pytest.mark.parametrize("effort", ["xhigh", "max"])
async def test_thinking_off_above_its_effort_ceiling_is_rejected(
    client: anthropic.AsyncAnthropic, model: str, kind: str, effort: str
) -> None:
    error = await rejected(client, model=model, thinking={"type": kind}, output_config=output_config(effort))
    assert error.api_message == (
        f'"thinking.type.{kind}" is not supported with output_config.effort "{effort}" '
        'for this model; use effort "high" or lower.'
    )


@pytest.mark.parametrize(("model", "kind"), [(HAIKU5, "disabled"), (SONNET5, "between_tools")])
async def test_thinking_off_at_its_ceiling_is_accepted(
    client: anthropic.AsyncAnthropic, model: str, kind: str
) -> None:
    message = await ask(client, model=model, thinking={"type": kind}, output_config=output_config("high"))
    assert message.stop_reason == "end_turn"


async def test_unknown_thinking_type_is_a_schema_error(client: anthropic.AsyncAnthropic) -> None:
    error = await rejected(client, model=HAIKU5, thinking={"type": "sometimes"})
    assert (
        error.api_message
        == "thinking.type: Input should be 'enabled', 'disabled', 'adaptive' or 'between_tools'"
    )


async def test_manual_thinking_on_4x_needs_a_budget_below_max_tokens(
    client: anthropic.AsyncAnthropic,
) -> None:
    without = await rejected(client, model=HAIKU, thinking={"type": "enabled"})
    assert without.api_message == "thinking.enabled.budget_tokens: Field required"
    too_big = await rejected(
        client, model=HAIKU, thinking={"type": "enabled", "budget_tokens": 2_000}, max_tokens=1_500
    )
    assert too_big.api_message == "`max_tokens` must be greater than `thinking.budget_tokens`."
    message = await ask(
        client, model=HAIKU, thinking={"type": "enabled", "budget_tokens": 1_500}, max_tokens=4_000
    )
    assert message.content[0].type == "thinking"
    assert message.usage.output_tokens_details is not None
    assert 0 < message.usage.output_tokens_details.thinking_tokens <= 1_500


# -- 6. effort -------------------------------------------------------------------------------------------


async def test_effort_outside_the_enum_is_a_schema_error(client: anthropic.AsyncAnthropic) -> None:
    error = await rejected(client, model=HAIKU5, output_config=output_config("extreme"))
    assert (
        error.api_message == "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
    )


async def test_effort_on_a_model_without_it(client: anthropic.AsyncAnthropic) -> None:
    error = await rejected(client, model=HAIKU, output_config=output_config("low"))
    assert error.api_message == "output_config.effort: effort is not supported for this model."


async def test_effort_level_the_model_lacks_is_named(client: anthropic.AsyncAnthropic) -> None:
    assert "xhigh" not in MODELS[SONNET].capabilities.efforts
    error = await rejected(client, model=SONNET, output_config=output_config("xhigh"))
    assert error.api_message == (
        'output_config.effort: "xhigh" is not supported for this model; use "low", "medium", "high" or "max".'
    )


# -- 7. retired models ------------------------------------------------------------------------------------


def test_retired_models_are_not_in_the_default_scenario() -> None:
    assert RETIRED not in DEFAULT_MODELS and RETIRED not in Scenario().models
    assert not any(is_retired(MODELS[model], TODAY.date()) for model in DEFAULT_MODELS)
    # Every model with no retirement date is there, so the defaults follow the table.
    assert set(DEFAULT_MODELS) == {
        model for model, facts in MODELS.items() if facts.lifecycle.retires_on is None
    }


@pytest.mark.parametrize("model", [RETIRED, RETIRED + "-20250929"])
async def test_retired_model_is_not_found_even_when_scripted(server: FakeApiServer, model: str) -> None:
    server.set_scenario(Scenario.model_validate({"models": {RETIRED: {}, HAIKU: {}}}))
    api = sdk(server.base_url)
    with pytest.raises(anthropic.NotFoundError) as caught:
        await ask(api, model=model)
    await api.close()
    assert caught.value.status_code == 404
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": f"model: {model}"},
        "request_id": caught.value.request_id,
    }


async def test_a_model_answers_until_its_retirement_day() -> None:
    """Retirement follows the server's wall clock, not the day the tests run."""
    day_before = datetime(2026, 11, 29, 23, 59, tzinfo=UTC)
    scripted = Scenario.model_validate({"models": {RETIRED: {}}})
    async with FakeApiServer(scripted, wall_clock=lambda: day_before, shutdown_timeout_s=0.2) as fake:
        api = sdk(fake.base_url)
        message = await ask(api, model=RETIRED)
        await api.close()
    assert message.stop_reason == "end_turn"


# -- 8. max_tokens -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, 1.5, "600", True])
async def test_max_tokens_must_be_a_non_negative_integer(
    client: anthropic.AsyncAnthropic, value: Any
) -> None:
    error = await rejected(client, model=HAIKU5, max_tokens=value)
    assert error.api_message is not None and error.api_message.startswith("max_tokens:")


# -- 9. credentials ----------------------------------------------------------------------------------------


async def test_x_api_key_wins_over_bearer(server: FakeApiServer) -> None:
    server.set_scenario(Scenario(api_key="right"))
    good_header = sdk(server.base_url, api_key="wrong")
    bad_header = sdk(server.base_url, api_key="right")
    message = await ask(good_header, model=HAIKU5, max_tokens=ROOMY, extra_headers={"x-api-key": "right"})
    assert message.stop_reason == "end_turn"
    with pytest.raises(anthropic.AuthenticationError):
        await ask(bad_header, model=HAIKU5, extra_headers={"x-api-key": "wrong"})
    await good_header.close()
    await bad_header.close()


# -- 13. count_tokens ----------------------------------------------------------------------------------------


async def count(api: anthropic.AsyncAnthropic, model: str, **extra: Any) -> int:
    counted = await api.messages.count_tokens(
        model=model,
        system=[system_block("Route support tickets by team, urgency and sentiment. " * 40)],
        messages=[{"role": "user", "content": "My invoice is wrong and I was charged twice. " * 20}],
        **extra,
    )
    return counted.input_tokens


async def test_count_tokens_uses_the_model_tokenizer(client: anthropic.AsyncAnthropic) -> None:
    legacy, current = await count(client, HAIKU), await count(client, HAIKU5)
    assert legacy > 500
    assert current / legacy == pytest.approx(1.3, abs=0.01)


async def test_count_tokens_applies_the_contract(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as thinking:
        await count(client, SONNET5, thinking={"type": "disabled"})
    assert thinking.value.api_message is not None
    assert thinking.value.api_message.startswith('"thinking.type.disabled" is not supported for this model.')
    with pytest.raises(anthropic.BadRequestError) as effort:
        await count(client, HAIKU, output_config={"effort": "low"})
    assert effort.value.api_message == "output_config.effort: effort is not supported for this model."
    with pytest.raises(anthropic.BadRequestError) as sampling:
        await count(client, HAIKU5, extra_body={"temperature": 0.0})
    assert sampling.value.api_message == "temperature: Extra inputs are not permitted"
    with pytest.raises(anthropic.NotFoundError) as retired:
        await count(client, RETIRED)
    assert retired.value.api_message == f"model: {RETIRED}"


async def test_count_tokens_is_free_of_faults(
    server: FakeApiServer, client: anthropic.AsyncAnthropic
) -> None:
    server.set_scenario(Scenario.model_validate({"models": {HAIKU5: {"script": ["500"]}}}))
    assert await count(client, HAIKU5) > 0
    with pytest.raises(anthropic.InternalServerError):  # the scripted fault is still queued for create
        await ask(client, model=HAIKU5, max_tokens=ROOMY)
