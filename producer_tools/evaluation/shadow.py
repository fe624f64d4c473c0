"""Live vs shadow: the join by event id and every figure of ``ticket-tools shadow-report``.

Plain functions over plain data (the live router's decisions read back from its queue and triage
topics, the shadow's ``ShadowDecision`` records), so each figure is tested without a broker. The
result is one JSON-ready dict, like ``evaluate``'s, from which the terminal tables and the HTML page
are drawn, so the three outputs cannot disagree.

The live router is the reference here, not the truth: "agreement" is the share of tickets on which
the candidate says the same thing, and a disagreement is a place to look (or to correct), not a
mistake of either side. Only ``evaluate --corrections`` knows who was right.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from producer_tools.decisions import LiveDecision
from producer_tools.evaluation import metrics
from schemas.shadow import ShadowDecision

CALIBRATION_REFERENCE = "the live router's labels"
"""What ``correct`` means in the calibration section (``ticket-tools tune`` shows it)."""
TOP_QUEUE_CHANGES = 10
ANSWERED = ("answered", "low_confidence")


def answer_tier(decision: ShadowDecision) -> str | None:
    """The tier whose answer the decision's labels are, routed or not; None when no tier answered."""
    answered = [attempt.tier for attempt in decision.tier_attempts if attempt.outcome in ANSWERED]
    return answered[-1] if answered else None


def shadow_view(decision: ShadowDecision, triage_label: str) -> LiveDecision:
    """A shadow decision in the live decisions' shape, so both sides are measured by one function.

    A triaged decision's queue is ``triage_label`` (the triage topic, as on the live side)."""
    axes = decision.classification.axes if decision.classification is not None else {}
    routed = decision.outcome == "routed" and decision.queue is not None
    return LiveDecision(
        event_id=decision.event_id or "",
        ticket_id=decision.ticket_id or "",
        queue=decision.queue if routed and decision.queue is not None else triage_label,
        labels={axis: answer.label for axis, answer in axes.items()},
        confidences={axis: answer.confidence for axis, answer in axes.items()},
        tiers_tried=list(decision.tiers_tried),
        model=decision.model_used,
        escalated=decision.escalated,
        triaged=not routed,
        cost_usd=decision.cost_usd,
        latency_ms=decision.latency_ms,
        error_kind=decision.error_kind.value if decision.error_kind is not None else "",
    )


@dataclass(frozen=True)
class ShadowRead:
    """The shadow topic reduced to one decision per event: a restarted or rebalanced shadow may
    decide an event twice, and the latest decision is the one that stands (as on the live side)."""

    latest: dict[str, ShadowDecision]
    records: int
    without_event_id: int
    unreadable: int


def latest_shadow_decisions(decisions: Iterable[ShadowDecision | None]) -> ShadowRead:
    """``decisions`` in topic order; None stands for a record that was not a ShadowDecision."""
    latest: dict[str, ShadowDecision] = {}
    records = without_event_id = unreadable = 0
    for decision in decisions:
        records += 1
        if decision is None:
            unreadable += 1
        elif decision.event_id is None:
            without_event_id += 1
        else:
            latest[decision.event_id] = decision
    return ShadowRead(latest, records, without_event_id, unreadable)


@dataclass(frozen=True)
class Joined:
    """One event both routers decided."""

    live: LiveDecision
    shadow: LiveDecision
    shadow_tier: str | None
    """The tier whose answer the shadow's labels are (see ``answer_tier``)."""


def join(
    live: Mapping[str, LiveDecision], shadow: Mapping[str, ShadowDecision], triage_label: str
) -> list[Joined]:
    """The events both sides decided, in the shadow's order (the order it read them)."""
    return [
        Joined(live[event_id], shadow_view(decision, triage_label), answer_tier(decision))
        for event_id, decision in shadow.items()
        if event_id in live
    ]


def axes_of(joined: Sequence[Joined], known: Sequence[str]) -> list[str]:
    """The live taxonomy's axes, then any other axis either side labelled (a candidate taxonomy
    may add one): every axis a disagreement can be on."""
    seen = list(known)
    for item in joined:
        for axis in (*item.live.labels, *item.shadow.labels):
            if axis not in seen:
                seen.append(axis)
    return seen


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def agreement(joined: Sequence[Joined], axes: Sequence[str]) -> dict[str, Any]:
    """Per axis, the share of joined events with the same label on both sides, among those where
    both had a label (a ticket triaged before any tier answered has none); the queue's share over
    all joined events; and the share with every axis the same, among events labelled on all axes."""
    per_axis = {}
    for axis in axes:
        pairs = [(j.live.labels[axis], j.shadow.labels[axis]) for j in joined if _both_label(j, axis)]
        per_axis[axis] = _agreed(sum(live == shadow for live, shadow in pairs), len(pairs))
    complete = [j for j in joined if all(_both_label(j, axis) for axis in axes)]
    all_agree = sum(all(j.live.labels[axis] == j.shadow.labels[axis] for axis in axes) for j in complete)
    same_queue = sum(j.live.queue == j.shadow.queue for j in joined)
    return {
        "axes": per_axis,
        "all_axes": _agreed(all_agree, len(complete)),
        "queue": _agreed(same_queue, len(joined)),
    }


def _agreed(agree: int, compared: int) -> dict[str, Any]:
    return {"agreement": _share(agree, compared), "agree": agree, "compared": compared}


def _both_label(item: Joined, axis: str) -> bool:
    return axis in item.live.labels and axis in item.shadow.labels


