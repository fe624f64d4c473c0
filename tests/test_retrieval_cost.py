"""What the retrieved examples cost: their estimated tokens on each Claude call, the metric that counts
them, and ``ticket-tools evaluate``'s cost per 10k tickets with and without them.

The arithmetic by hand first, then a tier against the fake Messages API (whose token count uses the
same estimator, so the estimate can be checked against what the fake bills), then real runs of the
command with RETRIEVED_EXAMPLES on and off.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.classify.claude import (
    ReplyUsage,
    build_claude_tier,
    price_for,
    retrieval_cost_usd,
    usage_from,
    without_retrieval,
)
from consumer.classify.models import tokenizer_factor
from consumer.classify.pipeline import PipelineResult
from consumer.classify.prompt import Example, similar_examples_section, user_message, user_turn
from consumer.classify.tokens import estimate_tokens
from consumer.config import DEFAULT_PRICES
from consumer.metrics import Metrics
from producer_tools.evaluation.runner import ModelCall, TicketOutcome
from producer_tools.evaluation.summary import cost_and_latency
from producer_tools.evaluation.terminal import cost_per_10k
from schemas.events import TicketEvent, TierAttempt, TokenUsage
from tests.test_claude_tier import EXAMPLES, HAIKU, SONNET, TAXONOMY, Harness, api, ticket
from tests.test_evaluate import EVAL_LABELED, read_report, run_evaluate

_FIXTURES = (api,)  # the Claude tier suite's fake-API harness, shared

HAIKU_PRICE = price_for(HAIKU, DEFAULT_PRICES)  # 0.10 input, 0.50 output, 0.01 cache read; long above 100k


# --- pure: the estimate, the usage, the price -------------------------------------------------------


def test_user_turn_is_user_message_with_the_section_rendered_once() -> None:
    event = ticket("T-turn")
    similar = [(EXAMPLES[0], 0.9), (EXAMPLES[3], 0.4)]
    content, section = user_turn(event, 8_000, similar)
    assert content == user_message(event, 8_000, similar), "the tier sends what user_message builds"
    assert section == similar_examples_section(similar) and content.startswith(section)
    assert user_turn(event, 8_000, ()) == (user_message(event, 8_000), "")


def test_retrieved_tokens_are_part_of_the_input_and_add_up() -> None:
    usage, _ = usage_from(ReplyUsage(input_tokens=900, output_tokens=40), retrieved_tokens=600)
    assert (usage.input_tokens, usage.retrieved_tokens) == (900, 600), "input stays as the API reported"
    capped, _ = usage_from(ReplyUsage(input_tokens=50), retrieved_tokens=80)
    assert capped.retrieved_tokens == 50, "an estimate above the whole input is capped at it"
    assert (usage + capped).retrieved_tokens == 650
    assert without_retrieval(usage).input_tokens == 300 and without_retrieval(usage).retrieved_tokens == 0


def test_retrieved_examples_are_priced_at_the_calls_input_rate() -> None:
    usage = TokenUsage(
        input_tokens=3_000, retrieved_tokens=1_000, cache_read_input_tokens=5_000, output_tokens=200
    )
    assert retrieval_cost_usd(usage, HAIKU_PRICE) == pytest.approx(1_000 * 0.10 / 1e6)
    assert retrieval_cost_usd(usage.model_copy(update={"retrieved_tokens": 0}), HAIKU_PRICE) == 0.0


def test_examples_that_push_a_prompt_past_haikus_long_context_threshold_cost_the_long_rates() -> None:
    """101,000 prompt tokens bill every token at Haiku 5.5's long rates; without the 1,500 retrieved
    ones the prompt is 99,500, at the base rates. The examples cost that whole difference."""
    usage = TokenUsage(
        input_tokens=2_000, retrieved_tokens=1_500, cache_read_input_tokens=99_000, output_tokens=100
    )
    with_examples = 2_000 * 0.50 + 99_000 * 0.05 + 100 * 2.50
    without_examples = 500 * 0.10 + 99_000 * 0.01 + 100 * 0.50
    assert retrieval_cost_usd(usage, HAIKU_PRICE) == pytest.approx((with_examples - without_examples) / 1e6)


def outcome(*calls: ModelCall) -> TicketOutcome:
    return TicketOutcome(
        labels={},
        confidences={},
        error_kind=None,
        low_confidence=False,
        tiers_tried=[call.tier for call in calls],
        final_tier=calls[-1].tier if calls else None,
        cost_usd=sum(call.cost_usd for call in calls),
        latency_ms=1.0,
        model_calls=calls,
    )


def test_cost_without_retrieval_takes_each_calls_examples_off_at_its_own_models_price() -> None:
    prices = {**DEFAULT_PRICES, SONNET: {**DEFAULT_PRICES[SONNET], "input": 7.0}}  # a MODEL_PRICES override
    fast = ModelCall(
        "fast", HAIKU, "low_confidence", 1, TokenUsage(input_tokens=900, retrieved_tokens=400), 0.001
    )
    strong = ModelCall(
        "strong", SONNET, "answered", 1, TokenUsage(input_tokens=800, retrieved_tokens=400), 0.01
    )
    runs = [[outcome(fast, strong), outcome(fast), outcome()]]
    cost = cost_and_latency(runs, prices)["cost"]
    total = 0.001 + 0.01 + 0.001
    saved = (2 * 400 * 0.10 + 400 * 7.0) / 1e6
    assert cost["per_10k_tickets_usd"] == pytest.approx(total / 3 * 10_000)
    assert cost["per_10k_tickets_without_retrieval_usd"] == pytest.approx((total - saved) / 3 * 10_000)
    assert cost["retrieved_tokens_per_ticket"] == pytest.approx(1_200 / 3)

    plain = ModelCall("fast", HAIKU, "answered", 1, TokenUsage(input_tokens=500), 0.0007)
    off = cost_and_latency([[outcome(plain), outcome(plain)]], prices)["cost"]
    assert off["per_10k_tickets_without_retrieval_usd"] == off["per_10k_tickets_usd"]
    assert off["retrieved_tokens_per_ticket"] == 0


def test_the_cost_line_names_the_cost_without_retrieved_examples_only_when_some_were_sent() -> None:
    on = {
        "per_10k_tickets_usd": 3.5,
        "per_10k_tickets_without_retrieval_usd": 2.25,
        "retrieved_tokens_per_ticket": 812.4,
    }
    assert (
        cost_per_10k(on)
        == "$3.50 (without retrieved examples: $2.25; 812 retrieved-example tokens per ticket)"
    )
    off = {
        "per_10k_tickets_usd": 3.5,
        "per_10k_tickets_without_retrieval_usd": 3.5,
        "retrieved_tokens_per_ticket": 0,
    }
    assert cost_per_10k(off) == "$3.50"


# --- the metric -------------------------------------------------------------------------------------


def attempt(model: str, usage: TokenUsage) -> TierAttempt:
    return TierAttempt(tier="fast", model=model, outcome="answered", usage=usage, cost_usd=0.001)


def test_retrieved_tokens_are_their_own_counter_and_not_a_kind_of_llm_tokens() -> None:
    metrics = Metrics()
    usage = TokenUsage(input_tokens=900, retrieved_tokens=600, output_tokens=40)
    metrics.record_tiers(PipelineResult(None, attempts=[attempt(HAIKU, usage), attempt(HAIKU, usage)]))
    metrics.record_tiers(PipelineResult(None, attempts=[attempt(SONNET, TokenUsage(input_tokens=700))]))
    text = metrics.exposition().decode()
    assert f'ticket_router_llm_retrieved_tokens_total{{model="{HAIKU}"}} 1200.0' in text
    assert f'ticket_router_llm_retrieved_tokens_total{{model="{SONNET}"}}' not in text, (
        "no retrieval, no sample"
    )
    assert f'ticket_router_llm_tokens_total{{kind="input",model="{HAIKU}"}} 1800.0' in text
    assert 'kind="retrieved"' not in text, "summing llm_tokens' kinds must keep giving the billed total"


# --- a Claude tier against the fake Messages API ----------------------------------------------------


async def test_a_tier_records_the_estimated_tokens_of_the_examples_it_sent(api: Harness) -> None:
    """The estimate uses the model's tokenizer factor, as the fake does for its bill: the input of
    the same ticket with and without the examples differs by the estimate (give or take rounding)."""
    similar = [(EXAMPLES[1], 0.8), (EXAMPLES[6], 0.5)]

    def retriever(event: TicketEvent) -> list[tuple[Example, float]]:
        return similar

    tier = build_claude_tier("fast", api.settings(), TAXONOMY, examples=EXAMPLES, retriever=retriever)
    api.tiers.append(tier)
    plain = api.tier("fast")
    event = ticket("T-cost")
    with_examples = (await tier.classify(event)).attempt.usage
    without = (await plain.classify(event)).attempt.usage
    expected = estimate_tokens(similar_examples_section(similar), tokenizer_factor(HAIKU))
    assert with_examples.retrieved_tokens == expected > 0
    assert without.retrieved_tokens == 0
    assert abs(with_examples.input_tokens - without.input_tokens - expected) <= 2


# --- ticket-tools evaluate with RETRIEVED_EXAMPLES on and off ----------------------------------------


def small_labeled(tmp_path: Path, rows: int = 12) -> Path:
    path = tmp_path / "labeled.jsonl"
    lines = [line for line in EVAL_LABELED.read_bytes().splitlines() if line.strip()]
    path.write_bytes(b"\n".join(lines[:rows]) + b"\n")
    return path


def test_evaluate_shows_the_cost_per_10k_tickets_with_and_without_retrieved_examples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from producer_tools.fake_api import run_in_thread

    labeled = small_labeled(tmp_path)
    reports = {}
    with run_in_thread() as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-evaluate-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        for k in ("5", "0"):
            monkeypatch.setenv("RETRIEVED_EXAMPLES", k)
            out_json, out_html = tmp_path / f"k{k}.json", tmp_path / f"k{k}.html"
            args = ("--tiers", "fast,strong", "--retrieval-k", "0", "--json", out_json, "--html", out_html)
            assert run_evaluate(labeled, *args) == 0
            reports[k] = (read_report(out_json)["cost"], capsys.readouterr().out, out_html.read_text("utf-8"))

    cost, printed, page = reports["5"]
    assert cost["retrieved_tokens_per_ticket"] > 0
    assert 0 < cost["per_10k_tickets_without_retrieval_usd"] < cost["per_10k_tickets_usd"]
    for shown in (" ".join(printed.split()), page):
        assert f"without retrieved examples: ${cost['per_10k_tickets_without_retrieval_usd']:.2f}" in shown
        assert f"{cost['retrieved_tokens_per_ticket']:,.0f} retrieved-example tokens per ticket" in shown

    cost, printed, page = reports["0"]
    assert cost["retrieved_tokens_per_ticket"] == 0
    assert cost["per_10k_tickets_without_retrieval_usd"] == cost["per_10k_tickets_usd"] > 0
    assert "without retrieved examples" not in printed and "without retrieved examples" not in page
