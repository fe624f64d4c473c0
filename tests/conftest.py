"""Shared fixtures: one embedded Tansu broker per test session, on a free loopback port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.kafka.embedded_broker import EmbeddedBroker


@pytest.fixture(scope="session", autouse=True)
def shared_local_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every service this session starts, in-process or as a subprocess, reads the local model from
    one disk cache (``LOCAL_MODEL_CACHE``) instead of fitting it again (seconds of CPU each), the way
    a restarted pod does. The default model is fitted once here, before any test waits on a start."""
    from consumer.classify.local import train_local_model
    from consumer.learn.dense import dense_encoder
    from consumer.taxonomy import load_taxonomy

    directory = tmp_path_factory.mktemp("local-models")
    directory.chmod(0o700)
    previous = os.environ.get("LOCAL_MODEL_CACHE")
    os.environ["LOCAL_MODEL_CACHE"] = str(directory)
    train_local_model(load_taxonomy(), None, dense_encoder("wordllama"), directory)
    yield directory
    if previous is None:
        os.environ.pop("LOCAL_MODEL_CACHE", None)
    else:
        os.environ["LOCAL_MODEL_CACHE"] = previous


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """Memory storage: each test isolates itself with unique topic and group names."""
    with EmbeddedBroker(port=None) as running:
        yield running


@pytest.fixture(scope="session")
def bootstrap(broker: EmbeddedBroker) -> str:
    return broker.bootstrap_servers


@pytest.fixture(scope="session")
def training_texts() -> list[str]:
    """Realistic ticket texts (the bundled training set) to feed the router."""
    from consumer.classify.local import read_training_jsonl

    return [example.text for example in read_training_jsonl()]