def queue_order(queues: Iterable[str], triage_label: str) -> list[str]:
    """Queues by name, the triage topic last (it is where a change away from a team goes)."""
    names = sorted(set(queues))
    return [name for name in names if name != triage_label] + (
        [triage_label] if triage_label in names else []
    )


def queue_changes(joined: Sequence[Joined], triage_label: str) -> dict[str, Any]:
    """The live queue → shadow queue matrix (rows live, columns shadow, counts of events), and the
    most frequent changes off its diagonal."""
    pairs = [(j.live.queue, j.shadow.queue) for j in joined]
    labels = queue_order([queue for pair in pairs for queue in pair], triage_label)
    index = {label: position for position, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for live, shadow in pairs:
        matrix[index[live]][index[shadow]] += 1
    changes = Counter((live, shadow) for live, shadow in pairs if live != shadow)
    changed = sum(changes.values())
    return {
        "labels": labels,
        "matrix": matrix,
        "changed": changed,
        "changed_share": _share(changed, len(pairs)),
        "top": [
            {"live": live, "shadow": shadow, "count": count}
            for (live, shadow), count in sorted(changes.items(), key=lambda item: (-item[1], item[0]))[
                :TOP_QUEUE_CHANGES
            ]
        ],
    }


def side_figures(decisions: Sequence[LiveDecision]) -> dict[str, Any]:
    """Escalation and triage rates, tier mix, cost per 10k tickets and latency of one side.

    Latency is over routed tickets only: the live router's triage records carry no latency (nor
    cost, which therefore counts as 0 for the live side's triaged tickets).
    """
    total = len(decisions)
    triaged = [d for d in decisions if d.triaged]
    latencies = [d.latency_ms for d in decisions if not d.triaged]
    cost = sum(d.cost_usd for d in decisions)
    kinds = Counter(d.error_kind or "unknown" for d in triaged)
    mix = Counter(d.decided_by or "none" for d in decisions)
    return {
        "tickets": total,
        "escalation_rate": _share(sum(d.escalated for d in decisions), total),
        "triage_rate": _share(len(triaged), total),
        "triaged_by_kind": {kind: count / total for kind, count in kinds.most_common()},
        "tier_mix": {tier: count / total for tier, count in mix.most_common()},
        "cost_usd": cost,
        "cost_per_10k_tickets_usd": cost / total * 10_000 if total else None,
        "latency_ms": {
            "p50": metrics.percentile(latencies, 50) if latencies else None,
            "p95": metrics.percentile(latencies, 95) if latencies else None,
            "routed": len(latencies),
        },
    }


def disagreements(joined: Sequence[Joined], axes: Sequence[str]) -> list[dict[str, Any]]:
    """Every (event, axis) where both sides labelled the axis differently; the ones the shadow was
    surest of first, since a confident candidate that disagrees is the first place to look."""
    rows = [
        {
            "event_id": j.live.event_id,
            "ticket_id": j.live.ticket_id,
            "axis": axis,
            "live": j.live.labels[axis],
            "shadow": j.shadow.labels[axis],
            "live_confidence": j.live.confidences.get(axis),
            "shadow_confidence": j.shadow.confidences.get(axis),
            "live_queue": j.live.queue,
            "shadow_queue": j.shadow.queue,
        }
        for j in joined
        for axis in axes
        if _both_label(j, axis) and j.live.labels[axis] != j.shadow.labels[axis]
    ]
    return sorted(rows, key=lambda row: (-(row["shadow_confidence"] or 0.0), row["event_id"], row["axis"]))


def calibration(joined: Sequence[Joined]) -> dict[str, Any]:
    """What ``ticket-tools tune`` reads: per event, the shadow's answering tier, its confidence per
    axis and whether the label equals the live router's.

    Events the live router triaged are left out: their labels are ones it did not trust itself. On
    the axes the live router labelled, a shadow with no label (no tier answered) has confidence 0.0
    and is not correct, as in ``evaluate``'s section.
    """
    tickets = []
    for j in joined:
        if j.live.triaged or not j.live.labels:
            continue
        tickets.append(
            {
                "tier": j.shadow_tier,
                "confidence": {axis: j.shadow.confidences.get(axis, 0.0) for axis in j.live.labels},
                "correct": {
                    axis: j.shadow.labels.get(axis) == label for axis, label in j.live.labels.items()
                },
            }
        )
    return {"reference": CALIBRATION_REFERENCE, "tickets": tickets}


def shadow_report(
    name: str,
    live: Mapping[str, LiveDecision],
    shadow: ShadowRead,
    known_axes: Sequence[str],
    triage_label: str,
) -> dict[str, Any]:
    """The whole report (what ``--json`` writes)."""
    joined = join(live, shadow.latest, triage_label)
    axes = axes_of(joined, known_axes)
    return {
        "name": name,
        "join": {
            "live_events": len(live),
            "shadow_records": shadow.records,
            "shadow_events": len(shadow.latest),
            "joined": len(joined),
            "live_only": len(live.keys() - shadow.latest.keys()),
            "shadow_only": len(shadow.latest.keys() - live.keys()),
            "shadow_without_event_id": shadow.without_event_id,
            "shadow_unreadable": shadow.unreadable,
        },
        "axes": axes,
        "agreement": agreement(joined, axes),
        "queue_changes": queue_changes(joined, triage_label),
        "live": side_figures([j.live for j in joined]),
        "shadow": side_figures([j.shadow for j in joined]),
        "disagreements": disagreements(joined, axes),
        "calibration": calibration(joined),
    }
