"""The example store: the hashed n-gram encoder's pure parts, then the store's search and ``add``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from consumer.classify.base import ticket_text
from consumer.classify.prompt import Example
from consumer.learn.encoder import (
    ConcatenatedEncoder,
    F32Array,
    HashedNgramEncoder,
    TextEncoder,
    rolling_ngrams,
)
from consumer.learn.measure import grown
from consumer.learn.store import ExampleStore, Neighbour, example_text, keep_best
from schemas.events import TicketEvent

TEXTS = [
    "I was charged twice for my subscription this month, please refund the duplicate payment",
    "I forgot my password and the reset email never arrives",
    "The mobile app crashes every time I open the settings page",
    "How do I download last year's invoices as PDF for our accounting team?",
    "Our whole team lost access to the dashboard after the SSO change",
    "Can I upgrade from the pro plan to enterprise in the middle of the billing cycle?",
]
LABELS = ["billing", "account", "bug", "billing", "account", "sales"]


def example(number: int, body: str, label: str, subject: str = "") -> Example:
    return Example(f"ex-{number}", subject, body, {"team": label})


def examples() -> list[Example]:
    return [example(n, text, label) for n, (text, label) in enumerate(zip(TEXTS, LABELS, strict=True))]


# --- the encoder's pure parts -------------------------------------------------------------------


def test_rolling_ngrams_skip_separators_and_keep_their_document() -> None:
    # Two documents: [5, 6, 7] and [8], separated by 0; uni- and bigrams.
    symbols = np.array([5, 6, 7, 0, 8, 0], dtype=np.uint64)
    documents = np.array([0, 0, 0, 0, 1, 1], dtype=np.intp)
    found_documents, keys = rolling_ngrams(symbols, documents, (1, 2), np.uint64(0))
    # 5, 6, 7, 8 and the bigrams 56, 67; nothing spans a 0.
    assert len(keys) == 6 and len(set(keys.tolist())) == 6
    assert sorted(found_documents.tolist()) == [0, 0, 0, 0, 0, 1]
    only_bigrams = rolling_ngrams(symbols, documents, (2, 2), np.uint64(0))[1]
    assert len(only_bigrams) == 2 and set(only_bigrams.tolist()) < set(keys.tolist())


def test_rows_are_unit_float32_and_an_empty_text_is_zero() -> None:
    encoder = HashedNgramEncoder.fit(TEXTS, dim=256)
    vectors = encoder.encode([*TEXTS, "", "   "])
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS) + 2, 256)
    assert np.allclose(np.linalg.norm(vectors[: len(TEXTS)], axis=1), 1.0, atol=1e-5)
    assert not vectors[len(TEXTS) :].any()


def test_a_text_encodes_the_same_alone_and_in_a_batch() -> None:
    """No n-gram may cross from one text of a batch into the next."""
    encoder = HashedNgramEncoder.fit(TEXTS, dim=512)
    batch = encoder.encode(TEXTS)
    for row, text in enumerate(TEXTS):
        assert np.allclose(batch[row], encoder.encode([text])[0], atol=1e-6)
    small_batches = HashedNgramEncoder(dim=512, idf=encoder.idf, batch=2).encode(TEXTS)
    assert np.allclose(batch, small_batches, atol=1e-6)


def test_case_does_not_matter() -> None:
    encoder = HashedNgramEncoder.fit(TEXTS)
    upper, lower = encoder.encode([TEXTS[0].upper(), TEXTS[0]])
    assert float(upper @ lower) == pytest.approx(1.0, abs=1e-5)


def test_vectors_do_not_depend_on_the_process() -> None:
    """Python's str hash changes from process to process; the encoder must not use it, or a store
    built in one process (or a cached one) would not match queries encoded in another."""
    code = (
        "from consumer.learn.encoder import HashedNgramEncoder\n"
        f"print(HashedNgramEncoder(dim=64).encode([{TEXTS[1]!r}])[0].round(5).tolist())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    here = HashedNgramEncoder(dim=64).encode([TEXTS[1]])[0].round(5).tolist()
    assert outputs == {f"{here}\n"}


def sklearn_cosines(texts: Sequence[str]) -> F32Array:
    """The local tier's features (word 1-2-grams, char_wb 2-5-grams, sublinear tf-idf), each block
    normalised, side by side: what the hashed encoder approximates."""
    blocks = [
        vectorizer.fit_transform(texts).toarray()
        for vectorizer in (
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        )
    ]
    rows = normalize(np.hstack(blocks))
    return np.asarray(rows @ rows.T, dtype=np.float32)


def test_with_many_dimensions_the_sketch_approximates_tfidf_cosines() -> None:
    """Hashing to 65,536 dimensions leaves almost no collisions: the cosines are the sparse TF-IDF ones
    (same n-grams, same smoothed idf, same sublinear tf)."""
    texts = [*TEXTS, "refund the duplicate charge on my invoice", "password reset email is missing"]
    encoder = HashedNgramEncoder.fit(texts, dim=1 << 16)
    vectors = encoder.encode(texts)
    expected = sklearn_cosines(texts)
    assert np.allclose(vectors @ vectors.T, expected, atol=0.02)
    assert expected[-2, 0] > 0.3  # the comparison is not between near-zero cosines only


# --- the store ----------------------------------------------------------------------------------


def test_example_text_is_what_the_tiers_see() -> None:
    ticket = TicketEvent.model_validate(
        {
            "event_id": "e1",
            "event_type": "ticket.created",
            "ticket_id": "t1",
            "subject": "Refund",
            "body": "Charged twice",
            "account_tier": "pro",
            "customer_id": "c1",
            "channel": "web",
            "created_at": datetime(2025, 1, 1, tzinfo=UTC),
        }
    )
    assert example_text(example(1, "Charged twice", "billing", subject="Refund")) == ticket_text(ticket)
    assert example_text(example(1, "Charged twice", "billing")) == "Charged twice"


def test_nearest_returns_the_obviously_most_similar_example_first() -> None:
    store = ExampleStore.build(examples())
    found = store.nearest("I still have not received the password reset email", k=3, min_similarity=0.0)
    assert found[0].example.example_id == "ex-1"
    assert [n.similarity for n in found] == sorted((n.similarity for n in found), reverse=True)
    assert len(found) == 3 and found[0].similarity > found[1].similarity + 0.1
    exact = store.nearest(TEXTS[3], k=1)
    assert exact[0].example.example_id == "ex-3" and exact[0].similarity == pytest.approx(1.0, abs=1e-2)


def test_the_floor_drops_weak_matches() -> None:
    store = ExampleStore.build(examples())
    query = "I forgot my password, the reset email never arrives"
    unfiltered = store.nearest(query, k=6, min_similarity=-1.0)
    floor = 0.3
    kept = store.nearest(query, k=6, min_similarity=floor)
    assert len(unfiltered) == 6
    assert kept == [n for n in unfiltered if n.similarity >= floor]
    assert 0 < len(kept) < 6
    assert store.nearest("zqxj vvkw", k=3) == []  # nothing shares its n-grams: below the default floor
    assert store.nearest("", k=3, min_similarity=-1.0) == []  # nothing to compare, whatever the floor


def test_add_makes_a_new_example_retrievable_at_once() -> None:
    store = ExampleStore.build(examples())
    query = "Webhook deliveries to our endpoint time out with error 504"
    assert store.nearest(query, k=1, min_similarity=0.0)[0].example.example_id != "correction-1"
    store.add([Example("correction-1", "", "Webhooks to our endpoint time out (504)", {"team": "bug"})])
    assert len(store) == len(TEXTS) + 1
    first = store.nearest(query, k=1)[0]
    assert first.example.example_id == "correction-1" and first.example.labels == {"team": "bug"}
    store.add([])
    assert len(store) == len(TEXTS) + 1


def test_k_larger_than_the_store_returns_every_example_and_k_0_none() -> None:
    store = ExampleStore.build(examples())
    found = store.nearest(TEXTS[0], k=50, min_similarity=-1.0)
    assert sorted(n.example.example_id for n in found) == sorted(f"ex-{n}" for n in range(len(TEXTS)))
    assert store.nearest(TEXTS[0], k=0) == []
    assert ExampleStore.build([]).nearest(TEXTS[0]) == []
    assert len(ExampleStore.build([])) == 0


def test_nearest_many_answers_like_nearest() -> None:
    store = ExampleStore.build(examples())
    queries = ["refund a double charge", "the app crashes", "upgrade to enterprise"]
    assert store.nearest_many(queries, k=2) == [store.nearest(query, k=2) for query in queries]
    assert store.nearest_many([], k=2) == []


def neighbour(number: int, label: str, similarity: float) -> Neighbour:
    return Neighbour(example(number, f"text {number}", label), similarity)


def test_keep_best_caps_each_label_and_stops_at_the_floor() -> None:
    ranked = [
        neighbour(1, "billing", 0.9),
        neighbour(2, "billing", 0.8),
        neighbour(3, "bug", 0.7),
        neighbour(4, "billing", 0.6),
        neighbour(5, "sales", 0.2),
    ]
    assert [n.example.example_id for n in keep_best(ranked, 3, 0.0, None)] == ["ex-1", "ex-2", "ex-3"]
    one_each = keep_best(ranked, 3, 0.0, max_per_label=1)
    assert [n.example.example_id for n in one_each] == ["ex-1", "ex-3", "ex-5"]
    assert [n.example.example_id for n in keep_best(ranked, 5, 0.5, 1)] == ["ex-1", "ex-3"]
    assert keep_best(ranked, 0, 0.0, None) == []


def test_max_per_label_shows_more_labels() -> None:
    store = ExampleStore.build(examples())
    query = "refund my invoice payment"
    plain = {n.example.labels["team"] for n in store.nearest(query, k=3, min_similarity=-1.0)}
    diverse = [n.example.labels["team"] for n in store.nearest(query, 3, -1.0, max_per_label=1)]
    assert len(diverse) == len(set(diverse)) == 3 and len(plain) <= 3


class KeywordEncoder:
    """A stand-in for a dense sentence encoder: one dimension per keyword."""

    keywords = ("refund", "password", "crash")
    name = "keywords"
    dim = len(keywords)

    def encode(self, texts: Sequence[str]) -> F32Array:
        rows = np.array([[float(k in t.lower()) for k in self.keywords] for t in texts], dtype=np.float32)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def test_any_text_encoder_can_be_plugged_in() -> None:
    encoder: TextEncoder = KeywordEncoder()
    store = ExampleStore.build(examples(), encoder=encoder)
    assert store.encoder is encoder and store.name.startswith("keywords+")
    found = store.nearest("the app keeps crashing", k=1)
    assert found[0].example.example_id == "ex-2" and found[0].similarity == pytest.approx(1.0, abs=1e-3)


def test_the_default_store_names_its_encoder_and_index() -> None:
    store = ExampleStore.build(examples(), dim=256)
    assert store.encoder.dim == 256
    assert store.name == "hashed-ngrams-tfidf-w12-c25-d256+hnsw-i8-m16"


def test_concatenated_encoders_average_their_cosines() -> None:
    ngrams = HashedNgramEncoder.fit(TEXTS, dim=256)
    both = ConcatenatedEncoder(((ngrams, 1.0), (KeywordEncoder(), 1.0)))
    assert both.dim == 256 + 3 and both.name == f"{ngrams.name}*1+keywords*1"
    query, stored = "the app crashed", TEXTS[2]
    rows = both.encode([query, stored])
    alone = [float(np.dot(*encoder.encode([query, stored]))) for encoder in (ngrams, KeywordEncoder())]
    assert float(rows[0] @ rows[1]) == pytest.approx(sum(alone) / 2, abs=1e-5)
    store = ExampleStore.build(examples(), encoder=both)
    assert store.nearest(query, k=1)[0].example.example_id == "ex-2"


def test_a_parallel_build_finds_the_same_obvious_neighbours() -> None:
    serial, parallel = ExampleStore.build(examples()), ExampleStore.build(examples(), threads=2)
    for text in TEXTS:
        assert serial.nearest(text, k=1) == parallel.nearest(text, k=1)


def test_measure_grows_a_file_with_edited_copies() -> None:
    rows = [("where is my card", "card_arrival"), ("my card was declined at the shop", "declined_card")]
    first, again = grown(rows, 6), grown(rows, 6)
    assert first == again  # seeded: the README's figures can be reproduced
    assert [e.body for e in first[:2]] == [text for text, _ in rows]
    assert all(e.body != rows[n % 2][0] for n, e in enumerate(first[2:], start=2))
    assert [e.labels["label"] for e in first] == ["card_arrival", "declined_card"] * 3
