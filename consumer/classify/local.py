"""The ``local`` tier: scikit-learn models trained at start-up, no network, no cost.

One shared word + character TF-IDF feature space, one linear model per axis trained on the
logistic loss with SGD; the predicted class probability is the confidence. The logistic loss gives
probabilities that can be compared with the taxonomy's thresholds, which is the whole point of a
first tier: handle what it is sure of and pass the rest on. SGD rather than lbfgs because it trains
in about a second instead of tens of seconds on the bundled set, with the same accuracy (measured
on tests/data/eval_labeled.jsonl), and training happens at every start-up.

A single sklearn call costs about the same for one ticket as for a hundred, so predictions are
micro-batched: concurrent ``classify`` calls queue up and are answered by one ``predict_proba``
per axis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import FeatureUnion

from consumer.classify.base import TierAnswer, ticket_text
from consumer.taxonomy import Taxonomy
from schemas.events import AxisPrediction, Classification, TicketEvent, TierAttempt, TokenUsage

LOCAL_MODEL_NAME = "local-tfidf-sgd"
DEFAULT_TRAINING_RESOURCE = "training.jsonl"


class TrainingDataError(ValueError):
    """The labeled file cannot train the local tier; one line for the operator."""


@dataclass(frozen=True)
class LabeledText:
    text: str
    labels: dict[str, str]


def read_training_jsonl(path: Path | None = None) -> list[LabeledText]:
    """The shipped training set, or a JSONL file of {subject, body, labels: {axis: label}}."""
    if path is None:
        raw = resources.files("consumer.data").joinpath(DEFAULT_TRAINING_RESOURCE).read_bytes()
        source = f"<default {DEFAULT_TRAINING_RESOURCE}>"
    else:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise TrainingDataError(f"LOCAL_TRAINING_PATH: cannot read {path}: {exc.strerror}") from None
        source = str(path)
    examples = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
            subject, body = row.get("subject", ""), row["body"]
            examples.append(LabeledText(f"{subject}\n{body}" if subject else body, dict(row["labels"])))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise TrainingDataError(
                f"{source}:{number}: expected JSON with 'body' and 'labels' ({exc})"
            ) from None
    return examples


def check_training_labels(examples: Sequence[LabeledText], taxonomy: Taxonomy) -> None:
    """Every axis needs at least two labels seen, and no label outside the taxonomy."""
    for axis_name, axis in taxonomy.axes.items():
        seen = {ex.labels.get(axis_name) for ex in examples}
        unknown = sorted(str(label) for label in seen - set(axis.labels))
        if unknown:
            raise TrainingDataError(
                f"training data: axis {axis_name!r} has labels outside the taxonomy: "
                f"{', '.join(unknown[:5])} (allowed: {', '.join(axis.labels)})"
            )
        if len(seen) < 2:
            raise TrainingDataError(
                f"training data: axis {axis_name!r} needs examples of at least two labels"
            )


class LocalModel:
    """Fitted per-axis models over a shared feature space. Synchronous and pure once fitted."""

    def __init__(self, taxonomy: Taxonomy, alpha: float = 1e-4, epochs: int = 50, seed: int = 0) -> None:
        self.taxonomy = taxonomy
        self.alpha = alpha
        self.epochs = epochs
        self.seed = seed
        self.features = FeatureUnion(
            [
                (
                    "words",
                    TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, max_features=60_000),
                ),
                (
                    "chars",
                    TfidfVectorizer(
                        analyzer="char_wb",
                        ngram_range=(2, 5),
                        min_df=2,
                        sublinear_tf=True,
                        max_features=120_000,
                    ),
                ),
            ]
        )
        self.models: dict[str, SGDClassifier] = {}

    def fit(self, examples: Sequence[LabeledText]) -> LocalModel:
        check_training_labels(examples, self.taxonomy)
        matrix = self.features.fit_transform([ex.text for ex in examples])
        for axis in self.taxonomy.axes:
            targets = [ex.labels[axis] for ex in examples]
            model = SGDClassifier(
                loss="log_loss", alpha=self.alpha, max_iter=self.epochs, tol=None, random_state=self.seed
            )
            model.fit(matrix, targets)
            self.models[axis] = model
        return self

    def transform(self, texts: Iterable[str]) -> Any:
        return self.features.transform(list(texts))

    def predict(self, texts: Sequence[str]) -> list[Classification]:
        """One sklearn call per axis for the whole batch."""
        if not texts:
            return []
        matrix = self.transform(texts)
        per_axis: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for axis, model in self.models.items():
            probabilities = model.predict_proba(matrix)
            best = probabilities.argmax(axis=1)
            per_axis[axis] = (model.classes_[best], probabilities[np.arange(len(texts)), best])
        results = []
        for row in range(len(texts)):
            axes = {
                axis: AxisPrediction(label=str(labels[row]), confidence=round(float(confidences[row]), 4))
                for axis, (labels, confidences) in per_axis.items()
            }
            results.append(Classification(axes=axes, summary="", routing_reason="local model"))
        return results


@dataclass
class _Pending:
    text: str
    future: asyncio.Future[Classification]


class LocalTier:
    """Async face of LocalModel that batches concurrent requests into one prediction."""

    name = "local"
    model = LOCAL_MODEL_NAME

    def __init__(self, local_model: LocalModel, max_batch: int = 256) -> None:
        self.local_model = local_model
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def classify(self, ticket: TicketEvent) -> TierAnswer:
        started = time.perf_counter()
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._drain_forever(), name="local-tier-batcher")
        assert self._queue is not None
        future: asyncio.Future[Classification] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(ticket_text(ticket), future))
        classification = await future
        attempt = TierAttempt(
            tier=self.name,
            model=self.model,
            outcome="answered",
            latency_ms=(time.perf_counter() - started) * 1000,
            usage=TokenUsage(),
        )
        return TierAnswer(classification, attempt)

    async def _drain_forever(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            # Let the callers scheduled in this loop iteration join the batch.
            await asyncio.sleep(0)
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._answer(batch)

    def _answer(self, batch: list[_Pending]) -> None:
        try:
            predictions = self.local_model.predict([p.text for p in batch])
        except Exception as exc:  # a model failure must reach every waiting ticket, not kill the batcher
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        for pending, prediction in zip(batch, predictions, strict=True):
            if not pending.future.done():
                pending.future.set_result(prediction)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None


_TRAINED: dict[tuple[str, str], LocalModel] = {}
TRAINED_CACHE_SIZE = 2


def train_local_model(taxonomy: Taxonomy, training_path: Path | None = None) -> LocalModel:
    """Train, or reuse the model this process trained on the same taxonomy and file.

    A fitted model is read-only, so tests and tools that build several pipelines share one; only
    the two most recent are kept, so a cross-validation run does not hold every fold's model.
    """
    key = (taxonomy.fingerprint(), str(Path(training_path).resolve()) if training_path else "<bundled>")
    model = _TRAINED.pop(key, None) or LocalModel(taxonomy).fit(read_training_jsonl(training_path))
    _TRAINED[key] = model
    while len(_TRAINED) > TRAINED_CACHE_SIZE:
        del _TRAINED[next(iter(_TRAINED))]
    return model
