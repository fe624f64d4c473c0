"""Shared fixtures: one embedded Tansu broker per test session, on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumer.kafka.embedded_broker import EmbeddedBroker


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
