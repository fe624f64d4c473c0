"""Pure decisions of the tier pipeline: thresholds, which tiers a ticket visits, the final outcome."""

from __future__ import annotations

from consumer.classify.base import axes_below_threshold
from consumer.classify.pipeline import conclude, tiers_for_ticket
from schemas.events import AxisPrediction, Classification, ErrorKind

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
