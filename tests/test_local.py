"""The local tier's fast prediction path gives what sklearn itself would: the same tf-idf matrix
(the integer-keyed transform against the fitted vectorizers' own ``transform``) and the same
probabilities (the stacked product against each LogisticRegression's ``predict_proba``), with and
without the dense encoder's block; and the disk cache gives back the model it was given."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse  # type: ignore[import-untyped]

from consumer.classify.local import (
    DENSE_WEIGHT,
    CharFeatures,
    LabeledText,
    LocalModel,
    char_vectorizer,
    read_training_jsonl,
    train_local_model,
)
from consumer.learn.dense import dense_encoder
from consumer.taxonomy import Taxonomy, load_taxonomy, parse_taxonomy

EVAL_LABELED = Path(__file__).resolve().parent / "data" / "eval_labeled.jsonl"

AWKWARD_TEXTS = [
    "",
    "   \n\t ",
    "a",
    "I",
    "İstanbul ÇAĞ straße STRASSE",
    "😀 emoji 😀😀 beyond the BMP",
    "lone \ud800 surrogate",
    "x" * 5_000,
    "日本語のテキスト 文字化け",
    "tabs\tand\u2003em spaces\x1cand\u00a0nbsp",
    "\x00 nul \x00",
    "refund refund refund REFUND",
    "Re: Re: Fwd: invoice #4411 - charged twice!!!",
]


@pytest.fixture(scope="module", params=["none", "wordllama"])
def model(request: pytest.FixtureRequest) -> LocalModel:
    return train_local_model(load_taxonomy(), dense=dense_encoder(request.param))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [ex.text for ex in read_training_jsonl()] + [ex.text for ex in read_training_jsonl(EVAL_LABELED)]


def assert_same_matrix(fast: Any, reference: Any) -> None:
    assert fast.shape == reference.shape
    assert fast.nnz == reference.nnz
    if reference.nnz:
        assert abs(fast - reference).max() <= 1e-12


def assert_same_predictions(model: LocalModel, texts: list[str]) -> None:
    """Labels and 4-decimal confidences as sklearn's predict_proba on sklearn's own features."""
    blocks = [model.words.transform(texts), model.chars.transform(texts)]
    if model.dense is not None:
        blocks.append(sparse.csr_matrix(model.dense.encode(texts).astype(np.float64) * DENSE_WEIGHT))
    reference = sparse.hstack(blocks).tocsr()
    predictions = model.predict(texts)
    for axis, classifier in model.models.items():
        probabilities = classifier.predict_proba(reference)
        best = probabilities.argmax(axis=1)
        for row, prediction in enumerate(predictions):
            assert prediction.axes[axis].label == classifier.classes_[best[row]]
            assert prediction.axes[axis].confidence == pytest.approx(probabilities[row, best[row]], abs=5e-5)


def test_features_equal_sklearn_transform(model: LocalModel, texts: list[str]) -> None:
    batch = texts + AWKWARD_TEXTS
    assert_same_matrix(model.word_features.transform(batch), model.words.transform(batch))
    assert_same_matrix(model.char_features.transform(batch), model.chars.transform(batch))


# Characters of the training vocabulary mixed with anything, so that generated texts hit features.
TEXTS = st.text(
    alphabet=st.sampled_from(list("abcdeinorstu ÄßéİI\n\t-!'日本")) | st.characters(), max_size=80
)


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(TEXTS, min_size=1, max_size=6))
def test_features_equal_sklearn_transform_on_any_text(model: LocalModel, batch: list[str]) -> None:
    assert_same_matrix(model.word_features.transform(batch), model.words.transform(batch))
    assert_same_matrix(model.char_features.transform(batch), model.chars.transform(batch))


def test_predictions_equal_sklearn_predict_proba(model: LocalModel, texts: list[str]) -> None:
    assert_same_predictions(model, texts[:300] + AWKWARD_TEXTS)


def test_probabilities_are_sklearns_to_rounding(model: LocalModel, texts: list[str]) -> None:
    matrix = model.transform(texts)
    scores = model.stacked.decision_values(model.feature_blocks(texts))
    for axis in model.stacked.axes:
        expected = model.models[axis.axis].predict_proba(matrix)
        np.testing.assert_allclose(model.stacked.probabilities(scores, axis), expected, rtol=0, atol=1e-12)


def test_empty_batch_and_blank_texts(model: LocalModel) -> None:
    assert model.predict([]) == []
    words, chars, *dense = model.feature_blocks(["", " \n "])
    assert words.nnz == chars.nnz == 0
    if dense:  # no token at all is a zero vector; whitespace is a token to the dense encoder
        assert not dense[0][0].any()
    else:
        blank = model.predict(["", " "])
        assert blank[0] == blank[1]
    assert_same_predictions(model, ["", " "])


def two_label_taxonomy() -> Taxonomy:
    return parse_taxonomy(
        {
            "axes": {
                "spam": {"labels": {"no": "A real ticket.", "yes": "Spam."}},
                "team": {"labels": {"billing": "Money.", "product": "The app.", "general": "Other."}},
            },
            "routing": [{"name": "all", "queue": "tickets.{team}"}],
        }
    )


def test_a_two_label_axis_has_sklearns_probabilities(texts: list[str]) -> None:
    rng = random.Random(3)
    teams = ["billing", "product", "general"]
    examples = [
        LabeledText(text, {"spam": rng.choice(["no", "yes"]), "team": teams[len(text) % 3]})
        for text in texts[:200]
    ]
    model = LocalModel(two_label_taxonomy()).fit(examples)
    assert [axis.stop - axis.start for axis in model.stacked.axes] == [1, 3]
    assert_same_predictions(model, texts[200:300] + AWKWARD_TEXTS)


def test_an_alphabet_too_large_for_integer_keys_keeps_sklearns_transform() -> None:
    """Over 7,130 characters in the character features: 5-gram keys would overflow 64 bits."""
    chars = [chr(0x4E00 + number) for number in range(7_400)]
    # Every character in two documents, so that min_df=2 keeps its n-grams.
    documents = [" ".join(chars[start : start + 40]) for start in range(0, len(chars), 20)]
    vectorizer = char_vectorizer().fit(documents)
    features = CharFeatures(vectorizer)
    assert features.vocabulary is None
    assert_same_matrix(features.transform(documents[:5]), vectorizer.transform(documents[:5]))
