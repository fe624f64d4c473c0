"""The wire contract: exported JSON Schemas are current, and encoding round-trips."""

from __future__ import annotations

import base64

import orjson
import pytest
from pydantic import ValidationError

from schemas.codec import DecodeError, bytes_for_record, bytes_from_record, decode, encode, parse_json
from schemas.events import TicketEvent
from schemas.export import rendered_schemas, stale_files

EVENT = {
    "schema_version": 1,
    "event_id": "e-1",
    "event_type": "ticket.created",
    "ticket_id": "T-1",
    "subject": "Cannot log in",
    "body": "Since this morning SSO fails.",
    "account_tier": "enterprise",
    "author_role": "customer",
    "customer_id": "C-1",
    "channel": "email",
    "language": None,
    "created_at": "2026-11-20T09:15:00Z",
    "metadata": {"source": "helpdesk"},
}


def test_exported_json_schemas_are_current() -> None:
    assert stale_files() == [], "run `ticket-router schema export` (make schemas) and commit schemas/json"


def test_stale_detection_notices_a_changed_file(tmp_path: object) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    for name, content in rendered_schemas().items():
        (directory / name).write_bytes(content)
    assert stale_files(directory) == []
    (directory / "TicketEvent.json").write_bytes(b"{}")
    assert stale_files(directory) == ["TicketEvent.json"]


def test_ticket_event_round_trips_through_orjson() -> None:
    ticket = decode(TicketEvent, orjson.dumps(EVENT))
    assert decode(TicketEvent, encode(ticket)) == ticket


def test_unknown_fields_are_ignored_but_wrong_types_are_not() -> None:
    assert decode(TicketEvent, orjson.dumps({**EVENT, "new_field": 1})).ticket_id == "T-1"
    with pytest.raises(ValidationError):
        decode(TicketEvent, orjson.dumps({**EVENT, "account_tier": "platinum"}))
    with pytest.raises(ValidationError):
        decode(TicketEvent, orjson.dumps({**EVENT, "created_at": "2026-11-20T09:15:00"}))  # no timezone


def test_malformed_bytes_are_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        parse_json(b"\xff{")


def test_original_bytes_survive_triage_encoding() -> None:
    for raw in (b'{"a": 1}', b"\xff\xfe\x00 not utf-8"):
        text, encoding = bytes_for_record(raw)
        assert bytes_from_record(text, encoding) == raw
    assert bytes_for_record(b"\xff")[1] == "base64"
    assert bytes_for_record(b"\xff")[0] == base64.b64encode(b"\xff").decode()
