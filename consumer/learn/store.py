"""The example store: labeled tickets indexed for "which past tickets look like this one?".

Built once at start-up from the labeled examples (the training file, later human corrections too),
it answers ``nearest(text, k, min_similarity)`` with the k most similar examples and their cosine
similarity, and takes new examples with ``add`` at any time, each searchable at once.

Similarity is the cosine of ``TextEncoder`` vectors (``consumer.learn.encoder``); by default hashed
word and character n-gram TF-IDF, which needs no downloaded weights. The vectors live in an HNSW
graph (usearch), stored as int8. Exact search in numpy reads every vector for every query: at
100,000 examples that is 13 ms of CPU (256-d float32), far over the budget; the graph visits a few
hundred. Measured on one core (BANKING77 texts grown to 100,000 by small edits, the encoder's
vectors; exact search as the reference):

  256-d, 100k   exact numpy 13.4 ms; faiss HNSW (float32) 0.10 ms, index 126 MB, build 17 s;
                hnswlib 0.08 ms, 123 MB, 12 s (last release 2023); voyager 0.16 ms, 19 s;
                usearch float16 0.11 ms, 74 MB, 12 s; all return the exact top 5 99.8% of the time
  1024-d        usearch int8 + cosine: BANKING77 label recall@5 92.9% against 93.1% for float16
                (and 93.3-93.5% exact), at half float16's memory and a quarter of float32's

usearch because it is maintained (Unum, Apache-2.0), ships wheels (11 MB), types its API, and
quantises to int8 or float16 inside the index, which the others do not (faiss only with other
index types). The search depth (64) was chosen on label recall: at 32 it lost 0.5 points on
BANKING77, at 128 it gained 0.2 for 30% more CPU. Built with one thread the graph is deterministic,
so an evaluation gives the same figures every time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# onnxruntime (the ``minilm`` encoder's runtime, when installed) must be loaded before usearch: the
# other order crashes the process on import (segmentation fault; usearch 2.26.6, onnxruntime 1.32).
with contextlib.suppress(ImportError):
    import onnxruntime  # noqa: F401

from usearch.index import Index

from consumer.classify.prompt import Example
from consumer.learn.encoder import ConcatenatedEncoder, F32Array, HashedNgramEncoder, TextEncoder

DEFAULT_DIM = 1024
"""Dimensions of the default encoder: 1 KB per example as int8. Label recall@5 with exact search,
5-fold CV: BANKING77 256-d 91.6%, 512-d 92.9%, 1,024-d 93.5%, the unhashed sparse vectors 93.8%;
the bundled tickets (training + evaluation sets, mean over the four axes), which are longer and
collide more: 256-d 81.6%, 512-d 86.5%, 1,024-d 89.2%, 2,048-d 91.2%."""
DEFAULT_K = 5
DEFAULT_MIN_SIMILARITY = 0.1
"""Cosine below which a neighbour is left out, for the default encoder (another encoder has another
scale). Two unrelated tickets score 0.04 (median of random pairs) and 0.09-0.11 at the 90th
percentile; on BANKING77 the floor drops nothing, on the bundled evaluation set 0.1 of the 5
examples per ticket."""
CONNECTIVITY = 16
VECTOR_DTYPE = "i8"
EXPANSION_ADD = 64
EXPANSION_SEARCH = 64
CANDIDATES_PER_SLOT = 8
"""With ``max_per_label``, how many candidates per wanted example are looked at before giving up."""


@dataclass(frozen=True)
class Neighbour:
    """A stored example and its cosine similarity to the query (1 is the same text)."""

    example: Example
    similarity: float


def example_text(example: Example) -> str:
    """The text an example is compared by: subject and body, as the tiers see a ticket
    (``consumer.classify.base.ticket_text``)."""
    return f"{example.subject}\n{example.body}" if example.subject else example.body


def label_key(example: Example) -> tuple[tuple[str, str], ...]:
    """An example's labels on every axis, as one hashable value."""
    return tuple(sorted(example.labels.items()))


def keep_best(
    candidates: Iterable[Neighbour], k: int, min_similarity: float, max_per_label: int | None
) -> list[Neighbour]:
    """The first ``k`` candidates (best first) at or above the floor, at most ``max_per_label`` of any
    one label combination. Pure, so the choice can be tested without an index."""
    chosen: list[Neighbour] = []
    per_label: dict[tuple[tuple[str, str], ...], int] = {}
    for candidate in candidates:
        if len(chosen) == k or candidate.similarity < min_similarity:
            break
        if max_per_label is not None:
            key = label_key(candidate.example)
            if per_label.get(key, 0) >= max_per_label:
                continue
            per_label[key] = per_label.get(key, 0) + 1
        chosen.append(candidate)
    return chosen


