"""Learning from labeled tickets beyond the local tier's model: the example store.

``ExampleStore.build(examples)`` indexes labeled ``consumer.classify.prompt.Example`` objects at
start-up; ``store.nearest(text, k, min_similarity)`` returns the most similar ones as
``Neighbour(example, similarity)``, best first; ``store.add(examples)`` makes more (human
corrections) searchable at once. Similarity comes from a ``TextEncoder``; the default is
``HashedNgramEncoder`` (no downloaded weights); ``ConcatenatedEncoder`` puts a dense sentence
encoder beside it.
"""

from consumer.learn.encoder import ConcatenatedEncoder, HashedNgramEncoder, TextEncoder
from consumer.learn.store import (
    DEFAULT_K,
    DEFAULT_MIN_SIMILARITY,
    ExampleStore,
    Neighbour,
    example_text,
)

__all__ = [
    "DEFAULT_K",
    "DEFAULT_MIN_SIMILARITY",
    "ConcatenatedEncoder",
    "ExampleStore",
    "HashedNgramEncoder",
    "Neighbour",
    "TextEncoder",
    "example_text",
]
