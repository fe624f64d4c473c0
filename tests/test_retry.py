"""Pure retry, cost and reply decisions of the Claude tiers (no network)."""

from __future__ import annotations

from datetime import UTC, datetime

import anthropic
import httpx2
import pytest

from consumer.classify.claude import (
    Price,
    classification_from_reply,
    cost_usd,
    failure_from_exception,
    price_for,
)
from consumer.classify.prompt import AnswerError
from consumer.classify.retry import (
    RETRY_REASONS,
    CallFailure,
    RetryPolicy,
    backoff_s,
    failure_status_label,
    is_spend_limit,
    parse_retry_after,
    retry_reason,
    retry_wait_s,
    stop_reason,
)
from consumer.config import DEFAULT_PRICES, ConfigError
from consumer.taxonomy import load_taxonomy
from schemas.events import TokenUsage

POLICY = RetryPolicy(max_attempts=4, initial_s=0.5, max_s=8.0)
SECRET = "sk-ant-api03-SECRETSECRETSECRET"


def status(code: int, message: str = "", **fields: object) -> CallFailure:
    return CallFailure("status", status=code, message=message, **fields)  # type: ignore[arg-type]


# -- what is retried --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (status(429, "This request would exceed your organization's rate limit"), "rate_limit"),
        (status(529, "Overloaded"), "overloaded"),
        (status(500), "server_error"),
        (status(502), "server_error"),
        (status(503), "server_error"),
        (status(504), "server_error"),
        (status(408), "timeout"),
        (CallFailure("timeout"), "timeout"),
        (CallFailure("connection"), "connection"),
    ],
)
def test_transient_failures_are_retried(failure: CallFailure, reason: str) -> None:
    assert retry_reason(failure) == reason


@pytest.mark.parametrize("code", [400, 401, 403, 404, 413, 422])
def test_request_errors_fail_fast(code: int) -> None:
    assert retry_reason(status(code)) is None


@pytest.mark.parametrize(
    "failure",
    [
        status(429, "You have reached your specified workspace API usage limits."),
        status(429, "Your credit balance is too low to access the Anthropic API."),
        status(429, "limit", error_code="enforced_spend_limit_reached"),
    ],
)
def test_spend_limit_429_fails_fast(failure: CallFailure) -> None:
    assert is_spend_limit(failure)
    assert retry_reason(failure) is None
    assert failure_status_label(failure) == "spend_limit"


def test_server_can_forbid_a_retry() -> None:
    assert retry_reason(status(529, should_retry=False)) is None
    assert retry_reason(status(529, should_retry=True)) == "overloaded"


def test_request_status_labels() -> None:
    assert failure_status_label(status(429, "rate limit")) == "429"
    assert failure_status_label(CallFailure("timeout")) == "timeout"
    assert failure_status_label(CallFailure("connection")) == "connection"


# -- how long to wait -------------------------------------------------------------------------------


