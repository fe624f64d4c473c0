"""Pure classification metrics over plain label lists.

Written out instead of borrowed from scikit-learn so the definitions are explicit (the report
documents them) and cover what scikit-learn does not: a ticket with no answer, consistency over
repeated runs, the coverage curve and the largest gap between groups. Every function takes
sequences and returns numbers; nothing here knows about tickets or the pipeline.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

NO_ANSWER = "(no answer)"
"""The prediction recorded when the pipeline gave no classification (e.g. every tier failed)."""


@dataclass(frozen=True)
class ClassStats:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class GroupAccuracy:
    n: int
    accuracy: float


@dataclass(frozen=True)
class Gap:
    best: str
    best_accuracy: float
    worst: str
    worst_accuracy: float

    @property
    def gap(self) -> float:
        return self.best_accuracy - self.worst_accuracy


@dataclass(frozen=True)
class CoveragePoint:
    """At ``threshold``: the share of tickets at least that confident, and how right they are."""

    threshold: float
    n: int
    coverage: float
    accuracy: float | None
    all_axes_correct: float | None


def _check_lengths(gold: Sequence[object], predicted: Sequence[object]) -> None:
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} items but predicted has {len(predicted)}")


def accuracy(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Share of items predicted exactly; 0.0 for no items (nothing was shown to be right)."""
    _check_lengths(gold, predicted)
    if not gold:
        return 0.0
    return sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold)


def label_order(gold: Sequence[str], predicted: Sequence[str], known: Sequence[str] = ()) -> list[str]:
    """Rows/columns for a confusion matrix: the known labels in their order, then any others seen.

    Labels the taxonomy lists keep the order the operator wrote them in; unexpected ones (a label
    outside the taxonomy, or ``NO_ANSWER``) are appended so that no prediction disappears.
    """
    order = list(dict.fromkeys(known))
    seen = set(order)
    for label in sorted(set(gold) | set(predicted), key=lambda label: (label == NO_ANSWER, label)):
        if label not in seen:
            order.append(label)
            seen.add(label)
    return order


