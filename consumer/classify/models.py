"""The Claude models the router knows, as data: lifecycle, prices, tokenizer, cache minimum, capabilities.

Every model fact the router (and the fake Messages API) relies on lives in ``MODELS``, so moving to a
new generation is an edit of this table, not a hunt through the code. The facts are from Anthropic's
models, pricing, prompt-caching and migration pages as of 2026-11-30 (``shared/CLAUDE-API.md`` cites
them). Everything else here is pure functions over the table: which request parameters a tier sends,
whether a combination is valid, what a call costs, and whether a model may still be used on a date.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

Effort = Literal["low", "medium", "high", "xhigh", "max"]
ThinkingType = Literal["adaptive", "disabled", "between_tools", "enabled"]
Tokenizer = Literal["claude-4", "claude-5"]

EFFORTS: tuple[Effort, ...] = ("low", "medium", "high", "xhigh", "max")
# Thinking modes a tier may be configured with. Manual thinking ("enabled" with budget_tokens) is not
# offered: it is a 400 on the 5.x models and deprecated on the 4.6 ones.
CONFIGURABLE_THINKING: tuple[ThinkingType, ...] = ("adaptive", "disabled", "between_tools")
THINKING_OFF: frozenset[str] = frozenset({"disabled", "between_tools"})

# The 5.x tokenizer counts about 30% more tokens than the 4.x one for the same text.
TOKENIZER_FACTOR: dict[Tokenizer, float] = {"claude-4": 1.0, "claude-5": 1.3}

# Room for thinking that a tier's max_tokens gets on top of the answer when the model thinks. Thinking
# grows with effort; a cap below this is where answers start to come back cut off (stop_reason
# max_tokens) instead of complete.
THINKING_ALLOWANCE: dict[Effort, int] = {
    "low": 2_000,
    "medium": 4_000,
    "high": 8_000,
    "xhigh": 16_000,
    "max": 32_000,
}


@dataclass(frozen=True)
class Rates:
    """USD per million tokens."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float


@dataclass(frozen=True)
class Pricing:
    """A model's rates; ``long`` applies to every token of a request whose prompt exceeds ``long_above``."""

    base: Rates
    long: Rates | None = None
    long_above: int = 0


@dataclass(frozen=True)
class Capabilities:
    """What the Messages API accepts for a model under API version 2026-10-21."""

    efforts: tuple[Effort, ...] = ()  # empty: the model has no effort parameter
    default_effort: Effort | None = None  # what the API uses when effort is not sent
    thinking_types: frozenset[str] = frozenset()  # accepted thinking.type values
    thinks_by_default: bool = False  # thinking not sent means adaptive thinking
    thinking_off_max_effort: Effort | None = None  # disabled/between_tools only up to this effort
    prefill: bool = True  # a trailing assistant turn is accepted
    forced_tool_choice: bool = True  # tool_choice {"type": "tool"|"any"} is accepted


@dataclass(frozen=True)
class Lifecycle:
    """``retires_on`` is the first day requests fail; legacy models still answer until then."""

    status: Literal["current", "legacy"]
    released: date | None = None
    legacy_since: date | None = None
    retires_on: date | None = None
    retires_not_before: date | None = None
    successor: str | None = None


@dataclass(frozen=True)
class TierDefaults:
    """What the router sends when the tier's THINKING/EFFORT settings are unset: valid and cheapest."""

    thinking: ThinkingType | None = None  # None: send no thinking parameter
    effort: Effort | None = None  # None: send no effort


@dataclass(frozen=True)
class ModelFacts:
    model_id: str
    name: str
    pricing: Pricing | None
    min_cacheable_tokens: int
    tokenizer: Tokenizer
    capabilities: Capabilities
    lifecycle: Lifecycle
    defaults: TierDefaults = field(default_factory=TierDefaults)
    dated_ids: tuple[str, ...] = ()


