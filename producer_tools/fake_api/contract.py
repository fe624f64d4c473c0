"""Today's request contract of the Messages API (version 2026-10-21), with the real error messages.

The router has to be tested against the API it will meet in production, and that API has moved on:
sampling parameters are gone, the 5.x models think by default, reject manual thinking budgets,
assistant prefill and (some of them) a forced tool. Every model-specific rule here reads the row of
``consumer.classify.models.MODELS``, so the router's idea of what a model accepts and the fake's
cannot drift apart. Pure functions only: the server passes in headers, the body and today's date.

The checks come in two stages, in the order the real API reports problems: ``read_setting`` (the
request schema, the same for every model) runs before the model is looked up; ``check_model_rules``
runs after, with the model's facts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeGuard, get_args

from consumer.classify.models import (
    EFFORTS,
    THINKING_OFF,
    Capabilities,
    Effort,
    ModelFacts,
    ThinkingType,
    is_retired,
)
from producer_tools.fake_api.errors import invalid, model_not_found

VERSION_HEADER = "anthropic-version"
LEGACY_API_VERSION = "2023-06-01"
LATEST_API_VERSION = "2026-10-21"
API_VERSIONS: tuple[str, ...] = (LEGACY_API_VERSION, LATEST_API_VERSION)
SAMPLING_PARAMS: tuple[str, ...] = ("temperature", "top_p", "top_k")
# The order the API lists thinking types in its validation message.
THINKING_TYPES: tuple[ThinkingType, ...] = ("enabled", "disabled", "adaptive", "between_tools")
FORCED_TOOL_CHOICES: frozenset[str] = frozenset({"tool", "any"})
MIN_BUDGET_TOKENS = 1024

# The exact wording of the forced-tool rejection is not published; this one says what to do instead.
FORCED_TOOL_MESSAGE = (
    'tool_choice: forced tool use is not supported for this model; use "auto" or "none", '
    "or output_config.format for structured output."
)
PREFILL_MESSAGE = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)

_USE_INSTEAD: dict[str, str] = {
    "adaptive": 'Use "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.',
    "between_tools": 'Use "thinking.type.between_tools" to keep the model from thinking outside tool use.',
    "disabled": 'Use "thinking.type.disabled" to turn thinking off.',
    "enabled": 'Use "thinking.type.enabled" with "thinking.budget_tokens" to control thinking behavior.',
}
_ALWAYS_THINKS = 'This model always thinks; use "output_config.effort" to control how much.'
_NO_THINKING = "This model does not think."


@dataclass(frozen=True)
class ThinkingSetting:
    """The thinking-related part of a request as sent (None: not sent), after the schema checks."""

    type: ThinkingType | None = None
    budget_tokens: int | None = None
    effort: Effort | None = None


def _quoted_or(values: Sequence[str], quote: str = "'") -> str:
    """``'a', 'b' or 'c'``: how the API's validation messages list the allowed values."""
    quoted = [f"{quote}{value}{quote}" for value in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def is_thinking_type(value: Any) -> TypeGuard[ThinkingType]:
    return value in get_args(ThinkingType)


def is_effort(value: Any) -> TypeGuard[Effort]:
    return value in EFFORTS


# -- headers -----------------------------------------------------------------------------------------


def api_version(headers: Mapping[str, str]) -> str:
    """The request's API version; the SDK always sends one, so a missing header is a client bug."""
    value = headers.get(VERSION_HEADER)
    if value is None:
        raise invalid(f"{VERSION_HEADER}: header is required")
    if value not in API_VERSIONS:
        raise invalid(f'{VERSION_HEADER}: "{value}" is not a valid version')
    return value


# -- stage 1: the request schema (model-independent) -------------------------------------------------


def read_setting(body: Mapping[str, Any], version: str) -> ThinkingSetting:
    """Schema checks every model shares: sampling parameters, the thinking object, the effort value."""
    _check_sampling_schema(body, version)
    kind, budget = _thinking_field(body.get("thinking"))
    return ThinkingSetting(type=kind, budget_tokens=budget, effort=_effort_field(body.get("output_config")))


def _check_sampling_schema(body: Mapping[str, Any], version: str) -> None:
    """Version 2026-10-21 dropped the sampling parameters from the schema, even at their defaults."""
    if version != LATEST_API_VERSION:
        return
    for name in SAMPLING_PARAMS:
        if name in body:
            raise invalid(f"{name}: Extra inputs are not permitted")


def _thinking_field(value: Any) -> tuple[ThinkingType | None, int | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise invalid("thinking: Input should be a valid dictionary or object")
    kind = value.get("type")
    if not is_thinking_type(kind):
        raise invalid(f"thinking.type: Input should be {_quoted_or(THINKING_TYPES)}")
    budget = value.get("budget_tokens")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
        raise invalid(f"thinking.{kind}.budget_tokens: Input should be a valid integer")
    return kind, budget


def _effort_field(output_config: Any) -> Effort | None:
    if output_config is None:
        return None
    if not isinstance(output_config, dict):
        raise invalid("output_config: Input should be a valid dictionary or object")
    effort = output_config.get("effort")
    if effort is None:
        return None
    if not is_effort(effort):
        raise invalid(f"output_config.effort: Input should be {_quoted_or(EFFORTS)}")
    return effort


# -- the model itself ---------------------------------------------------------------------------------


def check_not_retired(model: str, facts: ModelFacts | None, today: date) -> None:
    """A retired model answers 404 like an unknown one, whatever the scenario scripts for it."""
    if facts is not None and is_retired(facts, today):
        raise model_not_found(model)


# -- stage 2: what this model accepts -----------------------------------------------------------------


def check_model_rules(
    body: Mapping[str, Any],
    messages: Sequence[Mapping[str, Any]],
    setting: ThinkingSetting,
    facts: ModelFacts | None,
    version: str,
    max_tokens: int | None,
) -> None:
    """The per-model rules; a scripted model outside the table has no known rules, so none apply.

    ``max_tokens`` is None for count_tokens, which takes no max_tokens to compare a budget with.
    """
    if facts is None:
        return
    caps = facts.capabilities
    _check_sampling_for_model(body, facts, version)
    _check_prefill(messages, caps)
    _check_tool_choice(body.get("tool_choice"), caps)
    _check_thinking(setting, caps, max_tokens)
    _check_effort(setting.effort, caps)
    _check_thinking_off_effort(setting, caps)


def _takes_sampling(facts: ModelFacts) -> bool:
    """The table has no sampling flag: the 4.x generation (claude-4 tokenizer) is the one that kept them."""
    return facts.tokenizer == "claude-4"


def _check_sampling_for_model(body: Mapping[str, Any], facts: ModelFacts, version: str) -> None:
    """Under 2023-06-01 the schema still has the parameters, but the 5.x models reject them."""
    if version != LEGACY_API_VERSION or _takes_sampling(facts):
        return
    for name in SAMPLING_PARAMS:
        if name in body:
            raise invalid(f"{name} is deprecated for this model")


def _check_prefill(messages: Sequence[Mapping[str, Any]], caps: Capabilities) -> None:
    if messages and messages[-1].get("role") == "assistant" and not caps.prefill:
        raise invalid(PREFILL_MESSAGE)


def _check_tool_choice(choice: Any, caps: Capabilities) -> None:
    if isinstance(choice, dict) and choice.get("type") in FORCED_TOOL_CHOICES and not caps.forced_tool_choice:
        raise invalid(FORCED_TOOL_MESSAGE)


def unsupported_thinking_message(kind: str, caps: Capabilities) -> str:
    """The 400 for a thinking type the model does not list, with the nearest type it does accept."""
    return f'"thinking.type.{kind}" is not supported for this model. {_thinking_hint(kind, caps)}'


def _thinking_hint(kind: str, caps: Capabilities) -> str:
    """An off switch is replaced by another off switch; an on switch by another way of thinking."""
    turning_off = kind in THINKING_OFF
    preference = ("between_tools", "disabled") if turning_off else ("adaptive", "enabled")
    for alternative in preference:
        if alternative in caps.thinking_types:
            return _USE_INSTEAD[alternative]
    return _ALWAYS_THINKS if turning_off else _NO_THINKING


def _check_thinking(setting: ThinkingSetting, caps: Capabilities, max_tokens: int | None) -> None:
    """A budget on a model without manual thinking is reported as manual thinking, whatever the type."""
    if setting.budget_tokens is not None and "enabled" not in caps.thinking_types:
        raise invalid(unsupported_thinking_message("enabled", caps))
    kind = setting.type
    if kind is None:
        return
    if kind not in caps.thinking_types:
        raise invalid(unsupported_thinking_message(kind, caps))
    if kind == "enabled":
        _check_budget(setting.budget_tokens, max_tokens)
    elif setting.budget_tokens is not None:
        raise invalid(f"thinking.{kind}.budget_tokens: Extra inputs are not permitted")


def _check_budget(budget: int | None, max_tokens: int | None) -> None:
    """Manual thinking needs a budget below max_tokens (a pre-warm with max_tokens 0 generates nothing)."""
    if budget is None:
        raise invalid("thinking.enabled.budget_tokens: Field required")
    if budget < MIN_BUDGET_TOKENS:
        raise invalid(
            f"thinking.enabled.budget_tokens: Input should be greater than or equal to {MIN_BUDGET_TOKENS}"
        )
    if max_tokens and budget >= max_tokens:
        raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")


def _check_effort(effort: Effort | None, caps: Capabilities) -> None:
    if effort is None:
        return
    if not caps.efforts:
        raise invalid("output_config.effort: effort is not supported for this model.")
    if effort not in caps.efforts:
        allowed = _quoted_or(caps.efforts, quote='"')
        raise invalid(f'output_config.effort: "{effort}" is not supported for this model; use {allowed}.')


def _check_thinking_off_effort(setting: ThinkingSetting, caps: Capabilities) -> None:
    """Turning thinking off is only offered up to an effort ceiling; an unsent effort is the default."""
    ceiling = caps.thinking_off_max_effort
    if setting.type not in THINKING_OFF or ceiling is None:
        return
    effort = setting.effort or caps.default_effort
    if effort is not None and EFFORTS.index(effort) > EFFORTS.index(ceiling):
        raise invalid(
            f'"thinking.type.{setting.type}" is not supported with output_config.effort "{effort}" '
            f'for this model; use effort "{ceiling}" or lower.'
        )
