"""The pure rules of ``ticket-tools backfill``: custom ids, batching, next steps, state, accounting, spend."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from consumer.errors import UserError
from producer_tools.backfill_plan import (
    BODY_HEADROOM,
    REQUEST_OVERHEAD_BYTES,
    Conclude,
    Limits,
    Spend,
    Step,
    after_result,
    batch_price,
    custom_id_for,
    index_of,
    split_batches,
    tally,
    unaccounted,
)
from producer_tools.backfill_state import BackfillState, BatchEntry, TicketProgress, load_state, save_state
from producer_tools.fake_api.batches import CUSTOM_ID_PATTERN
from schemas.events import TierAttempt

TIERS = ["fast", "strong"]


@pytest.mark.parametrize("ticket_id", ["T-1", "ZD#4411/ü", "", "x" * 200, "a b\nc"])
def test_a_custom_id_fits_the_api_and_maps_back_to_its_position(ticket_id: str) -> None:
    custom_id = custom_id_for(12_345, ticket_id)
    assert re.match(CUSTOM_ID_PATTERN, custom_id)
    assert index_of(custom_id) == 12_345


def test_custom_ids_of_different_positions_differ_even_for_one_ticket() -> None:
    assert custom_id_for(1, "T-1") != custom_id_for(11, "T-1")


def test_a_foreign_custom_id_is_refused() -> None:
    with pytest.raises(ValueError, match="not a backfill custom_id"):
        index_of("request-7")


def test_twenty_thousand_requests_split_into_two_batches_at_ten_thousand() -> None:
    batches = split_batches([(index, 3_000) for index in range(20_000)], Limits(max_requests=10_000))
    assert [len(batch) for batch in batches] == [10_000, 10_000]
    assert batches[0][0] == 0 and batches[1][0] == 10_000


def test_batches_are_cut_below_the_byte_limit() -> None:
    limit = 10_000
    sizes = [(index, 1_000) for index in range(30)]
    batches = split_batches(sizes, Limits(max_bytes=limit))
    per_batch = int(limit * BODY_HEADROOM) // (1_000 + REQUEST_OVERHEAD_BYTES)
    assert all(len(batch) <= per_batch for batch in batches)
    assert sorted(index for batch in batches for index in batch) == list(range(30))


def test_one_request_over_the_byte_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="ticket 1 is 20000 bytes"):
        split_batches([(0, 10), (1, 20_000)], Limits(max_bytes=10_000))


@pytest.mark.parametrize(
    ("kind", "step", "action", "expected"),
    [
        ("confident", Step("fast"), "triage", Conclude("routed")),
        ("low_confidence", Step("fast"), "triage", Step("strong")),
        ("low_confidence", Step("strong"), "triage", Conclude("triaged", "low_confidence")),
        ("low_confidence", Step("strong"), "route_flagged", Conclude("routed", flagged=True)),
        ("failed", Step("fast"), "triage", Step("fast", 2)),
        ("failed", Step("fast", 2), "triage", Conclude("triaged", "llm_unavailable")),
        ("invalid", Step("strong"), "triage", Step("strong", 2)),
        ("invalid", Step("strong", 2), "triage", Conclude("triaged", "llm_invalid_output")),
    ],
)
def test_each_result_has_exactly_one_next_step(kind: str, step: Step, action: str, expected: object) -> None:
    assert after_result(kind, step, TIERS, action) == expected  # type: ignore[arg-type]


def test_a_non_english_ticket_that_started_on_strong_does_not_go_back_to_fast() -> None:
    assert after_result("low_confidence", Step("strong"), ["strong"], "triage") == Conclude(
        "triaged", "low_confidence"
    )


def test_the_state_round_trips_and_a_damaged_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert load_state(path) is None
    attempt = TierAttempt(tier="fast", model="m", outcome="low_confidence", attempts=1, latency_ms=0.0)
    state = BackfillState(source="s", fingerprint="f", total=3, batch_usd=0.5, live_usd=1.0)
    state.batches.append(BatchEntry(id="msgbatch_1", tier="fast", attempt=1, indices=[0, 1]))
    state.progress[1] = TicketProgress(tier="strong", attempt=1, history=[attempt])
    state.outcomes[0] = "routed"
    state.written_bytes["out.jsonl"] = 123
    save_state(path, state)
    loaded = load_state(path)
    assert loaded == state
    assert loaded is not None and loaded.in_flight() == {0, 1} and loaded.progress[1].step == Step("strong")
    path.write_text('{"version": 1, "source": 3}')
    with pytest.raises(UserError, match="not a backfill state file"):
        load_state(path)


def test_accounting_names_the_tickets_without_an_outcome() -> None:
    outcomes = {0: "routed", 2: "triaged", 3: "skipped"}
    assert unaccounted(5, outcomes) == [1, 4]
    assert tally(outcomes.values()) == {"routed": 1, "triaged": 1, "skipped": 1}


def test_the_batch_price_is_half_the_live_price() -> None:
    spend = Spend(batch_price(3.0), 3.0)
    assert (spend.batch_usd, spend.saved_usd, spend.saved_percent) == (1.5, 1.5, 50.0)
    assert Spend(0.0, 0.0).saved_percent == 0.0