_FIVE_FIVE_EFFORTS: tuple[Effort, ...] = EFFORTS

MODELS: dict[str, ModelFacts] = {
    facts.model_id: facts
    for facts in (
        ModelFacts(
            model_id="claude-haiku-5-5",
            name="Claude Haiku 5.5",
            pricing=Pricing(
                base=Rates(0.10, 0.50, 0.125, 0.20, 0.01),
                long=Rates(0.50, 2.50, 0.625, 1.00, 0.05),
                long_above=100_000,
            ),
            min_cacheable_tokens=512,
            tokenizer="claude-5",
            capabilities=Capabilities(
                efforts=_FIVE_FIVE_EFFORTS,
                default_effort="medium",
                thinking_types=frozenset({"adaptive", "disabled"}),
                thinks_by_default=True,
                thinking_off_max_effort="high",
                prefill=False,
                forced_tool_choice=True,
            ),
            lifecycle=Lifecycle("current", released=date(2026, 10, 7)),
            defaults=TierDefaults(thinking="disabled", effort="low"),
        ),
        ModelFacts(
            model_id="claude-sonnet-5-5",
            name="Claude Sonnet 5.5",
            pricing=Pricing(base=Rates(2.0, 10.0, 2.50, 4.00, 0.10)),
            min_cacheable_tokens=512,
            tokenizer="claude-5",
            capabilities=Capabilities(
                efforts=_FIVE_FIVE_EFFORTS,
                default_effort="high",
                thinking_types=frozenset({"adaptive", "between_tools"}),
                thinks_by_default=True,
                thinking_off_max_effort="high",
                prefill=False,
                forced_tool_choice=False,
            ),
            lifecycle=Lifecycle("current", released=date(2026, 9, 28)),
            defaults=TierDefaults(thinking="between_tools", effort="low"),
        ),
        ModelFacts(
            model_id="claude-opus-5-5",
            name="Claude Opus 5.5",
            pricing=Pricing(base=Rates(4.0, 20.0, 5.0, 8.0, 0.20)),
            min_cacheable_tokens=512,
            tokenizer="claude-5",
            capabilities=Capabilities(
                efforts=_FIVE_FIVE_EFFORTS,
                default_effort="medium",
                thinking_types=frozenset({"adaptive"}),
                thinks_by_default=True,
                prefill=False,
                forced_tool_choice=False,
            ),
            lifecycle=Lifecycle("current"),
            defaults=TierDefaults(thinking=None, effort="low"),  # always thinks: keep it short
        ),
        ModelFacts(
            model_id="claude-sonnet-4-6",
            name="Claude Sonnet 4.6",
            pricing=Pricing(base=Rates(3.0, 15.0, 3.75, 6.0, 0.30)),
            # Documented at 1,024; observed to cache only from 2,048, so 2,048 is used.
            min_cacheable_tokens=2_048,
            tokenizer="claude-4",
            capabilities=Capabilities(
                efforts=("low", "medium", "high", "max"),
                default_effort="high",
                thinking_types=frozenset({"adaptive", "disabled", "enabled"}),
                thinks_by_default=False,
                prefill=False,
            ),
            lifecycle=Lifecycle(
                "legacy",
                released=date(2026, 2, 17),
                retires_not_before=date(2027, 2, 17),
                successor="claude-sonnet-5-5",
            ),
            defaults=TierDefaults(thinking=None, effort="low"),
        ),
        ModelFacts(
            model_id="claude-haiku-4-5",
            name="Claude Haiku 4.5",
            pricing=Pricing(base=Rates(1.0, 5.0, 1.25, 2.0, 0.10)),
            min_cacheable_tokens=4_096,
            tokenizer="claude-4",
            capabilities=Capabilities(thinking_types=frozenset({"disabled", "enabled"})),
            lifecycle=Lifecycle("legacy", successor="claude-haiku-5-5"),
            dated_ids=("claude-haiku-4-5-20251001",),
        ),
        ModelFacts(
            model_id="claude-sonnet-4-5",
            name="Claude Sonnet 4.5",
            pricing=None,
            min_cacheable_tokens=1_024,
            tokenizer="claude-4",
            capabilities=Capabilities(thinking_types=frozenset({"disabled", "enabled"})),
            lifecycle=Lifecycle("legacy", retires_on=date(2026, 11, 30), successor="claude-sonnet-5-5"),
            dated_ids=("claude-sonnet-4-5-20250929",),
        ),
    )
}


