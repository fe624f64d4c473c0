"""Turns pipeline outcomes into the report: a plain JSON-ready dict that every renderer reads.

One dict (not objects) because it is the contract of ``--json`` and both the terminal table and
the HTML page are drawn from it, so the three outputs cannot disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from consumer.classify.models import default_prices
from consumer.routing import route
from consumer.taxonomy import RoutingRule, Taxonomy
from producer_tools.evaluation import metrics
from producer_tools.evaluation.dataset import LabeledTicket
from producer_tools.evaluation.runner import AxisAnswer, ModelCall, TicketOutcome

if TYPE_CHECKING:
    from consumer.classify.claude import Price

TRIAGE_GROUP = "needs-human-triage"
TOP_CONFUSIONS = 10
LLM_TOKEN_KINDS = ("input", "cache_read", "cache_write", "output", "thinking")
MIN_GROUP_FOR_GAP = 5
"""Groups smaller than this are shown but never named the best or worst: too few to mean much."""
TOP_MISROUTES = 3
"""Per true queue, how many of the queues its misrouted tickets went to are listed."""
WORST_QUEUES_SHOWN = 5


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def axis_report(gold: Sequence[str], predicted: Sequence[str], known_labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, baselines, per-class figures and the confusion matrix of one axis."""
    labels = metrics.label_order(gold, predicted, known_labels)
    stats = metrics.per_class(gold, predicted, labels)
    matrix = metrics.confusion_matrix(gold, predicted, labels)
    return {
        "accuracy": metrics.accuracy(gold, predicted),
        "macro_f1": metrics.macro_f1(gold, predicted),
        "majority_baseline": metrics.majority_baseline(gold),
        "chance": 1 / len(known_labels) if known_labels else 0.0,
        "per_class": {
            label: {"precision": s.precision, "recall": s.recall, "f1": s.f1, "support": s.support}
            for label, s in stats.items()
        },
        "confusion": {"labels": labels, "matrix": matrix},
        "top_confusions": [
            {"true": true, "predicted": pred, "count": n}
            for true, pred, n in metrics.top_confusions(labels, matrix, TOP_CONFUSIONS)
        ],
    }


def correctness(
    items: Sequence[LabeledTicket], outcomes: Sequence[TicketOutcome], axes: Sequence[str]
) -> list[list[bool]]:
    """Per ticket, per axis: did the pipeline's label match the gold one."""
    return [
        [outcome.labels[axis] == item.gold[axis] for axis in axes]
        for item, outcome in zip(items, outcomes, strict=True)
    ]


def group_report(groups: Sequence[str], scores: Sequence[float]) -> dict[str, Any]:
    by_group = metrics.accuracy_by_group(groups, scores)
    gap = metrics.largest_gap(by_group, MIN_GROUP_FOR_GAP)
    return {
        "groups": {group: {"n": g.n, "accuracy": g.accuracy} for group, g in by_group.items()},
        "largest_gap": None
        if gap is None
        else {
            "best": gap.best,
            "best_accuracy": gap.best_accuracy,
            "worst": gap.worst,
            "worst_accuracy": gap.worst_accuracy,
            "gap": gap.gap,
        },
        "min_group_size_for_gap": MIN_GROUP_FOR_GAP,
    }


def outcome_report(outcomes: Sequence[TicketOutcome]) -> dict[str, Any]:
    """Routed vs triaged, and why tickets were triaged."""
    n = len(outcomes)
    routed = sum(o.routed for o in outcomes)
    flagged = sum(o.routed and o.low_confidence for o in outcomes)
    kinds = Counter(o.error_kind for o in outcomes if o.error_kind is not None)
    return {
        "routed": _share(routed, n),
        "routed_low_confidence": _share(flagged, n),
        "triaged": _share(n - routed, n),
        "triaged_by_kind": {kind: _share(count, n) for kind, count in sorted(kinds.items())},
    }


