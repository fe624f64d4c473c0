"""The ``local`` tier: scikit-learn models trained at start-up, no network, no cost.

One shared feature space (word and character TF-IDF and, with ``DENSE_ENCODER``, a sentence
vector from ``consumer.learn.dense``), one multinomial logistic regression per axis; the predicted
class probability is the confidence. Probabilities can be compared with the taxonomy's thresholds,
which is the whole point of a first tier: handle what it is sure of and pass the rest on.

lbfgs rather than the SGD fit this tier had before: on BANKING77 (one fold of the 5-fold CV, same
n-gram features) 90.5% against 88.9%, and 67.3% against 56.8% of queries covered at 98.5%
precision; it takes longer (about 40 s of CPU on 8,000 texts and 77 classes, 1 s on the bundled
set), which ``LOCAL_MODEL_CACHE`` takes off a restart. C = 10 and the dense block's weight 1 were
chosen by cross-validation on the training data (BANKING77 and the bundled training set; the
evaluation set was not used to choose them).

A single call costs about the same for one ticket as for a hundred, so predictions are
micro-batched: concurrent ``classify`` calls queue up and are answered by one ``predict``.

Fitting is sklearn's; predicting is not, because sklearn's was the router's largest CPU cost. Its
``transform`` builds every character n-gram of every ticket as a Python string (about 600 per
ticket) and looks each up in a dict. ``WordFeatures`` and ``CharFeatures`` compute the same matrix
(equal to sklearn's, tests/test_local.py) from integer n-gram keys with numpy, and ``StackedAxes``
scores all axes with one product per feature block instead of four ``predict_proba`` calls, with
sklearn's probability formula. Measured with ``time.process_time`` over 10,000 tickets (bundled
texts), best of 3, on a 2-core machine:

  predict, batches of 64:  340 -> 86 µs per ticket    (batches of 16: 510 -> 109 µs)
    after: character features 42, word features 17, scores 9, pydantic models 4.5 µs
  ticket-tools bench (b), router with the local tier: 0.70 -> 0.32 ms CPU per ticket,
    about 1,350 -> 3,000 tickets/s; training unchanged (about 1.2 s; keying the vocabularies
    adds about 0.05 s); peak RSS 189 -> 197 MB, mostly a stacked copy of the coefficients (6 MB)
  accuracy unchanged: the predictions are the same (eval_labeled.jsonl team 81.9, ticket_type
    73.1, urgency 73.8, sentiment 74.4 %; BANKING77 80/20 split 90.0 %)

Cheaper features were measured first and rejected: narrower character n-grams ((3, 4): 42% less
transform time) or ``analyzer="char"`` (slower: n-grams across words) cost 1.2-2.5 points on
urgency and ticket_type; a HashingVectorizer saved 22% and cost 3 points on ticket_type (no
min_df); words alone lost 5 points; ``max_features`` does not bind (17,585 character features).
Building the pydantic models without validation (``model_construct``) was slower (8 against 4 µs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from scipy import sparse  # type: ignore[import-untyped]
from scipy.special import expit, softmax  # type: ignore[import-untyped]
from sklearn import __version__ as sklearn_version
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from consumer import __version__
from consumer.classify.base import TierAnswer, ticket_text
from consumer.learn.encoder import TextEncoder
from consumer.learn.model_cache import ModelCache, cache_key
from consumer.taxonomy import Taxonomy
from schemas.events import AxisPrediction, Classification, TicketEvent, TierAttempt, TokenUsage

DEFAULT_C = 10.0
DENSE_WEIGHT = 1.0
MAX_ITERATIONS = 1_000
DEFAULT_TRAINING_RESOURCE = "training.jsonl"
# The most frequent word and character n-grams kept. lbfgs holds 20 vectors as long as all the
# coefficients (features x classes): uncapped (60,000 + 87,000 n-grams) fitting the bundled 4,167
# tickets peaked at 737 MB and took 44 s. At 30,000 each the cross-validated accuracy was the same
# (79.9% against 79.6%, mean of the four axes), the peak about 500 MB and the fit 25 s; BANKING77's
# vocabularies (24,000 and 14,000) are below both caps.
MAX_WORD_FEATURES = 30_000
MAX_CHAR_FEATURES = 30_000

U64Array = npt.NDArray[np.uint64]
IntArray = npt.NDArray[np.intp]
F64Array = npt.NDArray[np.float64]


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


def word_vectorizer() -> TfidfVectorizer:
    """Word uni- and bigrams: topic words and short phrases ("refund", "not working")."""
    return TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, max_features=MAX_WORD_FEATURES)


def char_vectorizer() -> TfidfVectorizer:
    """Character 2-5-grams inside words: typos, inflections, and languages the word tokens miss."""
    return TfidfVectorizer(
        analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True, max_features=MAX_CHAR_FEATURES
    )


# --- the vectorizers' transform, over integer keys -----------------------------------------------


def ngram_keys(symbols: U64Array, radix: int, ngram_range: tuple[int, int]) -> tuple[IntArray, U64Array]:
    """Every n-gram of a symbol sequence as one integer: its symbols read as digits in base ``radix``.

    Symbol 0 stands for anything that is in no feature of the vocabulary, and for the breaks between
    words and between documents, so an n-gram containing a 0 is dropped here instead of being looked
    up. Returns where each kept n-gram starts and its key. Keys of different lengths cannot collide,
    because a kept n-gram has no digit 0, so none in the leading place either.
    """
    min_n, max_n = ngram_range
    known = symbols != 0
    keys, valid = symbols, known
    kept_starts: list[IntArray] = []
    kept_keys: list[U64Array] = []
    for n in range(1, max_n + 1):
        if n > 1:  # extend every (n-1)-gram by the symbol that follows it
            keys = keys[:-1] * np.uint64(radix) + symbols[n - 1 :]
            valid = valid[:-1] & known[n - 1 :]
        if n >= min_n:
            starts = np.flatnonzero(valid)
            kept_starts.append(starts)
            kept_keys.append(keys[starts])
    return np.concatenate(kept_starts), np.concatenate(kept_keys)


@dataclass(frozen=True)
class NgramVocabulary:
    """A fitted TfidfVectorizer's vocabulary and idf, keyed by integers instead of strings.

    sklearn's ``transform`` builds every n-gram of every text as a Python string and looks it up in a
    dict one at a time; for the character n-grams that is most of the local tier's cost. With integer
    keys a whole batch is looked up by one numpy sort and one binary search, and the weighting below
    is sklearn's (1 + log tf, times idf, l2-normalised), so the matrix is the same.
    """

    keys: U64Array  # sorted
    columns: IntArray  # the vectorizer's column of each key
    idf: F64Array
    radix: int
    ngram_range: tuple[int, int]

    @classmethod
    def build(
        cls, vectorizer: TfidfVectorizer, symbol_of: Mapping[str, int], split: Callable[[str], Iterable[str]]
    ) -> NgramVocabulary | None:
        """Key every feature by its symbols (``split`` cuts a feature into them, ``symbol_of`` numbers
        them from 1). None when the longest n-gram's key would not fit in 64 bits, which takes an
        alphabet of over 7,130 characters for 5-grams: the caller then keeps sklearn's transform."""
        if (
            vectorizer.binary
            or not vectorizer.sublinear_tf
            or not vectorizer.use_idf
            or vectorizer.norm != "l2"
        ):
            raise ValueError("NgramVocabulary reproduces sublinear, idf-weighted, l2-normalised counts only")
        radix = len(symbol_of) + 1
        ngram_range: tuple[int, int] = vectorizer.ngram_range
        if radix ** ngram_range[1] > 2**64:
            return None
        keyed = []
        for feature, column in vectorizer.vocabulary_.items():
            key = 0
            for symbol in split(feature):
                key = key * radix + symbol_of[symbol]
            keyed.append((key, column))
        keyed.sort()
        return cls(
            keys=np.array([key for key, _ in keyed], dtype=np.uint64),
            columns=np.array([column for _, column in keyed], dtype=np.intp),
            idf=np.asarray(vectorizer.idf_, dtype=np.float64),
            radix=radix,
            ngram_range=ngram_range,
        )

    def tfidf(self, symbols: U64Array, document_of: IntArray, n_documents: int) -> Any:
        """The tf-idf rows (CSR) of documents laid end to end in ``symbols``, separated by a 0.

        ``document_of`` is the document of every symbol.
        """
        starts, keys = ngram_keys(symbols, self.radix, self.ngram_range)
        # Sorted queries make the binary searches about five times faster (measured on batches of
        # 64): consecutive searches walk the same path through the vocabulary.
        order = np.argsort(keys)
        keys = keys[order]
        slots = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        found = self.keys[slots] == keys
        documents = document_of[starts[order[found]]]
        return self.weighted_rows(documents, self.columns[slots[found]], n_documents)

    def weighted_rows(self, documents: IntArray, columns: IntArray, n_documents: int) -> Any:
        """One row per document from one (document, column) pair per n-gram occurrence."""
        n_features = len(self.idf)
        cells = documents.astype(np.int64) * n_features + columns
        cells.sort()  # by document, then column: equal pairs side by side, rows in CSR order
        firsts = np.flatnonzero(np.diff(cells, prepend=-1))
        counts = np.diff(firsts, append=len(cells))
        cell_rows, cell_columns = np.divmod(cells[firsts], n_features)
        values = (np.log(counts) + 1.0) * self.idf[cell_columns]
        norms = np.sqrt(np.bincount(cell_rows, weights=values * values, minlength=n_documents))
        values /= norms[cell_rows]
        indptr = np.zeros(n_documents + 1, dtype=np.int64)
        np.cumsum(np.bincount(cell_rows, minlength=n_documents), out=indptr[1:])
        return sparse.csr_matrix((values, cell_columns, indptr), shape=(n_documents, n_features))


