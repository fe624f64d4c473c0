"""The overview page's figures, read from the router's own metrics registry in-process, and the
small SVG bar charts that show them. Pure, given a ``Metrics`` (no Prometheus server needed).

Counters are this replica's since it started; "records on the topic" comes from the console's
reader and is the whole topic, whoever wrote it.
"""

from __future__ import annotations

import html
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.metrics import MetricWrapperBase

from consumer.metrics import Metrics

CHART_WIDTH = 480
BAR_HEIGHT = 18
LABEL_WIDTH = 190
RATE_WINDOW = 60
"""Samples kept for rates: one per overview request at most every SAMPLE_EVERY_S."""
SAMPLE_EVERY_S = 10.0


def totals_by(metric: MetricWrapperBase, label: str) -> dict[str, float]:
    """A counter's ``_total`` samples summed by one label's value."""
    sums: dict[str, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and label in sample.labels:
                key = sample.labels[label]
                sums[key] = sums.get(key, 0.0) + sample.value
    return sums


def total(metric: MetricWrapperBase) -> float:
    return sum(
        sample.value
        for family in metric.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


@dataclass(frozen=True)
class Figures:
    routed_by_queue: dict[str, float]
    decided_by: dict[str, float]
    """Tickets routed by each tier's answer, and by people (``human``); ``triage`` what none decided."""
    correction_rate: float | None
    cost_per_10k: float | None


def figures(metrics: Metrics) -> Figures:
    routed = totals_by(metrics.routed, "queue")
    routed_total = sum(routed.values())
    decided = totals_by(metrics.final_tier, "tier")
    human = totals_by(metrics.console_decisions, "outcome")
    decided["human"] = human.get("routed", 0.0) + human.get("confirmed", 0.0)
    decided["triage"] = total(metrics.triaged)
    handled = routed_total + decided["triage"]
    corrections = total(metrics.corrections)
    return Figures(
        routed_by_queue=routed,
        decided_by=decided,
        correction_rate=corrections / routed_total if routed_total else None,
        cost_per_10k=total(metrics.llm_cost) / handled * 10_000 if handled else None,
    )


@dataclass
class RateSampler:
    """Per-queue totals sampled over time, so the page can show tickets per minute."""

    samples: deque[tuple[float, dict[str, float]]] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))

    def sample(self, now: float, totals: Mapping[str, float]) -> None:
        if not self.samples or now - self.samples[-1][0] >= SAMPLE_EVERY_S:
            self.samples.append((now, dict(totals)))

    def per_minute(self) -> dict[str, float]:
        if len(self.samples) < 2:
            return {}
        (start, first), (end, last) = self.samples[0], self.samples[-1]
        minutes = (end - start) / 60
        return {queue: (count - first.get(queue, 0.0)) / minutes for queue, count in last.items()}


def share(values: Mapping[str, float]) -> dict[str, float]:
    whole = sum(values.values())
    return {key: value / whole for key, value in values.items()} if whole else {}


def bar_chart(rows: Sequence[tuple[str, float]], title: str, unit: str = "") -> str:
    """An inline SVG of horizontal bars, scaled to the largest value; labels and title escaped."""
    top = max((value for _, value in rows), default=0.0) or 1.0
    height = BAR_HEIGHT * max(1, len(rows)) + 4
    room = CHART_WIDTH - LABEL_WIDTH - 70
    parts = [
        f'<svg class="chart" role="img" width="{CHART_WIDTH}" height="{height}" '
        f'viewBox="0 0 {CHART_WIDTH} {height}"><title>{html.escape(title)}</title>'
    ]
    for index, (label, value) in enumerate(rows):
        y = index * BAR_HEIGHT + 2
        width = max(1, round(room * value / top)) if value > 0 else 0
        shown = f"{value:.0%}" if unit == "%" else f"{value:,.1f}".removesuffix(".0") + unit
        parts.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y + 13}" text-anchor="end">{html.escape(label)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y + 2}" width="{width}" height="{BAR_HEIGHT - 5}"></rect>'
            f'<text x="{LABEL_WIDTH + width + 4}" y="{y + 13}">{html.escape(shown)}</text>'
        )
    if not rows:
        parts.append(f'<text x="4" y="15">{html.escape("nothing yet")}</text>')
    parts.append("</svg>")
    return "".join(parts)