def escalation_report(outcomes: Sequence[TicketOutcome]) -> dict[str, Any]:
    """Escalation rate, which tier decided (the tier mix) and how often each tier was called."""
    n = len(outcomes)
    decided = Counter(o.final_tier or TRIAGE_GROUP for o in outcomes)
    visited = Counter(tier for o in outcomes for tier in set(o.tiers_tried))
    return {
        "rate": _share(sum(o.escalated for o in outcomes), n),
        "tier_mix": {tier: _share(count, n) for tier, count in decided.most_common()},
        "tier_calls": {tier: _share(count, n) for tier, count in visited.most_common()},
    }


Prices = Mapping[str, Mapping[str, float]]


def retrieval_cost(calls: Sequence[ModelCall], prices: Prices) -> tuple[int, float]:
    """Retrieved-example tokens over ``calls`` and what they added to the bill, each call priced at
    its own model's rates (the run's MODEL_PRICES).

    The pricing lives with the Claude tier; it is imported only when there is something to price,
    so every ``ticket-tools`` command does not load the SDK.
    """
    calls = [call for call in calls if call.usage.retrieved_tokens]
    if not calls:
        return 0, 0.0
    from consumer.classify.claude import price_for, retrieval_cost_usd

    rates: dict[str, Price] = {}
    tokens, usd = 0, 0.0
    for call in calls:
        if call.model not in rates:
            rates[call.model] = price_for(call.model, prices)
        tokens += call.usage.retrieved_tokens
        usd += retrieval_cost_usd(call.usage, rates[call.model])
    return tokens, usd


def cost_and_latency(runs: Sequence[Sequence[TicketOutcome]], prices: Prices | None = None) -> dict[str, Any]:
    """Pooled over every repeat: more samples, same expectation as one run.

    The cost without retrieval is the measured one less what each call's retrieved examples added,
    so it answers "what would retrieval save" from one run instead of a second, paid, run.
    """
    outcomes = [o for run in runs for o in run]
    total = sum(o.cost_usd for o in outcomes)
    per_ticket = _share_float(total, len(outcomes))
    calls = [call for o in outcomes for call in o.model_calls]
    retrieved, retrieved_usd = retrieval_cost(calls, prices if prices is not None else default_prices())
    per_ticket_without = _share_float(total - retrieved_usd, len(outcomes))
    latencies = [o.latency_ms for o in outcomes]
    return {
        "cost": {
            "total_usd": total,
            "per_ticket_usd": per_ticket,
            "per_10k_tickets_usd": per_ticket * 10_000,
            "per_10k_tickets_without_retrieval_usd": per_ticket_without * 10_000,
            "retrieved_tokens_per_ticket": _share_float(retrieved, len(outcomes)),
        },
        "latency_ms": {
            "p50": metrics.percentile(latencies, 50) if latencies else None,
            "p95": metrics.percentile(latencies, 95) if latencies else None,
            "max": max(latencies) if latencies else None,
        },
    }


def llm_report(runs: Sequence[Sequence[TicketOutcome]]) -> dict[str, Any]:
    """Per model, pooled over repeats: calls, invalid answers, tokens by kind and cache use.

    "invalid" counts answers that could not be used (outside the schema, refused or cut off): with
    today's models a cut-off answer usually means thinking ate the tier's max_tokens.
    """
    by_model: dict[str, dict[str, Any]] = {}
    for call in (call for run in runs for outcome in run for call in outcome.model_calls):
        row = by_model.setdefault(
            call.model,
            {
                "tier": call.tier,
                "tickets": 0,
                "requests": 0,
                "invalid_outputs": 0,
                "unavailable": 0,
                "reading_cache": 0,
                "writing_cache": 0,
                "tokens": Counter[str](),
                "cost_usd": 0.0,
            },
        )
        usage = call.usage
        row["tickets"] += 1
        row["requests"] += call.requests
        row["invalid_outputs"] += call.outcome == "invalid_output"
        row["unavailable"] += call.outcome == "unavailable"
        row["reading_cache"] += usage.cache_read_input_tokens > 0
        row["writing_cache"] += usage.cache_creation_input_tokens > 0
        row["tokens"].update(
            {
                "input": usage.input_tokens,
                "output": usage.output_tokens,
                "thinking": usage.thinking_tokens,
                "cache_read": usage.cache_read_input_tokens,
                "cache_write": usage.cache_creation_input_tokens,
            }
        )
        row["cost_usd"] += call.cost_usd
    for row in by_model.values():
        row["tokens"] = {kind: row["tokens"][kind] for kind in LLM_TOKEN_KINDS}
    return by_model