class ExampleStore:
    """Labeled examples and their vectors, searchable by similarity; ``add`` works at any time.

    Not thread-safe: the router calls it from its event loop only. ``add`` costs one encoding and
    one graph insertion per example (0.1-0.3 ms of CPU), so a correction is retrievable by the next
    ticket. Nothing is refitted on ``add``: the encoder's idf stays as it was at build.
    """

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self._examples: list[Example] = []
        self._keys: dict[str, int] = {}
        self._index = Index(
            ndim=encoder.dim,
            metric="cos",
            dtype=VECTOR_DTYPE,
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )

    @classmethod
    def build(
        cls,
        examples: Iterable[Example],
        encoder: TextEncoder | None = None,
        dim: int = DEFAULT_DIM,
        threads: int = 1,
        dense: TextEncoder | None = None,
    ) -> ExampleStore:
        """A store of ``examples``. Without an encoder, the default one is fitted on their texts
        (idf only; examples added later are encoded with the same idf), with ``dense`` beside it 1 : 1
        when given (BANKING77 label recall@5: 93.3% alone, 96.3% with wordllama).

        ``threads`` > 1 inserts in parallel (1.8x faster on 2 cores), but the graph, and so a rare
        near-tie among neighbours, then differs from run to run; 1 keeps evaluations repeatable.
        """
        examples = list(examples)
        if encoder is None:
            encoder = HashedNgramEncoder.fit([example_text(example) for example in examples], dim=dim)
            if dense is not None:
                encoder = ConcatenatedEncoder(((encoder, 1.0), (dense, 1.0)))
        store = cls(encoder)
        store.add(examples, threads=threads)
        return store

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def name(self) -> str:
        """The encoder and index settings: what a prompt version or a report should record."""
        return f"{self.encoder.name}+hnsw-{VECTOR_DTYPE}-m{CONNECTIVITY}"

    def add(self, examples: Iterable[Example], threads: int = 1) -> None:
        """Encode and index ``examples``; each is returned by ``nearest`` from now on. An example
        whose ``example_id`` is already stored replaces it (a ticket corrected twice teaches once)."""
        new = list({example.example_id: example for example in examples}.values())
        if not new:
            return
        for example in new:
            old = self._keys.pop(example.example_id, None)
            if old is not None:
                self._index.remove(old)
        vectors = self.encoder.encode([example_text(example) for example in new])
        first = len(self._examples)
        self._examples.extend(new)
        self._keys.update((example.example_id, first + offset) for offset, example in enumerate(new))
        self._index.add(np.arange(first, first + len(new), dtype=np.uint64), vectors, threads=threads)

    def nearest(
        self,
        text: str,
        k: int = DEFAULT_K,
        min_similarity: float = DEFAULT_MIN_SIMILARITY,
        max_per_label: int | None = None,
    ) -> list[Neighbour]:
        """The ``k`` stored examples most similar to ``text``, best first, none below ``min_similarity``.

        ``max_per_label`` keeps at most that many examples with the same labels (on every axis), so
        the k slots show more of the labels a ticket could have; it looks at up to
        ``CANDIDATES_PER_SLOT`` x k candidates.
        """
        return self.nearest_many([text], k, min_similarity, max_per_label)[0]

    def nearest_many(
        self,
        texts: Sequence[str],
        k: int = DEFAULT_K,
        min_similarity: float = DEFAULT_MIN_SIMILARITY,
        max_per_label: int | None = None,
    ) -> list[list[Neighbour]]:
        """``nearest`` for many texts in one call (one encoding batch, one index call)."""
        if k <= 0 or not self._examples or not texts:
            return [[] for _ in texts]
        return self.search(self.encoder.encode(texts), k, min_similarity, max_per_label)

    def search(
        self, vectors: F32Array, k: int, min_similarity: float, max_per_label: int | None = None
    ) -> list[list[Neighbour]]:
        """``nearest_many`` for vectors already encoded (by this store's encoder)."""
        if k <= 0 or not self._examples or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        wanted = k if max_per_label is None else k * CANDIDATES_PER_SLOT
        count = min(wanted, len(self._examples))
        matches = self._index.search(vectors, count, threads=1)
        keys = np.atleast_2d(matches.keys)
        distances = np.atleast_2d(matches.distances)
        found = np.atleast_1d(matches.counts) if hasattr(matches, "counts") else np.array([len(matches)])
        empty = np.count_nonzero(vectors, axis=1) == 0  # nothing to compare: the cosine is undefined
        results: list[list[Neighbour]] = []
        for row in range(len(vectors)):
            if empty[row]:
                results.append([])
                continue
            candidates = (
                Neighbour(self._examples[int(key)], 1.0 - float(distance))
                for key, distance in zip(keys[row, : found[row]], distances[row, : found[row]], strict=True)
            )
            results.append(keep_best(candidates, k, min_similarity, max_per_label))
        return results
