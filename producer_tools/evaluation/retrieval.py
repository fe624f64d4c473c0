"""Label recall@k: how often the examples the store retrieves for a ticket include its true label.

Retrieved examples in the prompt can only teach the model a label they show, so the share of
tickets whose gold label is among the k retrieved examples' labels bounds what retrieval can add,
and it needs no API key to measure. The examples come from the training side only: the other
folds under ``--cv``, the ``--train`` file, or the local tier's training file, never the ticket
being scored.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consumer.classify.prompt import Example
from consumer.learn.encoder import TextEncoder
from consumer.learn.store import ExampleStore, Neighbour
from producer_tools.evaluation.dataset import LabeledTicket

DEFAULT_RETRIEVAL_K = 5


@dataclass(frozen=True)
class Side:
    """One retrieval run: a store built from ``examples``, queried with every ticket of ``queries``."""

    examples: Sequence[Example]
    queries: Sequence[LabeledTicket]


def examples_of(items: Sequence[LabeledTicket]) -> list[Example]:
    """Labeled tickets as store examples (their gold labels are the examples' labels)."""
    return [
        Example(
            example_id=item.ticket.ticket_id,
            subject=item.ticket.subject,
            body=item.ticket.body,
            labels=dict(item.gold),
            language=item.language,
        )
        for item in items
    ]


def fold_sides(items: Sequence[LabeledTicket], folds: Sequence[Sequence[int]]) -> list[Side]:
    """Per fold: the store holds every other fold, the queries are the fold's own tickets."""
    sides = []
    for test_indices in folds:
        held_out = set(test_indices)
        train = [item for index, item in enumerate(items) if index not in held_out]
        sides.append(Side(examples_of(train), [items[index] for index in test_indices]))
    return sides


def label_recall(gold: Sequence[str], retrieved: Sequence[Sequence[str]]) -> float:
    """The share of queries whose gold label is among the labels retrieved for it (0 with no queries)."""
    if len(gold) != len(retrieved):
        raise ValueError("one list of retrieved labels per gold label")
    if not gold:
        return 0.0
    return sum(label in labels for label, labels in zip(gold, retrieved, strict=True)) / len(gold)


def labels_on(axis: str, neighbours: Sequence[Neighbour]) -> list[str]:
    """The retrieved examples' labels on one axis (an example without that axis shows nothing)."""
    return [n.example.labels[axis] for n in neighbours if axis in n.example.labels]


@dataclass(frozen=True)
class Retrieved:
    """Every query's gold labels beside what the router's retrieval (at most ``per_label`` examples
    per label combination) and the plain k nearest returned for it."""

    gold: list[Mapping[str, str]]
    configured: list[list[Neighbour]]
    nearest: list[list[Neighbour]]
    per_label: int
    store_name: str
    store_sizes: list[int]
    seconds: float
    labeled_axes: frozenset[str] = frozenset()
    """Axes on which some stored example has a label: recall on any other axis is not measured."""


def retrieve(
    sides: Sequence[Side],
    k: int,
    min_similarity: float,
    dense: TextEncoder | None = None,
    per_label: int = 0,
) -> Retrieved:
    """Build one store per side and query it with that side's tickets, in one batch each."""
    started = time.process_time()
    gold: list[Mapping[str, str]] = []
    configured: list[list[Neighbour]] = []
    nearest: list[list[Neighbour]] = []
    name, sizes, axes = "", list[int](), set[str]()
    for side in sides:
        axes.update(axis for example in side.examples for axis in example.labels)
        store = ExampleStore.build(side.examples, dense=dense)
        texts = [item.text for item in side.queries]
        vectors = store.encoder.encode(texts)
        nearest_here = store.search(vectors, k, min_similarity)
        nearest += nearest_here
        configured += store.search(vectors, k, min_similarity, per_label) if per_label else nearest_here
        gold += [item.gold for item in side.queries]
        name, sizes = store.name, [*sizes, len(store)]
    seconds = time.process_time() - started
    return Retrieved(gold, configured, nearest, per_label, name, sizes, seconds, frozenset(axes))


def recall_report(
    retrieved: Retrieved, axes: Sequence[str], k: int, min_similarity: float, source: str
) -> dict[str, Any]:
    """The ``retrieval`` section of the report: recall@k per axis as the router retrieves and for the
    plain k nearest (None on an axis no stored example is labeled on)."""

    def recall(neighbours: Sequence[Sequence[Neighbour]], axis: str) -> float | None:
        if axis not in retrieved.labeled_axes:
            return None  # e.g. the bundled training file scored against another taxonomy
        gold = [labels[axis] for labels in retrieved.gold]
        return label_recall(gold, [labels_on(axis, found) for found in neighbours])

    n = len(retrieved.gold)
    return {
        "k": k,
        "min_similarity": min_similarity,
        "source": source,
        "store": retrieved.store_name,
        "store_sizes": retrieved.store_sizes,
        "per_label": retrieved.per_label,
        "recall_at_k": {axis: recall(retrieved.configured, axis) for axis in axes},
        "recall_at_k_nearest": {axis: recall(retrieved.nearest, axis) for axis in axes},
        "mean_retrieved": sum(len(found) for found in retrieved.configured) / n if n else 0.0,
        "cpu_s": retrieved.seconds,
    }
