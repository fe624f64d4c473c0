"""The model table and its pure decisions: lifecycle on a date, per-tier thinking/effort, prices."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from consumer.classify.models import (
    EFFORTS,
    MODELS,
    THINKING_ALLOWANCE,
    ModelSettingError,
    default_prices,
    facts_for,
    is_retired,
    legacy_warning,
    resolve_tier_request,
    retirement_error,
    tokenizer_factor,
)

TODAY = date(2026, 11, 30)


def test_every_model_has_one_row_and_dated_ids_resolve() -> None:
    for model_id, facts in MODELS.items():
        assert facts.model_id == model_id
        assert facts_for(model_id) is facts
        for dated in facts.dated_ids:
            assert facts_for(dated) is facts
    assert facts_for("claude-haiku-4-5-20251001") is MODELS["claude-haiku-4-5"]
    assert facts_for("claude-haiku-4") is None
    assert facts_for("mystery-model") is None


def test_sonnet_4_5_is_retired_from_today_with_its_successor() -> None:
    assert retirement_error("FAST_MODEL", "claude-sonnet-4-5", TODAY) == (
        "FAST_MODEL: claude-sonnet-4-5 was retired on 2026-11-30; use claude-sonnet-5-5"
    )
    assert retirement_error("STRONG_MODEL", "claude-sonnet-4-5-20250929", TODAY) == (
        "STRONG_MODEL: claude-sonnet-4-5-20250929 was retired on 2026-11-30; use claude-sonnet-5-5"
    )
    yesterday = date(2026, 11, 29)
    assert retirement_error("FAST_MODEL", "claude-sonnet-4-5", yesterday) is None
    assert legacy_warning("FAST_MODEL", "claude-sonnet-4-5", yesterday) == (
        "FAST_MODEL: claude-sonnet-4-5 is a legacy model and is retired on 2026-11-30; "
        "consider claude-sonnet-5-5"
    )


def test_legacy_models_warn_with_their_dates_and_current_ones_do_not() -> None:
    assert legacy_warning("STRONG_MODEL", "claude-sonnet-4-6", TODAY) == (
        "STRONG_MODEL: claude-sonnet-4-6 is a legacy model and will not be retired before 2027-02-17; "
        "consider claude-sonnet-5-5"
    )
    haiku = legacy_warning("FAST_MODEL", "claude-haiku-4-5", TODAY)
    assert haiku is not None and "no retirement date announced" in haiku and "claude-haiku-5-5" in haiku
    for model in ("claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5", "some-custom-model"):
        assert legacy_warning("FAST_MODEL", model, TODAY) is None
        assert retirement_error("FAST_MODEL", model, TODAY) is None


def test_retired_models_are_not_priced_and_the_others_are() -> None:
    prices = default_prices()
    for model_id, facts in MODELS.items():
        assert (model_id in prices) == (not is_retired(facts, TODAY))
    haiku = prices["claude-haiku-5-5"]
    assert (haiku["input"], haiku["output"], haiku["cache_read"], haiku["cache_write_1h"]) == (
        0.10,
        0.50,
        0.01,
        0.20,
    )
    assert haiku["long_context_above"] == 100_000 and haiku["long_input"] == 0.50
    assert prices["claude-sonnet-5-5"]["cache_read"] == 0.10


def test_the_5x_tokenizer_counts_thirty_percent_more() -> None:
    assert tokenizer_factor("claude-haiku-5-5") == 1.3
    assert tokenizer_factor("claude-haiku-4-5-20251001") == 1.0
    assert tokenizer_factor("mystery-model") == 1.3  # errs high


@pytest.mark.parametrize("model", [m for m, f in MODELS.items() if not is_retired(f, TODAY)])
def test_defaults_are_valid_for_every_model_and_think_only_where_unavoidable(model: str) -> None:
    facts = MODELS[model]
    request = resolve_tier_request("FAST", model, None, None, None, 600)
    caps = facts.capabilities
    assert request.thinking is None or request.thinking in caps.thinking_types
    assert request.effort is None or request.effort in caps.efforts
    if caps.efforts:
        assert request.effort == "low", "the cheapest effort"
    else:
        assert request.effort is None, "nothing sent to a model without the parameter"
    always_thinks = caps.thinks_by_default and not (caps.thinking_types - {"adaptive", "enabled"})
    assert request.thinks == always_thinks
    expected = 600 + THINKING_ALLOWANCE["low"] if request.thinks else 600
    assert request.max_tokens == expected


def test_haiku_and_sonnet_5_5_defaults_match_the_issue() -> None:
    haiku = resolve_tier_request("FAST", "claude-haiku-5-5", None, None, None, 600)
    assert (haiku.thinking, haiku.effort, haiku.max_tokens) == ("disabled", "low", 600)
    sonnet = resolve_tier_request("STRONG", "claude-sonnet-5-5", None, None, None, 600)
    assert (sonnet.thinking, sonnet.effort, sonnet.max_tokens) == ("between_tools", "low", 600)


def test_turning_thinking_on_makes_room_for_it() -> None:
    for effort in EFFORTS:
        request = resolve_tier_request("FAST", "claude-haiku-5-5", "adaptive", effort, None, 600)
        assert request.thinks and request.max_tokens == 600 + THINKING_ALLOWANCE[effort]
    explicit = resolve_tier_request("FAST", "claude-haiku-5-5", "adaptive", "high", 900, 600)
    assert explicit.max_tokens == 900, "an explicit FAST_MAX_TOKENS is kept"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("STRONG", "claude-sonnet-5-5", "disabled", None),
            "STRONG_THINKING: 'disabled' is not accepted by claude-sonnet-5-5 "
            "(allowed: adaptive, between_tools)",
        ),
        (
            ("FAST", "claude-haiku-5-5", "between_tools", None),
            "FAST_THINKING: 'between_tools' is not accepted by claude-haiku-5-5 "
            "(allowed: adaptive, disabled)",
        ),
        (
            ("FAST", "claude-haiku-5-5", "disabled", "xhigh"),
            "FAST_EFFORT: 'xhigh' is not accepted by claude-haiku-5-5 with FAST_THINKING=disabled "
            "(allowed: low, medium, high)",
        ),
        (
            ("STRONG", "claude-sonnet-5-5", None, "max"),
            "STRONG_EFFORT: 'max' is not accepted by claude-sonnet-5-5 with STRONG_THINKING=between_tools "
            "(allowed: low, medium, high)",
        ),
        (
            ("FAST", "claude-haiku-4-5", None, "low"),
            "FAST_EFFORT: claude-haiku-4-5 has no effort setting (allowed: unset)",
        ),
        (
            ("STRONG", "claude-sonnet-4-6", None, "xhigh"),
            "STRONG_EFFORT: 'xhigh' is not accepted by claude-sonnet-4-6 (allowed: low, medium, high, max)",
        ),
        (
            ("FAST", "claude-opus-5-5", "disabled", None),
            "FAST_THINKING: 'disabled' is not accepted by claude-opus-5-5 (allowed: adaptive)",
        ),
    ],
)
def test_invalid_combinations_name_the_setting_and_the_allowed_values(
    args: tuple[str, str, str | None, str | None], message: str
) -> None:
    prefix, model, thinking, effort = args
    with pytest.raises(ModelSettingError) as caught:
        resolve_tier_request(prefix, model, thinking, effort, None, 600)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_thinking_at_high_effort_is_fine_when_thinking_is_on() -> None:
    request = resolve_tier_request("STRONG", "claude-sonnet-5-5", "adaptive", "max", None, 600)
    assert request.thinks and request.max_tokens == 600 + THINKING_ALLOWANCE["max"]


def test_an_unknown_model_gets_exactly_what_was_configured() -> None:
    plain = resolve_tier_request("FAST", "my-proxy-model", None, None, None, 600)
    assert (plain.thinking, plain.effort, plain.max_tokens, plain.thinks) == (None, None, 600, False)
    set_ = resolve_tier_request("FAST", "my-proxy-model", "adaptive", "medium", None, 600)
    assert (set_.thinking, set_.effort, set_.max_tokens) == (
        "adaptive",
        "medium",
        600 + THINKING_ALLOWANCE["medium"],
    )


def test_the_readme_price_table_is_the_model_table() -> None:
    """The README's model table is written by hand; this keeps it equal to the code's."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for model_id, facts in MODELS.items():
        if facts.pricing is None:
            row = f"| `{model_id}` | — | — | — | — | — | {facts.min_cacheable_tokens:,} |"
        else:
            rates = facts.pricing.base
            prices = (rates.input, rates.output, rates.cache_write_5m, rates.cache_write_1h, rates.cache_read)
            row = (
                f"| `{model_id}` | "
                + " | ".join(f"{p:g}" for p in prices)
                + f" | {facts.min_cacheable_tokens:,} |"
            )
        assert row in readme, row
