"""The spend guard: window accounting and the skip decision as plain functions, the pipeline with
stand-in tiers, then a router on the real broker whose tiny budget the fake Messages API spends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson
import pytest

from consumer.classify.base import TierAnswer
from consumer.classify.budget import (
    DAY_S,
    HOUR_S,
    SpendGuard,
    Window,
    WindowState,
    add_spend,
    budget_windows,
    exhausted_windows,
    is_exhausted,
    reopens_at,
    rolled,
    window_start,
)
from consumer.classify.pipeline import Pipeline, skipped_for_budget
from consumer.config import ConfigError, load_settings
from consumer.service import spend_guard
from producer_tools.fake_api import Scenario, run_in_thread
from producer_tools.replay import DEFAULT_KINDS
from schemas.codec import decode
from schemas.events import ErrorKind, RoutedTicket, TicketEvent, TierAttempt, TriageRecord
from tests.kafka_helpers import OutcomeCounter, create_topics, produce, router_settings, running_router
from tests.test_end_to_end import ticket_event
from tests.test_pipeline_decisions import THRESHOLDS, classification

NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()
HOUR = Window("hour", HOUR_S, 1.0)
DAY = Window("day", DAY_S, 5.0)


# -- pure: windows ----------------------------------------------------------------------------------


def test_windows_start_on_the_utc_clock() -> None:
    assert window_start(NOON + 59 * 60 + 59, HOUR_S) == NOON
    assert window_start(NOON + 3_600, HOUR_S) == NOON + 3_600
    midnight = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
    assert window_start(NOON, DAY_S) == midnight


def test_spend_adds_up_within_a_window_and_starts_again_in_the_next() -> None:
    state = WindowState(start=NOON)
    state = add_spend(state, HOUR, NOON + 10, 0.6)
    state = add_spend(state, HOUR, NOON + 20, 0.4)
    assert state == WindowState(start=NOON, spent_usd=1.0)
    assert is_exhausted(state, HOUR, NOON + 30), "the budget reached is the budget spent"
    assert not is_exhausted(state, HOUR, NOON + HOUR_S), "the next hour starts empty"
    assert rolled(state, HOUR, NOON + HOUR_S + 5) == WindowState(start=NOON + HOUR_S)
    assert add_spend(state, HOUR, NOON + HOUR_S, 0.25) == WindowState(NOON + HOUR_S, 0.25)
    assert add_spend(state, HOUR, NOON, -3.0) == state, "a negative cost never gives budget back"


def test_claude_is_allowed_only_while_no_window_is_spent_and_reopens_when_the_last_one_rolls() -> None:
    windows = {"hour": HOUR, "day": DAY}
    states = {"hour": WindowState(NOON, 0.2), "day": WindowState(window_start(NOON, DAY_S), 5.0)}
    assert exhausted_windows(states, windows, NOON + 60) == ["day"]
    midnight = window_start(NOON, DAY_S) + DAY_S
    assert reopens_at(states, windows, NOON + 60) == midnight
    states["hour"] = WindowState(NOON, 1.5)
    assert exhausted_windows(states, windows, NOON + 60) == ["hour", "day"]
    assert reopens_at(states, windows, NOON + 60) == midnight, "the later of the two"
    assert exhausted_windows(states, windows, midnight) == []
    assert reopens_at(states, windows, midnight) is None


def test_each_replica_enforces_its_share_and_unset_means_no_window() -> None:
    assert budget_windows(None, None) == {}
    assert budget_windows(3.0, None, replicas=3) == {"hour": Window("hour", HOUR_S, 1.0)}
    assert budget_windows(None, 10.0, replicas=4) == {"day": Window("day", DAY_S, 2.5)}


def test_only_the_claude_tiers_are_skipped() -> None:
    assert skipped_for_budget("fast", budget_open=False)
    assert skipped_for_budget("strong", budget_open=False)
    assert not skipped_for_budget("local", budget_open=False)
    assert not skipped_for_budget("fast", budget_open=True)


def test_the_guard_follows_its_clock() -> None:
    now = [NOON]
    guard = SpendGuard({"hour": HOUR}, clock=lambda: now[0])
    guard.record(0.7)
    assert guard.allows() and guard.spent("hour") == pytest.approx(0.7)
    guard.record(0.31)
    assert not guard.allows() and guard.exhausted("hour")
    assert guard.describe() == (
        "LLM budget spent (hour $1.0100 of $1.0000); Claude tiers skipped until 2026-11-30 13:00 UTC"
    )
    now[0] = NOON + HOUR_S
    assert guard.allows() and guard.spent("hour") == 0.0, "open again when the hour rolls, with no call"


def test_budget_settings_are_checked_and_a_guard_needs_a_claude_tier() -> None:
    with pytest.raises(ConfigError, match=r"^LLM_BUDGET_USD_PER_DAY: Input should be greater than 0"):
        load_settings(llm_budget_usd_per_day="-1")
    with pytest.raises(ConfigError, match=r"^LLM_BUDGET_REPLICAS: "):
        load_settings(llm_budget_replicas="0")
    assert spend_guard(load_settings(tiers="local", llm_budget_usd_per_hour="1")) is None
    guard = spend_guard(
        load_settings(
            tiers="fast", anthropic_api_key="sk-ant-x", llm_budget_usd_per_hour="6", llm_budget_replicas="3"
        )
    )
    assert guard is not None and guard.windows == {"hour": Window("hour", HOUR_S, 2.0)}


def test_replay_takes_budget_exhausted_records_by_default() -> None:
    assert ErrorKind.BUDGET_EXHAUSTED in DEFAULT_KINDS


# -- the pipeline, with stand-in tiers ----------------------------------------------------------------


class CostlyTier:
    """A tier whose every answer costs ``cost_usd``; counts its calls."""

    def __init__(self, name: str, confidence: float, cost_usd: float) -> None:
        self.name, self.model = name, f"{name}-model"
        self.confidence, self.cost_usd, self.calls = confidence, cost_usd, 0

    async def classify(self, ticket: TicketEvent) -> TierAnswer:
        self.calls += 1
        attempt = TierAttempt(tier=self.name, model=self.model, outcome="answered", cost_usd=self.cost_usd)
        return TierAnswer(classification(self.confidence, self.confidence), attempt)

    async def close(self) -> None:
        return None


TICKET = TicketEvent.model_validate(
    {
        "event_id": "E",
        "event_type": "ticket.created",
        "ticket_id": "T",
        "body": "b",
        "account_tier": "pro",
        "customer_id": "C",
        "channel": "web",
        "created_at": "2026-11-30T09:00:00Z",
    }
)


def test_once_spent_the_local_tier_answers_and_the_rest_go_to_triage_as_budget_exhausted() -> None:
    now = [NOON]
    guard = SpendGuard({"hour": HOUR}, clock=lambda: now[0])
    local_sure, local_unsure = CostlyTier("local", 0.99, 0.0), CostlyTier("local", 0.1, 0.0)
    fast = CostlyTier("fast", 0.99, 0.6)

    def run(local: CostlyTier) -> tuple[ErrorKind | None, list[str], str]:
        pipeline = Pipeline([local, fast], THRESHOLDS, budget=guard)
        result = asyncio.run(pipeline.classify(TICKET))
        return result.error_kind, result.tiers_tried, result.error_message

    assert run(local_unsure)[:2] == (None, ["local", "fast"]), "$0.60 of $1: Claude answers"
    assert run(local_unsure)[:2] == (None, ["local", "fast"]), "$1.20: the call in progress finishes"
    assert fast.calls == 2 and not guard.allows()
    assert run(local_sure)[:2] == (None, ["local"]), "the local tier still routes what it is sure of"
    kind, tried, message = run(local_unsure)
    assert (kind, tried) == (ErrorKind.BUDGET_EXHAUSTED, ["local"]) and fast.calls == 2
    assert message == "fast: " + guard.describe()
    now[0] = NOON + HOUR_S
    assert run(local_unsure)[:2] == (None, ["local", "fast"]) and fast.calls == 3, "the next hour"


def test_failed_calls_that_were_billed_count_too() -> None:
    from consumer.classify.base import TierUnavailable

    class Failing(CostlyTier):
        async def classify(self, ticket: TicketEvent) -> TierAnswer:
            self.calls += 1
            raise TierUnavailable("down", attempts=2, cost_usd=0.4)

    guard = SpendGuard({"hour": HOUR}, clock=lambda: NOON)
    asyncio.run(Pipeline([Failing("fast", 0.9, 0.0)], THRESHOLDS, budget=guard).classify(TICKET))
    assert guard.spent("hour") == pytest.approx(0.4)


# -- a router against the fake Messages API -----------------------------------------------------------


async def test_a_tiny_budget_routes_the_first_ticket_and_parks_the_rest_with_metrics(bootstrap: str) -> None:
    settings = router_settings(
        bootstrap,
        tiers="fast",
        anthropic_api_key="sk-ant-fake-budget-test",
        llm_budget_usd_per_hour="0.00001",  # one Haiku call costs more than this
        llm_budget_usd_per_day="100",
        max_in_flight=1,  # one ticket at a time: the first call's cost is counted before the next
    )
    create_topics(bootstrap, [settings.input_topic])
    events = [ticket_event(n, f"Invoice {n} was charged twice this month.") for n in range(1, 4)]
    produce(bootstrap, settings.input_topic, [(b"T-budget", orjson.dumps(e)) for e in events])
    counter = OutcomeCounter()
    with run_in_thread(Scenario()) as api:
        settings = settings.model_copy(update={"anthropic_base_url": api.base_url})
        async with running_router(settings, extra_hooks=[counter.hook]) as running:
            await counter.wait_for(len(events))
            scrape = running.metrics.exposition().decode()
            spent = running.metrics.registry.get_sample_value(
                "ticket_router_llm_budget_spent_usd", {"window": "hour"}
            )
        calls = len(api.requests())

    kinds = [outcome.kind for outcome in counter.outcomes]
    assert kinds == ["routed", "triaged", "triaged"], kinds
    first = counter.outcomes[0]
    assert first.value is not None and decode(RoutedTicket, first.value).model_used == settings.fast_model
    for outcome in counter.outcomes[1:]:
        assert outcome.value is not None
        record = decode(TriageRecord, outcome.value)
        assert record.error_kind is ErrorKind.BUDGET_EXHAUSTED
        assert record.message.startswith("fast: LLM budget spent (hour $"), record.message
    assert calls == 1, "no call after the budget was spent"
    assert spent is not None and spent > 0.00001
    assert 'ticket_router_llm_budget_exhausted{window="hour"} 1.0' in scrape
    assert 'ticket_router_llm_budget_exhausted{window="day"} 0.0' in scrape
    assert 'ticket_router_llm_budget_limit_usd{window="hour"} 1e-05' in scrape
    assert 'ticket_router_tickets_triaged_total{error_kind="budget_exhausted"} 2.0' in scrape