def _share_float(total: float, n: int) -> float:
    return total / n if n else 0.0


def curve_report(
    items: Sequence[LabeledTicket],
    outcomes: Sequence[TicketOutcome],
    local: Sequence[dict[str, AxisAnswer]] | None,
    axes: Sequence[str],
) -> dict[str, Any]:
    """Coverage vs accuracy from the local tier's own answers, or the final answers without it."""
    if local is not None:
        source = "local tier"
        min_conf = [min(answer[axis].confidence for axis in axes) for answer in local]
        correct = [
            [answer[axis].label == item.gold[axis] for axis in axes]
            for item, answer in zip(items, local, strict=True)
        ]
    else:
        source = "final answer (no local tier)"
        min_conf = [min(o.confidences[axis] for axis in axes) for o in outcomes]
        correct = correctness(items, outcomes, axes)
    points = metrics.coverage_curve(min_conf, correct, metrics.threshold_grid())
    return {
        "source": source,
        "points": [
            {
                "threshold": p.threshold,
                "n": p.n,
                "coverage": p.coverage,
                "accuracy": p.accuracy,
                "all_axes_correct": p.all_axes_correct,
            }
            for p in points
        ],
    }


DEFAULT_REFERENCE = "the gold labels of the evaluated tickets"


def calibration_report(
    items: Sequence[LabeledTicket],
    outcomes: Sequence[TicketOutcome],
    axes: Sequence[str],
    reference: str = DEFAULT_REFERENCE,
) -> dict[str, Any]:
    """Per ticket: the tier whose answer stands, its confidence and correctness on every axis.

    This is what ``ticket-tools tune`` reads (``shadow-report`` writes the same shape), so a
    threshold is chosen from how often each confidence was right, not from the confidence itself.
    A triaged low-confidence ticket keeps the tier that answered; a ticket no tier answered has
    tier None (confidence 0.0, never correct).
    """
    correct = correctness(items, outcomes, axes)
    return {
        "reference": reference,
        "tickets": [
            {
                "tier": outcome.answer_tier or outcome.final_tier,
                "confidence": {axis: outcome.confidences[axis] for axis in axes},
                "correct": dict(zip(axes, row, strict=True)),
            }
            for outcome, row in zip(outcomes, correct, strict=True)
        ],
    }


def queue_of(rules: list[RoutingRule], labels: dict[str, str]) -> str:
    """The queue the service would publish ``labels`` to, or NO_ANSWER when an axis has no label.

    ``consumer.routing.route`` is the function the service calls, so a change to the rules or to
    routing itself moves this figure exactly as it moves production.
    """
    if metrics.NO_ANSWER in labels.values():
        return metrics.NO_ANSWER
    return route(rules, labels).queue


def worst_queues(per_queue: dict[str, metrics.QueueStats], count: int, min_support: int) -> list[str]:
    """Up to ``count`` queues that lost tickets, worst first, among those with ``min_support`` tickets.

    The same floor as the language gap: a queue of two tickets at 50% is chance, not a finding.
    ``per_queue`` is already ordered worst first.
    """
    losing = [queue for queue, s in per_queue.items() if s.accuracy < 1.0 and s.support >= min_support]
    return losing[:count]


Queues = tuple[Sequence[str], Sequence[str]]
"""(gold, predicted) queue per ticket, when they are known rather than derived from the labels."""


