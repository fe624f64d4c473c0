"""The per-ticket retrieval the Claude tiers use: the example store asked with a ticket's text.

Kept apart from the store so the store stays about vectors and examples, and the tiers see only a
function from a ticket to its similar examples (``consumer.classify.claude.Retriever``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from consumer.classify.base import ticket_text
from consumer.classify.prompt import Example, usable_examples
from consumer.learn.dense import dense_encoder
from consumer.learn.store import ExampleStore
from consumer.taxonomy import Taxonomy
from schemas.events import TicketEvent

RECENT = 256
"""Tickets whose examples are remembered: an escalated ticket asks again from the strong tier."""


class TicketRetriever:
    """``retriever(ticket)`` → the ``k`` most similar labeled examples at or above ``min_similarity``.

    Encoding a ticket is most of the cost (about 0.5 ms); the answer for the last ``RECENT`` events
    is kept, so a ticket that escalates is not encoded twice.
    """

    def __init__(self, store: ExampleStore, k: int, min_similarity: float, per_label: int = 0) -> None:
        self.store = store
        self.k = k
        self.min_similarity = min_similarity
        self.per_label = per_label
        self._recent: OrderedDict[str, list[tuple[Example, float]]] = OrderedDict()

    def __call__(self, ticket: TicketEvent) -> list[tuple[Example, float]]:
        found = self._recent.get(ticket.event_id)
        if found is None:
            neighbours = self.store.nearest(
                ticket_text(ticket), self.k, self.min_similarity, self.per_label or None
            )
            found = [(neighbour.example, neighbour.similarity) for neighbour in neighbours]
            self._recent[ticket.event_id] = found
            if len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        return found

    @property
    def signature(self) -> str:
        """What ``prompt_version`` records: k, the per-label limit, the floor, the encoder and index."""
        return f"k={self.k};per_label={self.per_label};floor={self.min_similarity:g};{self.store.name}"


def build_retriever(
    examples: Sequence[Example],
    taxonomy: Taxonomy,
    k: int,
    min_similarity: float,
    dense: str = "none",
    per_label: int = 0,
) -> TicketRetriever | None:
    """A retriever over the examples labeled in this taxonomy, or None when retrieval is off (k = 0)
    or there is nothing to retrieve. ``dense`` names the encoder put beside the n-grams
    (``DENSE_ENCODER``); it is loaded only when there is a store to build. ``per_label`` caps the
    examples sharing one label combination (0: no cap)."""
    usable = usable_examples(examples, taxonomy)
    if k <= 0 or not usable:
        return None
    store = ExampleStore.build(usable, dense=dense_encoder(dense))
    return TicketRetriever(store, k, min_similarity, per_label)