class WordFeatures:
    """``transform`` of the fitted word vectorizer, over integer keys: the same matrix, 2x cheaper.

    The symbols are the tokens that occur in the vocabulary; any other token is a 0, and so is the
    break after each document, so no bigram spans two tickets.
    """

    def __init__(self, vectorizer: TfidfVectorizer) -> None:
        if vectorizer.analyzer != "word" or vectorizer.stop_words is not None:
            raise ValueError("WordFeatures reproduces the word analyzer without stop words only")
        self.vectorizer = vectorizer
        self.preprocess = vectorizer.build_preprocessor()
        self.tokenize = vectorizer.build_tokenizer()
        tokens = sorted({token for feature in vectorizer.vocabulary_ for token in feature.split()})
        self.token_ids = {token: number for number, token in enumerate(tokens, start=1)}
        self.vocabulary = NgramVocabulary.build(vectorizer, self.token_ids, str.split)

    def transform(self, texts: Sequence[str]) -> Any:
        if self.vocabulary is None:
            return self.vectorizer.transform(texts)
        token_id = self.token_ids.get
        ids: list[int] = []
        lengths: list[int] = []
        for text in texts:
            tokens = self.tokenize(self.preprocess(text))
            ids += [token_id(token, 0) for token in tokens]
            ids.append(0)
            lengths.append(len(tokens) + 1)
        document_of = np.repeat(np.arange(len(texts)), lengths)
        return self.vocabulary.tfidf(np.array(ids, dtype=np.uint64), document_of, len(texts))