class ModelSettingError(ValueError):
    """A model setting that cannot work; the message is one line naming the setting."""


# -- lookup ------------------------------------------------------------------------------------------


def facts_for(model: str, table: Mapping[str, ModelFacts] = MODELS) -> ModelFacts | None:
    """The table row of ``model``: its alias, a listed dated id, or an id it is a dated form of."""
    found = table.get(model)
    if found is not None:
        return found
    for facts in table.values():
        if model in facts.dated_ids or model.startswith(facts.model_id + "-"):
            return facts
    return None


def tokenizer_factor(model: str) -> float:
    """Tokens per 4.x-token for ``model``; an unknown model counts as the newer, larger tokenizer."""
    facts = facts_for(model)
    return TOKENIZER_FACTOR[facts.tokenizer if facts is not None else "claude-5"]


# -- lifecycle ---------------------------------------------------------------------------------------


def is_retired(facts: ModelFacts, today: date) -> bool:
    return facts.lifecycle.retires_on is not None and today >= facts.lifecycle.retires_on


def retirement_error(setting: str, model: str, today: date) -> str | None:
    """The start-up error for a retired model in ``setting``, or None while it still answers."""
    facts = facts_for(model)
    if facts is None or not is_retired(facts, today):
        return None
    successor = f"; use {facts.lifecycle.successor}" if facts.lifecycle.successor else ""
    return f"{setting}: {model} was retired on {facts.lifecycle.retires_on}{successor}"


def legacy_warning(setting: str, model: str, today: date) -> str | None:
    """A start-up warning for a legacy model (its dates and successor), or None for a current one."""
    facts = facts_for(model)
    if facts is None or facts.lifecycle.status != "legacy" or is_retired(facts, today):
        return None
    life = facts.lifecycle
    parts = [f"{setting}: {model} is a legacy model"]
    if life.legacy_since is not None:
        parts.append(f"since {life.legacy_since}")
    if life.retires_on is not None:
        parts.append(f"and is retired on {life.retires_on}")
    elif life.retires_not_before is not None:
        parts.append(f"and will not be retired before {life.retires_not_before}")
    else:
        parts.append("(no retirement date announced)")
    text = " ".join(parts)
    return f"{text}; consider {life.successor}" if life.successor else text


# -- request options per tier ------------------------------------------------------------------------


@dataclass(frozen=True)
class TierRequest:
    """What a tier adds to every request: thinking and effort (None: not sent), and max_tokens."""

    thinking: ThinkingType | None
    effort: Effort | None
    max_tokens: int
    thinks: bool


def _allowed(values: tuple[str, ...] | frozenset[str]) -> str:
    ordered = [value for value in (*EFFORTS, *CONFIGURABLE_THINKING) if value in values]
    return ", ".join(ordered) if ordered else "none: leave it unset"


def effective_thinking(facts: ModelFacts | None, thinking: ThinkingType | None) -> bool:
    """Whether the model will think with this setting (None: whatever the model does by default)."""
    if thinking is None:
        return facts is not None and facts.capabilities.thinks_by_default
    return thinking not in THINKING_OFF


