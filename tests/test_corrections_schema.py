"""The ``Correction`` wire model and its check against a taxonomy (issue 13, item 1). Pure: no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import jsonschema
import orjson
import pytest
from pydantic import ValidationError

from consumer.taxonomy import Taxonomy, load_taxonomy, parse_taxonomy
from producer_tools.correct import CorrectionMismatch, check_against_taxonomy
from schemas.codec import decode, encode
from schemas.corrections import Correction, CorrectionSource
from schemas.export import SCHEMA_DIR, rendered_schemas

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)

SMALL = parse_taxonomy(
    {
        "name": "small",
        "axes": {
            "team": {"labels": {"billing": "money", "security": "threats"}},
            "urgency": {"labels": {"high": "now", "low": "later"}},
        },
        "routing": [{"name": "default", "when": {}, "queue": "{team}-{urgency}"}],
    }
)


def correction(**changes: Any) -> Correction:
    fields: dict[str, Any] = {
        "ticket_id": "T-1",
        "event_id": "e-1",
        "labels": {"team": "billing"},
        "source": "agent",
        "actor": "agent-42",
        "corrected_at": NOW,
    }
    fields.update(changes)
    return Correction.model_validate(fields)


# ---------------------------------------------------------------------------- the model


def test_defaults_and_round_trip() -> None:
    first, second = correction(), correction()
    assert first.schema_version == 1 and first.source is CorrectionSource.AGENT
    assert uuid.UUID(first.correction_id) != uuid.UUID(second.correction_id)  # a fresh uuid4 each
    assert (first.queue, first.subject, first.body, first.language) == (None, "", None, None)
    assert decode(Correction, encode(first)) == first


def test_a_queue_override_alone_is_a_correction_but_nothing_at_all_is_not() -> None:
    assert correction(labels={}, queue="billing-high").fields_corrected == ["queue"]
    assert correction(queue="billing-high").fields_corrected == ["team", "queue"]
    with pytest.raises(ValidationError, match="at least one corrected label or a queue"):
        correction(labels={})


def test_an_import_carries_the_ticket_text_itself() -> None:
    imported = correction(
        source="import", subject="Refund", body="Charged twice, please refund", language="en-GB"
    )
    assert imported.source is CorrectionSource.IMPORT and imported.body == "Charged twice, please refund"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"event_id": ""}, "event_id"),
        ({"ticket_id": None}, "ticket_id"),
        ({"actor": ""}, "actor"),
        ({"actor": "a" * 201}, "actor"),
        ({"source": "robot"}, "source"),
        ({"corrected_at": "2026-11-20T09:15:00"}, "corrected_at"),  # no timezone
        ({"subject": "s" * 2_001}, "subject"),
        ({"language": "x" * 36}, "language"),
        ({"queue": ""}, "queue"),
        ({"labels": {"team": ""}}, "labels"),
        ({"schema_version": 2}, "schema_version"),
    ],
)
def test_invalid_fields_are_refused(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        correction(**changes)
    assert caught.value.errors()[0]["loc"][0] == field


def test_unknown_fields_are_ignored_so_producers_can_upgrade_first() -> None:
    raw = orjson.loads(encode(correction()))
    assert decode(Correction, orjson.dumps({**raw, "reason": "moved by lead"})) == correction(
        correction_id=raw["correction_id"]
    )


# ---------------------------------------------------------------------------- exported JSON Schema


def test_the_exported_json_schema_includes_correction_and_is_current() -> None:
    assert (SCHEMA_DIR / "Correction.json").read_bytes() == rendered_schemas()["Correction.json"]


def test_the_json_schema_refuses_a_correction_that_corrects_nothing() -> None:
    """What a producer in another language validates against says the same as the Python model."""
    schema = orjson.loads((SCHEMA_DIR / "Correction.json").read_bytes())
    valid = orjson.loads(encode(correction()))
    jsonschema.validate(valid, schema)
    jsonschema.validate({**valid, "labels": {}, "queue": "billing-high"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**valid, "labels": {}, "queue": None}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({key: value for key, value in valid.items() if key != "labels"}, schema)


# ---------------------------------------------------------------------------- against the taxonomy


@pytest.mark.parametrize(
    "changes",
    [
        {"labels": {"team": "security", "urgency": "low"}},
        {"labels": {}, "queue": "security-high"},
    ],
)
def test_labels_and_queues_of_the_taxonomy_pass(changes: dict[str, Any]) -> None:
    check_against_taxonomy(correction(**changes), SMALL)


def test_an_unknown_label_names_the_axis_and_the_allowed_labels() -> None:
    with pytest.raises(CorrectionMismatch) as caught:
        check_against_taxonomy(correction(labels={"team": "billing", "urgency": "asap"}), SMALL)
    assert str(caught.value) == "'asap' is not a label of axis 'urgency' (allowed: high, low)"
    assert (caught.value.field, caught.value.value, caught.value.allowed) == (
        "labels.urgency",
        "asap",
        ("high", "low"),
    )


def test_an_unknown_axis_names_the_axes() -> None:
    with pytest.raises(CorrectionMismatch, match=r"^'sentiment' is not an axis of taxonomy 'small' "):
        check_against_taxonomy(correction(labels={"sentiment": "angry"}), SMALL)


def test_a_queue_no_rule_can_reach_is_refused_with_the_queues_listed() -> None:
    with pytest.raises(CorrectionMismatch) as caught:
        check_against_taxonomy(correction(queue="billing-critical"), SMALL)
    assert caught.value.field == "queue"
    assert "(queues: billing-high, billing-low, security-high, security-low)" in str(caught.value)


def test_the_shipped_taxonomy_accepts_its_own_labels() -> None:
    shipped: Taxonomy = load_taxonomy()
    labels = {axis: next(iter(spec.labels)) for axis, spec in shipped.axes.items()}
    check_against_taxonomy(correction(labels=labels, queue="urgent-security"), shipped)