def confusion_matrix(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """``matrix[i][j]`` counts items whose true label is ``labels[i]`` and prediction ``labels[j]``."""
    _check_lengths(gold, predicted)
    index = {label: position for position, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted, strict=True):
        if g not in index or p not in index:
            raise ValueError(f"label {g if g not in index else p!r} is not in the label list")
        matrix[index[g]][index[p]] += 1
    return matrix


def top_confusions(
    labels: Sequence[str], matrix: Sequence[Sequence[int]], count: int = 10
) -> list[tuple[str, str, int]]:
    """The ``count`` largest off-diagonal cells as (true, predicted, tickets), largest first.

    With dozens of labels a heatmap shows that errors exist but not which pairs to fix first (a
    description to sharpen, examples to add, two labels to merge); this list does.
    """
    cells = [
        (labels[i], labels[j], cell)
        for i, row in enumerate(matrix)
        for j, cell in enumerate(row)
        if i != j and cell > 0
    ]
    return sorted(cells, key=lambda c: (-c[2], c[0], c[1]))[:count]


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def per_class(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, ClassStats]:
    """Precision, recall, F1 and support per label; a ratio with a zero denominator is 0.0.

    The zero convention matches scikit-learn's ``zero_division=0``: a class never predicted has
    precision 0, which is what an operator needs to see (the model never says it).
    """
    _check_lengths(gold, predicted)
    true_positive: Counter[str] = Counter()
    predicted_count: Counter[str] = Counter(predicted)
    support: Counter[str] = Counter(gold)
    for g, p in zip(gold, predicted, strict=True):
        if g == p:
            true_positive[g] += 1
    stats = {}
    for label in labels:
        precision = _ratio(true_positive[label], predicted_count[label])
        recall = _ratio(true_positive[label], support[label])
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        stats[label] = ClassStats(precision, recall, f1, support[label])
    return stats


def macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Unweighted mean F1 over the labels that occur in gold or predictions (not ``NO_ANSWER``).

    Labels that never occur are left out (they have no F1 to speak of); a label only ever
    predicted counts with F1 0, so inventing classes is penalised. Missing answers are not a class
    but still cost the true class its recall.
    """
    labels = sorted((set(gold) | set(predicted)) - {NO_ANSWER})
    if not labels:
        return 0.0
    stats = per_class(gold, predicted, labels)
    return sum(stats[label].f1 for label in labels) / len(labels)


def majority_baseline(gold: Sequence[str], reference: Sequence[str] | None = None) -> float:
    """Accuracy on ``gold`` of always answering the most frequent label of ``reference``.

    ``reference`` is the training labels when known (an honest baseline); by default the gold
    labels themselves, which is the strongest possible constant answer.
    """
    if not gold:
        return 0.0
    counts = Counter(reference if reference is not None else gold)
    if not counts:
        return 0.0
    majority = min(counts, key=lambda label: (-counts[label], label))
    return sum(g == majority for g in gold) / len(gold)


def consistency(runs: Sequence[Sequence[Hashable]]) -> float | None:
    """Share of items whose answer is identical in every run; None with fewer than two runs.

    ``runs[r][i]`` is item ``i``'s answer in run ``r`` (for tickets: the tuple of labels over all
    axes, so a ticket counts as consistent only when every axis agrees).
    """
    if len(runs) < 2:
        return None
    size = len(runs[0])
    if any(len(run) != size for run in runs):
        raise ValueError("every run must answer the same items")
    if size == 0:
        return None
    stable = sum(all(run[i] == runs[0][i] for run in runs[1:]) for i in range(size))
    return stable / size


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def threshold_grid(start: float = 0.30, stop: float = 0.95, step: float = 0.05) -> list[float]:
    """Thresholds from ``start`` to ``stop`` inclusive, rounded so 0.1 + 0.2 issues do not show."""
    count = round((stop - start) / step)
    return [round(start + i * step, 4) for i in range(count + 1)]


def coverage_curve(
    min_confidence: Sequence[float],
    correct: Sequence[Sequence[bool]],
    thresholds: Sequence[float],
) -> list[CoveragePoint]:
    """For each threshold t: the tickets whose least confident axis is >= t, and their accuracy.

    ``correct[i]`` holds ticket ``i``'s per-axis correctness. ``accuracy`` is the mean over axes
    and covered tickets (comparable with the headline accuracy), ``all_axes_correct`` the share of
    covered tickets right on every axis; both None when no ticket is covered. Reading: a tier that
    may decide alone above t takes ``coverage`` of the traffic at that accuracy.
    """
    _check_lengths(min_confidence, correct)
    total = len(min_confidence)
    points = []
    for threshold in thresholds:
        covered = [axes for conf, axes in zip(min_confidence, correct, strict=True) if conf >= threshold]
        axis_answers = [ok for axes in covered for ok in axes]
        points.append(
            CoveragePoint(
                threshold=threshold,
                n=len(covered),
                coverage=len(covered) / total if total else 0.0,
                accuracy=sum(axis_answers) / len(axis_answers) if axis_answers else None,
                all_axes_correct=sum(all(axes) for axes in covered) / len(covered) if covered else None,
            )
        )
    return points


def accuracy_by_group(groups: Sequence[str], scores: Sequence[float]) -> dict[str, GroupAccuracy]:
    """Mean score per group (``scores[i]`` is item i's share of axes right), sorted by group name."""
    _check_lengths(groups, scores)
    totals: dict[str, list[float]] = {}
    for group, score in zip(groups, scores, strict=True):
        totals.setdefault(group, []).append(score)
    return {
        group: GroupAccuracy(len(values), sum(values) / len(values))
        for group, values in sorted(totals.items())
    }


def largest_gap(by_group: Mapping[str, GroupAccuracy], min_n: int = 1) -> Gap | None:
    """The best and worst group among those with at least ``min_n`` items; None if fewer than two.

    ``min_n`` keeps a group of two tickets from being named the worst by chance; ties go to the
    alphabetically first group so the answer is stable.
    """
    eligible = sorted((group, stats) for group, stats in by_group.items() if stats.n >= min_n)
    if len(eligible) < 2:
        return None
    best = max(eligible, key=lambda item: item[1].accuracy)
    worst = min(eligible, key=lambda item: item[1].accuracy)
    return Gap(best[0], best[1].accuracy, worst[0], worst[1].accuracy)


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (what k-fold reports conventionally show)."""
    if not values:
        raise ValueError("mean of no values")
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


@dataclass(frozen=True)
class QueueStats:
    """One true queue: its tickets, the share that reached it, and where the others went."""

    support: int
    accuracy: float
    misrouted_to: tuple[tuple[str, int], ...]


def per_queue(gold: Sequence[str], predicted: Sequence[str], top: int = 3) -> dict[str, QueueStats]:
    """Per true queue, worst first: support, the share routed there, and the ``top`` wrong queues.

    Ordered by accuracy, then by support (a queue losing 5 of 10 tickets before one losing 1 of 2),
    then by name, so the first rows are the ones to fix. ``NO_ANSWER`` as a prediction is a wrong
    queue like any other and is listed among ``misrouted_to``, so a tier outage shows up there.
    """
    _check_lengths(gold, predicted)
    wrong: dict[str, Counter[str]] = {}
    support: Counter[str] = Counter(gold)
    for g, p in zip(gold, predicted, strict=True):
        if g != p:
            wrong.setdefault(g, Counter())[p] += 1
    stats = {}
    for queue, n in support.items():
        misses = wrong.get(queue, Counter())
        ranked = sorted(misses.items(), key=lambda item: (-item[1], item[0]))[:top]
        stats[queue] = QueueStats(n, (n - sum(misses.values())) / n, tuple(ranked))
    return dict(sorted(stats.items(), key=lambda item: (item[1].accuracy, -item[1].support, item[0])))


def disagreement(first: Sequence[bool], second: Sequence[bool]) -> tuple[float, float]:
    """(share right in ``first`` only, share right in ``second`` only); (0, 0) for no items.

    With a label's correctness and the queue's: how often a wrong label still reached the right
    queue (the routing rules do not read it, or map both labels to one queue) and how often a
    right label was not enough (another axis the rules read was wrong).
    """
    _check_lengths(first, second)
    if not first:
        return 0.0, 0.0
    only_first = sum(a and not b for a, b in zip(first, second, strict=True))
    only_second = sum(b and not a for a, b in zip(first, second, strict=True))
    return only_first / len(first), only_second / len(first)