def test_retry_after_header_forms() -> None:
    now = datetime(2026, 11, 20, 9, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Fri, 20 Nov 2026 09:00:30 GMT"}, now) == 30.0
    assert parse_retry_after({"retry-after": "Fri, 20 Nov 2026 08:00:00 GMT"}, now) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-3"}) is None
    assert parse_retry_after({}) is None


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    assert backoff_s(1, POLICY, 0.0) == 0.25
    assert backoff_s(1, POLICY, 1.0) == 0.5
    assert backoff_s(2, POLICY, 0.0) == 0.5
    assert backoff_s(3, POLICY, 0.5) == pytest.approx(1.5)
    assert backoff_s(10, POLICY, 1.0) == 8.0
    assert backoff_s(10, POLICY, 0.0) == 4.0
    waits = [backoff_s(3, POLICY, j / 10) for j in range(10)]
    assert len(set(waits)) == 10, "jitter spreads concurrent retries"


def test_wait_is_at_least_the_servers_retry_after() -> None:
    limited = status(429, "rate limit", retry_after_s=3.0)
    assert retry_wait_s(1, limited, POLICY, 0.5) == 3.0
    assert retry_wait_s(1, status(529), POLICY, 0.5) == pytest.approx(0.375)
    long_backoff = status(429, "rate limit", retry_after_s=0.1)
    assert retry_wait_s(4, long_backoff, POLICY, 1.0) == 4.0


def test_stop_after_max_attempts_or_when_the_wait_overruns_the_deadline() -> None:
    assert stop_reason(1, 0.5, POLICY, None) is None
    assert stop_reason(3, 0.5, POLICY, 10.0) is None
    assert "gave up after 4 attempts" in str(stop_reason(4, 0.5, POLICY, 10.0))
    overrun = stop_reason(1, 5.0, POLICY, 2.0)
    assert overrun is not None and "ticket deadline" in overrun


# -- SDK errors → facts, never the key ---------------------------------------------------------------


def _request() -> httpx2.Request:
    return httpx2.Request("POST", "http://fake/v1/messages", headers={"x-api-key": SECRET})


def _status_error(code: int, body: dict[str, object], headers: dict[str, str]) -> anthropic.APIStatusError:
    response = httpx2.Response(code, headers=headers, json=body, request=_request())
    return anthropic.APIStatusError(f"Error code: {code}", response=response, body=body)


def test_sdk_errors_become_call_failures() -> None:
    spend = _status_error(
        429,
        {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": "You have reached your specified workspace API usage limits.",
                "details": {"error_code": "enforced_spend_limit_reached"},
            },
        },
        {"x-should-retry": "false"},
    )
    failure = failure_from_exception(spend)
    assert failure is not None
    assert (failure.status, failure.error_type, failure.should_retry) == (429, "rate_limit_error", False)
    assert failure.error_code == "enforced_spend_limit_reached"
    assert retry_reason(failure) is None

    limited = _status_error(
        429,
        {"type": "error", "error": {"type": "rate_limit_error", "message": "rate limit"}},
        {"retry-after": "2"},
    )
    assert failure_from_exception(limited) == CallFailure(
        "status", status=429, error_type="rate_limit_error", message="rate limit", retry_after_s=2.0
    )
    assert failure_from_exception(anthropic.APITimeoutError(request=_request())) == CallFailure(
        "timeout", message="request timed out"
    )
    assert failure_from_exception(anthropic.APIConnectionError(request=_request())) == CallFailure(
        "connection", message="connection error"
    )
    assert failure_from_exception(ValueError("x")) is None


def test_a_key_echoed_by_the_server_is_masked() -> None:
    echoed = _status_error(
        401, {"type": "error", "error": {"type": "authentication_error", "message": f"bad key {SECRET}"}}, {}
    )
    failure = failure_from_exception(echoed)
    assert failure is not None
    assert SECRET not in failure.describe()
    assert SECRET not in repr(failure)


# -- replies and cost -------------------------------------------------------------------------------


def test_refused_or_cut_replies_are_invalid_output_with_their_own_status() -> None:
    taxonomy = load_taxonomy()
    with pytest.raises(AnswerError, match="refused") as refused:
        classification_from_reply("refusal", ['{"team": '], taxonomy)
    assert refused.value.status == "refusal"
    for reason in ("max_tokens", "model_context_window_exceeded"):
        with pytest.raises(AnswerError, match="cut off") as cut:
            classification_from_reply(reason, ['{"team": '], taxonomy)
        assert cut.value.status == "cut_off"
    with pytest.raises(AnswerError, match="no text") as empty:
        classification_from_reply("end_turn", [], taxonomy)
    assert empty.value.status == "invalid_output"


def test_cost_matches_hand_computed_figures() -> None:
    haiku = price_for("claude-haiku-4-5", DEFAULT_PRICES)
    sonnet = price_for("claude-sonnet-4-6", DEFAULT_PRICES)
    first_call = TokenUsage(input_tokens=1_000, output_tokens=200, cache_creation_input_tokens=5_000)
    # 1000 x $1 + 200 x $5 + 5000 x $1.25 = $8,250 per million calls' worth = $0.00825
    assert cost_usd(first_call, haiku) == pytest.approx(0.00825)
    cached_call = TokenUsage(input_tokens=1_000, output_tokens=200, cache_read_input_tokens=5_000)
    # 1000 x $3 + 200 x $15 + 5000 x $0.30 = $7,500 per million = $0.0075
    assert cost_usd(cached_call, sonnet) == pytest.approx(0.0075)
    # 1-hour cache writes cost 2x input: 5000 x $2 = $0.01
    assert cost_usd(TokenUsage(cache_creation_input_tokens=5_000), haiku, 5_000) == pytest.approx(0.01)


