"""Labeled files for evaluation: JSONL tickets with every axis, or a CSV for a single-axis taxonomy.

Each row becomes a real ``TicketEvent`` so the pipeline sees exactly what it sees in production;
the gold labels, language and account tier stay beside it for the breakdowns. Mistakes in the
file are the user's and end with one line naming the file and row.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from consumer.errors import UserError
from consumer.taxonomy import LABEL_PATTERN, Taxonomy
from schemas.events import TicketEvent

UNKNOWN_GROUP = "unknown"
DEFAULT_ACCOUNT_TIER = "pro"
DEFAULT_CHANNEL = "web"
_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9_.-]+")
_FIXED_TIME = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class LabeledTicket:
    """One evaluation row: the ticket as the pipeline gets it, and what it should have said."""

    ticket: TicketEvent
    gold: dict[str, str]
    language: str
    account_tier: str

    @property
    def text(self) -> str:
        return f"{self.ticket.subject}\n{self.ticket.body}" if self.ticket.subject else self.ticket.body


def normalize_label(raw: str) -> str:
    """A CSV label as a taxonomy label: lower case, runs of other characters become '_'.

    Public data sets use labels the taxonomy cannot (BANKING77 has ``Refund_not_showing_up`` and
    ``reverted_card_payment?``; taxonomy labels become topic names), so the mapping is applied
    when the raw label is not itself a taxonomy label.
    """
    return _NOT_LABEL_CHARS.sub("_", raw.strip().lower()).strip("_")


def resolve_label(raw: str, allowed: Mapping[str, str]) -> str | None:
    """The taxonomy label for ``raw``: itself when listed, else its normalized form when listed."""
    if raw in allowed:
        return raw
    normalized = normalize_label(raw)
    return normalized if normalized in allowed and LABEL_PATTERN.match(normalized) else None


def _ticket(
    where: str, index: int, row_id: str, subject: str, body: str, fields: Mapping[str, Any]
) -> TicketEvent:
    """A ticket as upstream would publish it; fields the file does not give get neutral defaults."""
    try:
        return TicketEvent.model_validate(
            {
                "event_id": f"eval-{index}",
                "event_type": "ticket.created",
                "ticket_id": row_id,
                "subject": subject,
                "body": body,
                "account_tier": fields.get("account_tier") or DEFAULT_ACCOUNT_TIER,
                "customer_id": fields.get("customer_id") or "evaluate",
                "channel": fields.get("channel") or DEFAULT_CHANNEL,
                "language": fields.get("language") or None,
                "created_at": _FIXED_TIME,
            }
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UserError(f"{where}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


def _check_gold(labels: Mapping[str, Any], taxonomy: Taxonomy, where: str) -> dict[str, str]:
    gold = {}
    for axis_name, axis in taxonomy.axes.items():
        label = labels.get(axis_name)
        if not isinstance(label, str):
            raise UserError(
                f"{where}: labels has no {axis_name!r} (the taxonomy's axes: {', '.join(taxonomy.axes)})"
            )
        resolved = resolve_label(label, axis.labels)
        if resolved is None:
            raise UserError(
                f"{where}: {axis_name} label {label!r} is not in the taxonomy "
                f"(allowed: {', '.join(list(axis.labels)[:12])}{', ...' if len(axis.labels) > 12 else ''})"
            )
        gold[axis_name] = resolved
    return gold


def _jsonl_row(line: bytes, index: int, where: str, taxonomy: Taxonomy) -> LabeledTicket:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(row, dict) or not isinstance(row.get("body"), str):
        raise UserError(f"{where}: expected an object with 'body' and 'labels'")
    labels = row.get("labels")
    if not isinstance(labels, dict):
        raise UserError(f"{where}: expected 'labels': {{axis: label}}")
    gold = _check_gold(labels, taxonomy, where)
    ticket = _ticket(
        where, index, str(row.get("id") or f"eval-{index}"), row.get("subject") or "", row["body"], row
    )
    return LabeledTicket(
        ticket, gold, row.get("language") or UNKNOWN_GROUP, row.get("account_tier") or UNKNOWN_GROUP
    )


def read_jsonl(path: Path, taxonomy: Taxonomy) -> list[LabeledTicket]:
    """Rows of {id?, subject?, body, account_tier?, channel?, language?, labels: {axis: label}}."""
    items: list[LabeledTicket] = []
    for number, line in enumerate(_read_bytes(path).splitlines(), start=1):
        if line.strip():
            items.append(_jsonl_row(line, len(items), f"{path}:{number}", taxonomy))
    return items


def read_csv(path: Path, taxonomy: Taxonomy, text_column: str, label_column: str) -> list[LabeledTicket]:
    """Rows with a text column and a label column, for a taxonomy with exactly one axis."""
    if len(taxonomy.axes) != 1:
        raise UserError(
            f"{path}: a CSV gives one label per row, but the taxonomy has {len(taxonomy.axes)} axes "
            f"({', '.join(taxonomy.axes)}); use a JSONL file or a single-axis taxonomy"
        )
    axis = taxonomy.axis_names[0]
    text = _read_bytes(path).decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(text.splitlines())
    columns = reader.fieldnames or []
    for wanted, flag in ((text_column, "--text-column"), (label_column, "--label-column")):
        if wanted not in columns:
            raise UserError(f"{path}: no column {wanted!r} for {flag} (columns: {', '.join(columns)})")
    items: list[LabeledTicket] = []
    for number, row in enumerate(reader, start=2):
        body = (row.get(text_column) or "").strip()
        if not body:
            continue
        gold = _check_gold({axis: row.get(label_column) or ""}, taxonomy, f"{path}:{number}")
        ticket = _ticket(f"{path}:{number}", len(items), f"row-{number}", "", body, row)
        items.append(LabeledTicket(ticket, gold, row.get("language") or UNKNOWN_GROUP, UNKNOWN_GROUP))
    return items


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None


def read_labeled(
    path: Path, taxonomy: Taxonomy, text_column: str | None = None, label_column: str | None = None
) -> list[LabeledTicket]:
    """JSONL unless the file is a .csv or column names were given; an empty file is a mistake."""
    as_csv = path.suffix.lower() == ".csv" or text_column is not None or label_column is not None
    if as_csv:
        items = read_csv(path, taxonomy, text_column or "text", label_column or "label")
    else:
        items = read_jsonl(path, taxonomy)
    if not items:
        raise UserError(f"{path}: no labeled rows")
    return items


def training_jsonl(items: Sequence[LabeledTicket]) -> bytes:
    """The rows in the local tier's training format ({subject, body, labels}), one JSON per line.

    The local tier is trained through ``LOCAL_TRAINING_PATH`` exactly as in production, so a
    training CSV (or a cross-validation fold) is written in that format rather than fed around it.
    """
    return b"".join(
        orjson.dumps({"subject": item.ticket.subject, "body": item.ticket.body, "labels": item.gold}) + b"\n"
        for item in items
    )