def resolve_tier_request(
    prefix: str,
    model: str,
    thinking: ThinkingType | None,
    effort: Effort | None,
    max_tokens: int | None,
    answer_tokens: int,
) -> TierRequest:
    """The thinking, effort and max_tokens a tier sends, or ModelSettingError naming the setting.

    ``prefix`` is the tier's setting prefix (``FAST`` or ``STRONG``); unset values take the table's
    defaults for the model. A model missing from the table gets exactly what was configured.
    """
    facts = facts_for(model)
    if facts is not None:
        thinking = thinking if thinking is not None else facts.defaults.thinking
        effort = effort if effort is not None else facts.defaults.effort
        _check_capabilities(prefix, model, facts.capabilities, thinking, effort)
    thinks = effective_thinking(facts, thinking)
    if max_tokens is None:
        max_tokens = answer_tokens + (thinking_allowance(facts, effort) if thinks else 0)
    return TierRequest(thinking=thinking, effort=effort, max_tokens=max_tokens, thinks=thinks)


def thinking_room_warning(prefix: str, model: str, request: TierRequest, answer_tokens: int) -> str | None:
    """A warning when a thinking tier's explicit max_tokens leaves less than the usual room to think."""
    if not request.thinks:
        return None
    needed = answer_tokens + thinking_allowance(facts_for(model), request.effort)
    if request.max_tokens >= needed:
        return None
    return (
        f"{prefix}_MAX_TOKENS: {request.max_tokens} leaves little room for {model} to think "
        f"(about {needed} expected at effort {request.effort or 'default'}): answers may come back cut off"
    )


def thinking_allowance(facts: ModelFacts | None, effort: Effort | None) -> int:
    level = effort or (facts.capabilities.default_effort if facts is not None else None) or "high"
    return THINKING_ALLOWANCE[level]


def _check_capabilities(
    prefix: str, model: str, caps: Capabilities, thinking: ThinkingType | None, effort: Effort | None
) -> None:
    if thinking is not None and thinking not in caps.thinking_types:
        accepted = caps.thinking_types & set(CONFIGURABLE_THINKING)
        raise ModelSettingError(
            f"{prefix}_THINKING: {thinking!r} is not accepted by {model} (allowed: {_allowed(accepted)})"
        )
    if effort is None:
        return
    if not caps.efforts:
        raise ModelSettingError(f"{prefix}_EFFORT: {model} has no effort setting (allowed: unset)")
    if effort not in caps.efforts:
        raise ModelSettingError(
            f"{prefix}_EFFORT: {effort!r} is not accepted by {model} (allowed: {_allowed(caps.efforts)})"
        )
    if thinking in THINKING_OFF and caps.thinking_off_max_effort is not None:
        ceiling = EFFORTS.index(caps.thinking_off_max_effort)
        if EFFORTS.index(effort) > ceiling:
            allowed = tuple(level for level in caps.efforts if EFFORTS.index(level) <= ceiling)
            raise ModelSettingError(
                f"{prefix}_EFFORT: {effort!r} is not accepted by {model} with {prefix}_THINKING={thinking} "
                f"(allowed: {_allowed(allowed)})"
            )


# -- prices ------------------------------------------------------------------------------------------


def price_row(rates: Rates) -> dict[str, float]:
    """A MODEL_PRICES row (USD per million tokens) from table rates."""
    return {
        "input": rates.input,
        "output": rates.output,
        "cache_write": rates.cache_write_5m,
        "cache_write_1h": rates.cache_write_1h,
        "cache_read": rates.cache_read,
    }


def default_prices() -> dict[str, dict[str, float]]:
    """MODEL_PRICES as the table gives it: every model that is still priced, with long-prompt rates."""
    prices: dict[str, dict[str, float]] = {}
    for facts in MODELS.values():
        if facts.pricing is None:
            continue
        row = price_row(facts.pricing.base)
        if facts.pricing.long is not None:
            row["long_context_above"] = float(facts.pricing.long_above)
            row.update({f"long_{key}": value for key, value in price_row(facts.pricing.long).items()})
        prices[facts.model_id] = row
    return prices