def routing_report(
    taxonomy: Taxonomy,
    items: Sequence[LabeledTicket],
    outcomes: Sequence[TicketOutcome],
    queues: Queues | None = None,
) -> dict[str, Any]:
    """Did each ticket reach the queue its gold labels route to: overall, when routed, per queue.

    A triaged ticket is scored on the queue its labels would have gone to (as label accuracy
    scores what the last tier said); ``routed_accuracy`` and ``routed_to_right_queue`` describe
    what the queues actually received. Per axis, the two ways a label and the queue can disagree.
    ``queues`` replaces the derived queues: a live ticket went where it went, and a person who
    moved it named the right queue (``evaluate --corrections``).
    """
    axes = taxonomy.axis_names
    if queues is not None:
        gold, predicted = list(queues[0]), list(queues[1])
    else:
        gold = [queue_of(taxonomy.routing, item.gold) for item in items]
        predicted = [queue_of(taxonomy.routing, outcome.labels) for outcome in outcomes]
    right = [g == p for g, p in zip(gold, predicted, strict=True)]
    routed = [outcome.routed for outcome in outcomes]
    routed_right = [ok for ok, was_routed in zip(right, routed, strict=True) if was_routed]
    correct = correctness(items, outcomes, axes)
    by_axis = {}
    for index, axis in enumerate(axes):
        queue_only, label_only = metrics.disagreement(right, [row[index] for row in correct])
        by_axis[axis] = {"label_wrong_queue_right": queue_only, "label_right_queue_wrong": label_only}
    per_queue = metrics.per_queue(gold, predicted, TOP_MISROUTES)
    all_right = [all(row) for row in correct]
    return {
        "accuracy": _share(sum(right), len(right)),
        "routed_accuracy": _share(sum(routed_right), len(routed_right)) if routed_right else None,
        "routed_to_right_queue": _share(sum(routed_right), len(right)),
        "majority_baseline": metrics.majority_baseline(gold),
        "queue_right_some_label_wrong": metrics.disagreement(right, all_right)[0],
        "by_axis": by_axis,
        "per_queue": {
            queue: {
                "support": s.support,
                "accuracy": s.accuracy,
                "misrouted_to": [{"queue": q, "count": n} for q, n in s.misrouted_to],
            }
            for queue, s in per_queue.items()
        },
        "worst_queues": worst_queues(per_queue, WORST_QUEUES_SHOWN, MIN_GROUP_FOR_GAP),
        "min_queue_size_for_worst": MIN_GROUP_FOR_GAP,
    }


def summarize(
    taxonomy: Taxonomy,
    items: Sequence[LabeledTicket],
    runs: Sequence[Sequence[TicketOutcome]],
    local: Sequence[dict[str, AxisAnswer]] | None,
    prices: Prices | None = None,
    reference: str = DEFAULT_REFERENCE,
    queues: Queues | None = None,
) -> dict[str, Any]:
    """The whole report; accuracy figures come from the first run, consistency from all of them.

    ``prices`` (the run's ``Settings.prices``) price the retrieved examples; without it, the model
    table's. ``reference`` says what the gold labels are, for the calibration section. ``queues``
    gives the (gold, predicted) queues when they are known rather than derived from the labels.
    """
    axes = taxonomy.axis_names
    first = runs[0]
    axis_reports = {
        axis: axis_report(
            [item.gold[axis] for item in items],
            [o.labels[axis] for o in first],
            list(taxonomy.axes[axis].labels),
        )
        for axis in axes
    }
    correct = correctness(items, first, axes)
    scores = [sum(row) / len(row) for row in correct]
    routed_scores = [score for score, o in zip(scores, first, strict=True) if o.routed]
    return {
        "n": len(items),
        "accuracy": sum(r["accuracy"] for r in axis_reports.values()) / len(axes),
        "macro_f1": sum(r["macro_f1"] for r in axis_reports.values()) / len(axes),
        "all_axes_correct": _share(sum(all(row) for row in correct), len(correct)),
        "routed_accuracy": sum(routed_scores) / len(routed_scores) if routed_scores else None,
        "routing": routing_report(taxonomy, items, first, queues),
        "axes": axis_reports,
        "consistency": {
            "repeats": len(runs),
            "share": metrics.consistency([[o.label_tuple(axes) for o in run] for run in runs]),
        },
        "by_language": group_report([item.language for item in items], scores),
        "by_account_tier": group_report([item.account_tier for item in items], scores),
        "outcomes": outcome_report(first),
        "escalation": escalation_report(first),
        **cost_and_latency(runs, prices),
        "llm": llm_report(runs),
        "coverage_curve": curve_report(items, first, local, axes),
        "calibration": calibration_report(items, first, axes, reference),
    }