class CharFeatures:
    """``transform`` of the fitted ``char_wb`` vectorizer, over integer keys: the same matrix, 5x cheaper.

    sklearn pads each whitespace-separated word with a space on both sides and takes n-grams inside
    padded words only. Here the padded words of a whole batch are laid end to end with a newline
    after each: a newline is in no feature, so it is a 0 and no n-gram crosses it. The characters
    become symbols through a table indexed by code point, in one numpy gather.
    """

    def __init__(self, vectorizer: TfidfVectorizer) -> None:
        if vectorizer.analyzer != "char_wb" or vectorizer.ngram_range[0] > 3:
            # A padded word has at least 3 characters; sklearn's special case for shorter ones is not here.
            raise ValueError("CharFeatures reproduces char_wb n-grams from length 3 or less only")
        self.vectorizer = vectorizer
        self.preprocess = vectorizer.build_preprocessor()
        alphabet = sorted({char for feature in vectorizer.vocabulary_ for char in feature})
        symbol_of = {char: number for number, char in enumerate(alphabet, start=1)}
        self.vocabulary = NgramVocabulary.build(vectorizer, symbol_of, iter)
        # The last entry stays 0: code points above the alphabet's are clipped to it.
        self.symbol_table = np.zeros(ord(alphabet[-1]) + 2, dtype=np.uint64)
        for char, number in symbol_of.items():
            self.symbol_table[ord(char)] = number

    def transform(self, texts: Sequence[str]) -> Any:
        if self.vocabulary is None:
            return self.vectorizer.transform(texts)
        segments = []
        for text in texts:
            words = self.preprocess(text).split()  # what sklearn's char_wb splits on
            segments.append(" " + " \n ".join(words) + " \n" if words else "")
        # "surrogatepass": a lone surrogate is one more character to sklearn, not an error.
        code_points = np.frombuffer("".join(segments).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        symbols = self.symbol_table[np.minimum(code_points, len(self.symbol_table) - 1)]
        document_of = np.repeat(np.arange(len(texts)), [len(segment) for segment in segments])
        return self.vocabulary.tfidf(symbols, document_of, len(texts))


# --- every axis in one product ------------------------------------------------------------------


@dataclass(frozen=True)
class AxisAnswers:
    """One axis's most probable label for every ticket of a batch, and its probability."""

    axis: str
    labels: list[str]
    confidences: list[float]  # rounded to 4 decimals


@dataclass(frozen=True)
class AxisColumns:
    """Where one axis's decision values sit among the stacked models' columns."""

    axis: str
    classes: list[str]
    start: int
    stop: int


class StackedAxes:
    """Every axis's linear model side by side in one weight matrix.

    Four ``predict_proba`` calls each redo a sparse product and sklearn's input validation; one
    product per feature block against the stacked coefficients scores every axis at once. The
    probabilities are LogisticRegression.predict_proba's: the softmax of an axis's decision values
    (multinomial), and for a two-class axis, which has a single decision value, its sigmoid as the
    second class's probability.
    """

    def __init__(self, models: Mapping[str, LogisticRegression], block_widths: Sequence[int]) -> None:
        self.axes: list[AxisColumns] = []
        start = 0
        for axis, model in models.items():
            stop = start + len(model.coef_)
            self.axes.append(AxisColumns(axis, [str(label) for label in model.classes_], start, stop))
            start = stop
        weights = np.vstack([np.asarray(model.coef_, dtype=np.float64) for model in models.values()]).T
        bounds = np.cumsum(block_widths)[:-1]
        self.weight_blocks = [np.ascontiguousarray(block) for block in np.split(weights, bounds)]
        self.intercepts = np.concatenate(
            [np.asarray(m.intercept_, dtype=np.float64) for m in models.values()]
        )

    def decision_values(self, blocks: Sequence[Any]) -> F64Array:
        """The decision value of every class of every axis, one row per ticket."""
        scores: F64Array = sum(
            (block @ weights for block, weights in zip(blocks, self.weight_blocks, strict=True)),
            start=self.intercepts,
        )
        return scores

    def probabilities(self, scores: F64Array, axis: AxisColumns) -> F64Array:
        """``predict_proba`` of one axis, from the decision values of all axes."""
        if axis.stop - axis.start == 1:
            positive: F64Array = expit(scores[:, axis.start])
            return np.column_stack([1.0 - positive, positive])
        probabilities: F64Array = softmax(scores[:, axis.start : axis.stop], axis=1)
        return probabilities

    def answers(self, blocks: Sequence[Any]) -> list[AxisAnswers]:
        """Per axis, the most probable label of every ticket and its probability."""
        scores = self.decision_values(blocks)
        answers = []
        for axis in self.axes:
            probabilities = self.probabilities(scores, axis)
            best = probabilities.argmax(axis=1)
            confidences = probabilities[np.arange(len(best)), best].tolist()
            answers.append(
                AxisAnswers(
                    axis.axis,
                    [axis.classes[index] for index in best.tolist()],
                    [round(confidence, 4) for confidence in confidences],
                )
            )
        return answers


@dataclass(frozen=True)
class FittedParts:
    """What fitting produces, and all a saved model needs: the prediction path is rebuilt from it."""

    words: TfidfVectorizer
    chars: TfidfVectorizer
    models: dict[str, LogisticRegression]
    dense_name: str  # the encoder the models were fitted with ("" for none)


class LocalModel:
    """Fitted per-axis models over a shared feature space. Synchronous and pure once fitted.

    The features are the word and the character tf-idf rows and, with a dense encoder, its
    sentence vector scaled by ``DENSE_WEIGHT``; each axis has a multinomial logistic regression
    (lbfgs, inverse regularisation ``C``).
    """

    word_features: WordFeatures
    char_features: CharFeatures
    stacked: StackedAxes
    parts: FittedParts

    def __init__(self, taxonomy: Taxonomy, dense: TextEncoder | None = None, c: float = DEFAULT_C) -> None:
        self.taxonomy = taxonomy
        self.dense = dense
        self.c = c
        self.version = ""
        """Short hash of everything fitted on (``fitted_key``), set by ``fit_local_model``: a
        retrain on corrections gets a new one, so a routed ticket names the model that decided it."""

    @property
    def name(self) -> str:
        """The model named in every routed ticket it decided: its features and its fit."""
        return f"local-tfidf+{self.dense.name}-lr" if self.dense is not None else "local-tfidf-lr"

    @property
    def words(self) -> TfidfVectorizer:
        return self.parts.words

    @property
    def chars(self) -> TfidfVectorizer:
        return self.parts.chars

    @property
    def models(self) -> dict[str, LogisticRegression]:
        return self.parts.models

    def fit(self, examples: Sequence[LabeledText]) -> LocalModel:
        """Fit with sklearn itself; the faster transform is derived from the fitted vectorizers."""
        check_training_labels(examples, self.taxonomy)
        texts = [ex.text for ex in examples]
        words, chars = word_vectorizer(), char_vectorizer()
        blocks = [words.fit_transform(texts), chars.fit_transform(texts)]
        if self.dense is not None:
            blocks.append(sparse.csr_matrix(self.dense_rows(texts)))
        matrix = sparse.hstack(blocks).tocsr()
        models = {}
        # One BLAS thread: lbfgs's products are small, and threads sized to the machine's cores (not
        # the pod's CPU limit) spin against each other: 4x the CPU for the same fit on 2 busy cores.
        with threadpool_limits(limits=1):
            for axis in self.taxonomy.axes:
                targets = [ex.labels[axis] for ex in examples]
                models[axis] = LogisticRegression(C=self.c, max_iter=MAX_ITERATIONS).fit(matrix, targets)
        return self.assemble(FittedParts(words, chars, models, self.dense.name if self.dense else ""))

    def assemble(self, parts: FittedParts) -> LocalModel:
        """Build the prediction path from fitted parts (fresh, or read back from the model cache)."""
        if parts.dense_name != (self.dense.name if self.dense is not None else ""):
            raise ValueError(f"fitted with encoder {parts.dense_name!r}, not {self.name!r}")
        self.parts = parts
        self.word_features = WordFeatures(parts.words)
        self.char_features = CharFeatures(parts.chars)
        widths = [len(parts.words.vocabulary_), len(parts.chars.vocabulary_)]
        if self.dense is not None:
            widths.append(self.dense.dim)
        self.stacked = StackedAxes(parts.models, widths)
        return self

    def dense_rows(self, texts: Sequence[str]) -> F64Array:
        assert self.dense is not None
        rows: F64Array = self.dense.encode(texts).astype(np.float64) * DENSE_WEIGHT
        return rows

    def feature_blocks(self, texts: Sequence[str]) -> list[Any]:
        """The word, the character and the dense rows, in the column order the models were fitted on."""
        blocks = [self.word_features.transform(texts), self.char_features.transform(texts)]
        if self.dense is not None:
            blocks.append(self.dense_rows(texts))
        return blocks

    def transform(self, texts: Iterable[str]) -> Any:
        """The feature matrix the models see (sparse): word, character, then dense columns."""
        blocks = self.feature_blocks(list(texts))
        return sparse.hstack([sparse.csr_matrix(block) for block in blocks]).tocsr()

    def predict(self, texts: Sequence[str]) -> list[Classification]:
        """The whole batch at once: the feature passes and one product per feature block.

        The pydantic models are validated: ``model_construct`` measured slower (pydantic 2.14).
        """
        if not texts:
            return []
        answers = self.stacked.answers(self.feature_blocks(texts))
        return [
            Classification(
                axes={
                    answer.axis: AxisPrediction(label=answer.labels[row], confidence=answer.confidences[row])
                    for answer in answers
                },
                summary="",
                routing_reason="local model",
            )
            for row in range(len(texts))
        ]


@dataclass
class _Pending:
    text: str
    future: asyncio.Future[tuple[Classification, str]]


class LocalTier:
    """Async face of LocalModel that batches concurrent requests into one prediction."""

    name = "local"

    def __init__(self, local_model: LocalModel, max_batch: int = 256) -> None:
        self.local_model = local_model
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def model(self) -> str:
        """The deciding model and its version: ``local-tfidf+wordllama-l2_supercat-256-lr@3f9a0c1d2b``."""
        model = self.local_model
        return f"{model.name}@{model.version}" if model.version else model.name

    def swap(self, local_model: LocalModel) -> None:
        """Use ``local_model`` from the next batch on. A batch is predicted in one synchronous call, so
        no ticket sees half of each model and none waits for the swap."""
        self.local_model = local_model

    async def classify(self, ticket: TicketEvent) -> TierAnswer:
        started = time.perf_counter()
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._drain_forever(), name="local-tier-batcher")
        assert self._queue is not None
        future: asyncio.Future[tuple[Classification, str]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(ticket_text(ticket), future))
        classification, model = await future
        attempt = TierAttempt(
            tier=self.name,
            model=model,
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
        model = self.model
        try:
            predictions = self.local_model.predict([p.text for p in batch])
        except Exception as exc:  # a model failure must reach every waiting ticket, not kill the batcher
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        for pending, prediction in zip(batch, predictions, strict=True):
            if not pending.future.done():
                pending.future.set_result((prediction, model))

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None


_TRAINED: dict[str, LocalModel] = {}
MODEL_VERSION_CHARS = 10
TRAINED_CACHE_SIZE = 2
MODEL_FORMAT = "local-model-1"
"""Part of the disk cache's key: change it whenever ``FittedParts`` or the fitting changes meaning."""


def fitted_key(taxonomy: Taxonomy, examples: Sequence[LabeledText], dense: TextEncoder | None) -> str:
    """What identifies a fitted model: every input of the fit and the versions of the code doing it."""
    labeled = orjson.dumps(
        [[example.text, example.labels] for example in examples], option=orjson.OPT_SORT_KEYS
    )
    return cache_key(
        [
            MODEL_FORMAT,
            __version__,
            sklearn_version,
            np.__version__,
            f"C={DEFAULT_C};dense={dense.name if dense else 'none'}*{DENSE_WEIGHT};iter={MAX_ITERATIONS}"
            f";ngrams={MAX_WORD_FEATURES},{MAX_CHAR_FEATURES}",
            taxonomy.fingerprint(),
            labeled,
        ]
    )


def train_local_model(
    taxonomy: Taxonomy,
    training_path: Path | None = None,
    dense: TextEncoder | None = None,
    cache_dir: Path | None = None,
) -> LocalModel:
    """Fit, or reuse a model fitted on the same inputs: this process's (tests and tools build several
    pipelines), or one saved in ``cache_dir`` by an earlier start.

    Only the two most recent models stay in memory, so a cross-validation run does not hold every
    fold's model.
    """
    return fit_local_model(taxonomy, read_training_jsonl(training_path), dense, cache_dir)


def fit_local_model(
    taxonomy: Taxonomy,
    examples: Sequence[LabeledText],
    dense: TextEncoder | None = None,
    cache_dir: Path | None = None,
) -> LocalModel:
    """``train_local_model`` on examples already read: the training file plus what corrections
    taught (a retrain); a model fitted on the same examples before is reused."""
    key = fitted_key(taxonomy, examples, dense)
    model = _TRAINED.pop(key, None)
    if model is None:
        model = LocalModel(taxonomy, dense)
        cache = ModelCache(cache_dir) if cache_dir is not None else None
        parts = cache.load(key) if cache is not None else None
        if isinstance(parts, FittedParts):
            model.assemble(parts)
        else:
            model.fit(examples)
            if cache is not None:
                cache.save(key, model.parts)
        model.version = key[:MODEL_VERSION_CHARS]
    _TRAINED[key] = model
    while len(_TRAINED) > TRAINED_CACHE_SIZE:
        del _TRAINED[next(iter(_TRAINED))]
    return model
