"""Checks on the hand-written labeled tickets and the demo events that ship with the router."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TAXONOMY_PATH = ROOT / "consumer" / "data" / "taxonomy.yaml"
TRAINING_PATH = ROOT / "consumer" / "data" / "training.jsonl"
EVAL_PATH = ROOT / "tests" / "data" / "eval_labeled.jsonl"
SAMPLES_PATH = ROOT / "consumer" / "data" / "samples.jsonl"

MIN_PER_LABEL = {"training": 25, "eval": 6}
MIN_NON_ENGLISH_SHARE = 0.12
TIERS = {"free", "starter", "pro", "enterprise"}
CHANNELS = {"email", "web", "chat", "phone", "api"}
LANGUAGES = {"en", "es", "fr", "de", "pt", "it", "nl", "ja"}
LABELED_KEYS = {"id", "subject", "body", "account_tier", "channel", "language", "labels"}
SAMPLE_KEYS = {
    "schema_version",
    "event_id",
    "event_type",
    "ticket_id",
    "subject",
    "body",
    "account_tier",
    "author_role",
    "customer_id",
    "channel",
    "language",
    "created_at",
    "metadata",
}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:  # pragma: no cover - message only
            pytest.fail(f"{path.name}:{number} is not valid JSON: {exc}")
        assert isinstance(row, dict), f"{path.name}:{number} is not a JSON object"
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def axes() -> dict[str, set[str]]:
    taxonomy = yaml.safe_load(TAXONOMY_PATH.read_text(encoding="utf-8"))
    return {name: set(axis["labels"]) for name, axis in taxonomy["axes"].items()}


@pytest.fixture(scope="module")
def labeled() -> dict[str, list[dict[str, Any]]]:
    return {"training": _read_jsonl(TRAINING_PATH), "eval": _read_jsonl(EVAL_PATH)}


@pytest.fixture(scope="module")
def samples() -> list[dict[str, Any]]:
    return _read_jsonl(SAMPLES_PATH)


@pytest.mark.parametrize("name", ["training", "eval"])
def test_labeled_rows_are_well_formed(
    name: str, labeled: dict[str, list[dict[str, Any]]], axes: dict[str, set[str]]
) -> None:
    rows = labeled[name]
    assert rows, f"{name} set is empty"
    for row in rows:
        missing = LABELED_KEYS - row.keys()
        assert not missing, f"{row.get('id')}: missing {missing}"
        assert isinstance(row["subject"], str)
        assert isinstance(row["body"], str) and row["body"].strip(), f"{row['id']}: empty body"
        assert row["account_tier"] in TIERS, row["id"]
        assert row["channel"] in CHANNELS, row["id"]
        assert row["language"] in LANGUAGES, row["id"]
        assert set(row["labels"]) == set(axes), f"{row['id']}: axes {sorted(row['labels'])}"
        for axis, label in row["labels"].items():
            assert label in axes[axis], f"{row['id']}: {label!r} is not a label of axis {axis!r}"


@pytest.mark.parametrize("name", ["training", "eval"])
def test_every_label_has_enough_examples(
    name: str, labeled: dict[str, list[dict[str, Any]]], axes: dict[str, set[str]]
) -> None:
    minimum = MIN_PER_LABEL[name]
    for axis, labels in axes.items():
        counts = Counter(row["labels"][axis] for row in labeled[name])
        short = {label: counts[label] for label in labels if counts[label] < minimum}
        assert not short, f"{name}: axis {axis!r} has labels under {minimum} examples: {short}"


@pytest.mark.parametrize("name", ["training", "eval"])
def test_enough_non_english(name: str, labeled: dict[str, list[dict[str, Any]]]) -> None:
    rows = labeled[name]
    non_english = sum(row["language"] != "en" for row in rows)
    assert non_english / len(rows) >= MIN_NON_ENGLISH_SHARE, f"{name}: {non_english}/{len(rows)} non-English"


def test_ids_are_unique(labeled: dict[str, list[dict[str, Any]]]) -> None:
    ids = [row["id"] for rows in labeled.values() for row in rows]
    duplicates = [item for item, count in Counter(ids).items() if count > 1]
    assert not duplicates, f"duplicate ids: {duplicates}"


def test_no_duplicate_bodies_across_sets(labeled: dict[str, list[dict[str, Any]]]) -> None:
    bodies = [row["body"].strip() for rows in labeled.values() for row in rows]
    duplicates = [body[:60] for body, count in Counter(bodies).items() if count > 1]
    assert not duplicates, f"duplicate bodies: {duplicates}"


def test_samples_have_all_wire_keys(samples: list[dict[str, Any]]) -> None:
    assert samples
    for sample in samples:
        missing = SAMPLE_KEYS - sample.keys()
        assert not missing, f"{sample.get('event_id')}: missing {missing}"
        assert sample["schema_version"] == 1
        assert sample["event_type"] in {"ticket.created", "ticket.message_added"}
        assert sample["author_role"] in {"customer", "agent"}
        assert sample["account_tier"] in TIERS
        assert sample["channel"] in CHANNELS
        assert isinstance(sample["metadata"], dict)


def test_sample_event_ids_are_unique(samples: list[dict[str, Any]]) -> None:
    event_ids = [sample["event_id"] for sample in samples]
    assert len(event_ids) == len(set(event_ids))


def test_sample_replies_follow_an_earlier_ticket(samples: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    agent_replies = 0
    for sample in samples:
        if sample["event_type"] == "ticket.message_added":
            assert sample["ticket_id"] in seen, (
                f"{sample['event_id']}: reply to unknown {sample['ticket_id']}"
            )
            agent_replies += sample["author_role"] == "agent"
        elif sample["event_type"] == "ticket.created":
            seen.add(sample["ticket_id"])
    assert agent_replies >= 1
