"""Routing: from a classification's labels to a queue topic. Pure functions over plain data.

The rules are the taxonomy's ordered list; the first rule whose every condition holds wins, and
the taxonomy guarantees the last rule matches everything, so every ticket gets a queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from consumer.taxonomy import TOPIC_PATTERN, RoutingRule, Taxonomy, TaxonomyError


@dataclass(frozen=True)
class RouteDecision:
    queue: str
    rule: str


def rule_matches(rule: RoutingRule, labels: Mapping[str, str]) -> bool:
    for axis in rule.when:
        accepted = rule.labels_for(axis)
        if accepted is not None and labels.get(axis) not in accepted:
            return False
    return True


def route(rules: list[RoutingRule], labels: Mapping[str, str]) -> RouteDecision:
    """The queue for ``labels`` (axis → label). Raises KeyError if a template names a missing axis."""
    for rule in rules:
        if rule_matches(rule, labels):
            return RouteDecision(queue=rule.queue.format_map(dict(labels)), rule=rule.name)
    raise LookupError("no routing rule matched; the taxonomy's last rule must match everything")


def reachable_queues(taxonomy: Taxonomy) -> list[str]:
    """Every queue some classification can be routed to, in a stable order.

    Enumerates label combinations of the axes the rules look at, which is exact (a queue that an
    earlier rule always pre-empts is not listed) and small for real taxonomies; the topics
    created at start-up are exactly these.
    """
    queues = sorted({decision.queue for decision in reachable_routes(taxonomy)})
    for queue in queues:
        if not TOPIC_PATTERN.match(queue):
            raise TaxonomyError(
                f"routing: queue {queue!r} is not a valid Kafka topic name "
                "(letters, digits, '.', '_', '-'; at most 249 characters)"
            )
    return queues


def reachable_routes(taxonomy: Taxonomy) -> list[RouteDecision]:
    """Every (queue, rule) pair some classification produces, in a stable order: the label values
    of ``tickets_routed`` that can ever exist, so they can be exported at zero from the start."""
    involved: list[str] = []
    for rule in taxonomy.routing:
        for axis in [*rule.when, *rule.template_fields()]:
            if axis not in involved:
                involved.append(axis)
    decisions = {route(taxonomy.routing, combo) for combo in taxonomy.label_combinations(involved)}
    return sorted(decisions, key=lambda decision: (decision.queue, decision.rule))
