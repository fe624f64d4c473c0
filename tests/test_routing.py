"""Routing is a pure function of the labels; this table covers every default rule and their order."""

from __future__ import annotations

import pytest

from consumer.routing import reachable_queues, reachable_routes, route
from consumer.taxonomy import load_taxonomy

TAXONOMY = load_taxonomy()


@pytest.mark.parametrize(
    ("team", "urgency", "sentiment", "queue", "rule"),
    [
        # rule 1: critical + security, whatever the sentiment
        ("security", "critical", "neutral", "urgent-security", "critical-security"),
        ("security", "critical", "angry", "urgent-security", "critical-security"),
        # rule 2: critical for any other team; wins over angry + high because urgency is not high
        ("billing", "critical", "angry", "critical-billing", "critical"),
        ("infrastructure", "critical", "positive", "critical-infrastructure", "critical"),
        # rule 3: angry + high, including security (rule 1 needs critical)
        ("product", "high", "angry", "priority-product", "angry-and-high"),
        ("security", "high", "angry", "priority-security", "angry-and-high"),
        # rule 4: everything else by team and urgency
        ("product", "high", "frustrated", "product-high", "default"),
        ("security", "high", "neutral", "security-high", "default"),
        ("onboarding", "normal", "angry", "onboarding-normal", "default"),
        ("general", "low", "positive", "general-low", "default"),
    ],
)
def test_default_rules_in_order(team: str, urgency: str, sentiment: str, queue: str, rule: str) -> None:
    labels = {"team": team, "urgency": urgency, "sentiment": sentiment, "ticket_type": "bug_report"}
    decision = route(TAXONOMY.routing, labels)
    assert (decision.queue, decision.rule) == (queue, rule)


def test_every_label_combination_routes_to_a_reachable_queue() -> None:
    queues = set(reachable_queues(TAXONOMY))
    for combo in TAXONOMY.label_combinations(list(TAXONOMY.axes)):
        assert route(TAXONOMY.routing, combo).queue in queues


def test_reachable_queues_exclude_queues_that_earlier_rules_preempt() -> None:
    queues = reachable_queues(TAXONOMY)
    assert "urgent-security" in queues
    assert "critical-security" not in queues  # rule 1 always takes critical security tickets
    assert "billing-critical" not in queues  # rule 2 always takes critical tickets
    assert len(queues) == 1 + 5 + 6 + 6 * 3


def test_a_label_list_in_when_matches_any_of_them() -> None:
    from consumer.taxonomy import parse_taxonomy

    taxonomy = parse_taxonomy(
        {
            "axes": {"team": {"labels": {"a": "A", "b": "B", "c": "C"}}},
            "routing": [
                {"name": "ab", "when": {"team": ["a", "b"]}, "queue": "first"},
                {"name": "rest", "queue": "q-{team}"},
            ],
        }
    )
    assert route(taxonomy.routing, {"team": "b"}).queue == "first"
    assert route(taxonomy.routing, {"team": "c"}).queue == "q-c"
    assert reachable_queues(taxonomy) == ["first", "q-c"]


def test_reachable_routes_are_exactly_the_queue_and_rule_pairs_routing_produces() -> None:
    taxonomy = load_taxonomy()
    every = {
        (decision.queue, decision.rule)
        for decision in (
            route(taxonomy.routing, combo) for combo in taxonomy.label_combinations(list(taxonomy.axes))
        )
    }
    assert {(d.queue, d.rule) for d in reachable_routes(taxonomy)} == every
    assert ("urgent-security", "critical-security") in every and ("security-critical", "default") not in every