def test_today_s_models_cost_what_the_price_list_says() -> None:
    haiku = price_for("claude-haiku-5-5", DEFAULT_PRICES)
    sonnet = price_for("claude-sonnet-5-5", DEFAULT_PRICES)
    call = TokenUsage(input_tokens=1_000, output_tokens=200, cache_read_input_tokens=5_000)
    # 1000 x $0.10 + 200 x $0.50 + 5000 x $0.01 = $250 per million = $0.00025
    assert cost_usd(call, haiku) == pytest.approx(0.00025)
    # 1000 x $2 + 200 x $10 + 5000 x $0.10 = $4,500 per million = $0.0045
    assert cost_usd(call, sonnet) == pytest.approx(0.0045)
    # Sonnet 5.5: 1-hour writes $4, 5-minute writes $2.50
    writes = TokenUsage(cache_creation_input_tokens=10_000)
    assert cost_usd(writes, sonnet, 4_000) == pytest.approx((4_000 * 4.0 + 6_000 * 2.5) / 1e6)


def test_haiku_5_5_bills_every_token_higher_above_100k_prompt_tokens() -> None:
    haiku = price_for("claude-haiku-5-5", DEFAULT_PRICES)
    at_limit = TokenUsage(input_tokens=40_000, cache_read_input_tokens=60_000, output_tokens=1_000)
    # exactly 100,000 prompt tokens: the base rates
    assert cost_usd(at_limit, haiku) == pytest.approx((40_000 * 0.10 + 60_000 * 0.01 + 1_000 * 0.50) / 1e6)
    above = TokenUsage(
        input_tokens=40_001,
        cache_read_input_tokens=50_000,
        cache_creation_input_tokens=10_000,
        output_tokens=1_000,
    )
    # one more token: input, cache read, cache write and output all at the long-prompt rates
    expected = (40_001 * 0.50 + 50_000 * 0.05 + 10_000 * 0.625 + 1_000 * 2.50) / 1e6
    assert cost_usd(above, haiku) == pytest.approx(expected)
    # other models have no long-prompt rates
    sonnet = price_for("claude-sonnet-5-5", DEFAULT_PRICES)
    assert cost_usd(above, sonnet) == pytest.approx(
        (40_001 * 2.0 + 50_000 * 0.10 + 10_000 * 2.50 + 1_000 * 10.0) / 1e6
    )


def test_dated_ids_are_priced_by_their_alias() -> None:
    assert price_for("claude-haiku-4-5-20251001", DEFAULT_PRICES) == price_for(
        "claude-haiku-4-5", DEFAULT_PRICES
    )


def test_prices_need_every_kind() -> None:
    assert price_for("claude-haiku-4-5", DEFAULT_PRICES) == Price(1.0, 5.0, 1.25, 0.10, 2.0)
    with pytest.raises(ConfigError, match="no price"):
        price_for("claude-opus-4-5", DEFAULT_PRICES)
    with pytest.raises(ConfigError, match="no price"):
        price_for("claude-sonnet-4-5", DEFAULT_PRICES)  # retired: no longer priced
    with pytest.raises(ConfigError, match="lacks 'cache_read'"):
        price_for("m", {"m": {"input": 1.0, "output": 1.0, "cache_write": 1.0}})


def test_retry_reasons_name_every_reason_a_retry_is_counted_under() -> None:
    failures = [CallFailure("status", status) for status in range(400, 600)]
    failures += [CallFailure("timeout"), CallFailure("connection")]
    reasons = {retry_reason(failure) for failure in failures} - {None}
    assert reasons == set(RETRY_REASONS)
