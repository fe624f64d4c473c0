"""Pure decisions of the tier pipeline: thresholds, which tiers a ticket visits, the final outcome."""

from __future__ import annotations

import asyncio
from typing import Any

from consumer.classify.base import TierAnswer, axes_below_threshold
from consumer.classify.pipeline import Pipeline, conclude, tiers_for_ticket
from consumer.taxonomy import parse_taxonomy
from schemas.events import AxisPrediction, Classification, ErrorKind, TicketEvent, TierAttempt

THRESHOLDS = {"team": 0.75, "urgency": 0.8}


def classification(team: float, urgency: float | None) -> Classification:
    axes = {"team": AxisPrediction(label="billing", confidence=team)}
    if urgency is not None:
        axes["urgency"] = AxisPrediction(label="high", confidence=urgency)
    return Classification(axes=axes)


def test_threshold_is_inclusive_and_per_axis() -> None:
    assert axes_below_threshold(classification(0.75, 0.8), THRESHOLDS) == []
    assert axes_below_threshold(classification(0.74, 0.95), THRESHOLDS) == ["team"]
    assert axes_below_threshold(classification(0.9, 0.79), THRESHOLDS) == ["urgency"]


def test_a_missing_axis_counts_as_below() -> None:
    assert axes_below_threshold(classification(0.9, None), THRESHOLDS) == ["urgency"]


def test_non_english_tickets_start_at_the_strong_tier() -> None:
    assert tiers_for_ticket(["local", "fast", "strong"], is_english=False, non_english_to_strong=True) == [
        "strong"
    ]
    assert tiers_for_ticket(["local", "fast", "strong"], is_english=True, non_english_to_strong=True) == [
        "local",
        "fast",
        "strong",
    ]
    assert tiers_for_ticket(["fast", "strong"], is_english=False, non_english_to_strong=False) == [
        "fast",
        "strong",
    ]
    assert tiers_for_ticket(["local"], is_english=False, non_english_to_strong=True) == ["local"]


def test_low_confidence_goes_to_triage_unless_configured_to_route_flagged() -> None:
    answer = classification(0.5, 0.5)
    assert conclude(answer, ErrorKind.LOW_CONFIDENCE, "", "triage") == (ErrorKind.LOW_CONFIDENCE, False)
    assert conclude(answer, ErrorKind.LOW_CONFIDENCE, "", "route_flagged") == (None, True)


def test_an_outage_on_the_last_tier_is_never_routed_even_with_an_earlier_answer() -> None:
    answer = classification(0.5, 0.5)
    assert conclude(answer, ErrorKind.LLM_UNAVAILABLE, "", "route_flagged") == (
        ErrorKind.LLM_UNAVAILABLE,
        False,
    )
    assert conclude(None, ErrorKind.LOW_CONFIDENCE, "", "route_flagged") == (ErrorKind.LOW_CONFIDENCE, False)


class FixedTier:
    """A tier that always gives the same answer: the pipeline's threshold choice is what is tested."""

    def __init__(self, name: str, answer: Classification) -> None:
        self.name, self.model, self._answer = name, f"{name}-model", answer

    async def classify(self, ticket: TicketEvent) -> TierAnswer:
        return TierAnswer(self._answer, TierAttempt(tier=self.name, model=self.model, outcome="answered"))

    async def close(self) -> None:
        return None


TWO_AXES: dict[str, Any] = {
    "name": "t",
    "axes": {
        "team": {"threshold": 0.75, "local_threshold": 0.6, "labels": {"billing": "Money.", "bug": "Code."}},
        "urgency": {"threshold": 0.8, "labels": {"high": "Now.", "low": "Later."}},
    },
    "routing": [{"name": "all", "queue": "{team}-{urgency}"}],
}


def test_the_local_tier_is_held_to_its_own_thresholds() -> None:
    taxonomy = parse_taxonomy(TWO_AXES)
    assert taxonomy.thresholds("local") == {"team": 0.6, "urgency": 0.8}
    assert taxonomy.thresholds("fast") == taxonomy.thresholds() == {"team": 0.75, "urgency": 0.8}
    answer = classification(0.65, 0.85)  # clears the local tier's 0.6, not the Claude tiers' 0.75
    ticket = TicketEvent.model_validate(
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

    def outcomes(order: list[str]) -> list[str]:
        tiers = [FixedTier(name, answer) for name in order]
        local = {"local": taxonomy.thresholds("local")}
        result = asyncio.run(Pipeline(tiers, taxonomy.thresholds(), tier_thresholds=local).classify(ticket))
        return [attempt.outcome for attempt in result.attempts]

    assert outcomes(["local", "fast"]) == ["answered"]
    assert outcomes(["fast", "strong"]) == ["low_confidence", "low_confidence"]


def test_the_local_threshold_is_part_of_the_fingerprint_only_when_set() -> None:
    with_local = parse_taxonomy(TWO_AXES)
    axes = {
        **TWO_AXES["axes"],
        "team": {k: v for k, v in TWO_AXES["axes"]["team"].items() if k != "local_threshold"},
    }
    without = parse_taxonomy({**TWO_AXES, "axes": axes})
    assert with_local.fingerprint() != without.fingerprint()
    dumped = without.model_dump(mode="json")
    assert dumped["axes"]["team"]["local_threshold"] is None  # present in the model, left out of the hash
