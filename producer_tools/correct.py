"""``ticket-tools correct``: tell the router how a ticket should have been classified.

One correction from flags (an agent moved one ticket):

  ticket-tools correct --event-id E --ticket-id T --set team=billing --set urgency=high --actor agent-42

or a bulk import of a help desk's reassignment export, with a column mapping like ``publish --map``
(axis columns by axis name) and ``--label-map`` to translate the help desk's names to labels:

  ticket-tools correct --csv reassignments.csv --source import --actor importer \\
      --map "event_id=Event,ticket_id=Ticket,team=Assigned Group,subject=Title,body=Description" \\
      --label-map "team:Billing Ops=billing" --label-map "team:Tier 2=infrastructure"

Every correction is checked against the schema and the taxonomy (``--taxonomy``, default
TAXONOMY_PATH, else the shipped one) before the first one is sent: a help-desk name that is no
label would otherwise teach the router a class it cannot predict, and half an import published is
hard to clean up. Records are keyed by ``ticket_id``, so one ticket's corrections stay in order.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from consumer.errors import UserError
from consumer.routing import reachable_queues
from consumer.taxonomy import Taxonomy, load_taxonomy
from producer_tools.kafka_io import (
    add_connection_arguments,
    cluster_topics,
    connection_from_args,
    ensure_or_require_topic,
    kafka_errors_as_user_errors,
    load_tool_settings,
    status,
)
from producer_tools.publish import (
    INTERRUPTED_STATUS,
    PublishRecord,
    interrupt_sets,
    publish_records,
    refuse_if_invalid,
)
from schemas.codec import encode
from schemas.corrections import DEFAULT_CORRECTIONS_TOPIC, Correction, CorrectionSource

# Correction fields a CSV column can fill; ``labels`` come from axis columns, ``source`` from the flag.
CSV_FIELDS: tuple[str, ...] = (
    "event_id",
    "ticket_id",
    "queue",
    "actor",
    "corrected_at",
    "subject",
    "body",
    "language",
    "correction_id",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("event_id", "ticket_id")
LABELS_PREFIX = "labels."
QUEUE = "queue"
# The flag that set each field in the one-correction mode, for error messages.
FLAG_FOR_FIELD = {
    "event_id": "--event-id",
    "ticket_id": "--ticket-id",
    "labels": "--set",
    "queue": "--queue",
    "actor": "--actor",
    "subject": "--subject",
    "body": "--body",
    "language": "--language",
}
FLAGS_MODE_ONLY = ("event_id", "ticket_id", "set", "queue", "subject", "body", "language")


# ---------------------------------------------------------------------------- pure: taxonomy


class CorrectionMismatch(ValueError):
    """A correction naming an axis, label or queue the taxonomy does not have.

    ``field`` is ``labels.AXIS`` for a label, ``labels`` for an unknown axis and ``queue`` for a
    queue; ``allowed`` is what would have been accepted, so a caller can phrase its own message
    (the CSV import names the column and the cell as written in the file).
    """

    def __init__(self, message: str, field: str, value: str, allowed: Sequence[str]) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.allowed = tuple(allowed)


def check_against_taxonomy(correction: Correction, taxonomy: Taxonomy) -> None:
    """Raise ``CorrectionMismatch`` (one line) unless every axis, label and the queue exist.

    The schema cannot check this: the taxonomy is configuration and changes more often than the
    wire contract. A queue must be one the taxonomy's routing can reach, since those are the only
    queue topics the router creates and a team reads.
    """
    for axis, label in correction.labels.items():
        if axis not in taxonomy.axes:
            axes = list(taxonomy.axes)
            raise CorrectionMismatch(
                f"{axis!r} is not an axis of taxonomy {taxonomy.name!r} (axes: {', '.join(axes)})",
                "labels",
                axis,
                axes,
            )
        labels = list(taxonomy.axes[axis].labels)
        if label not in labels:
            raise CorrectionMismatch(
                f"{label!r} is not a label of axis {axis!r} (allowed: {', '.join(labels)})",
                f"{LABELS_PREFIX}{axis}",
                label,
                labels,
            )
    if correction.queue is not None:
        queues = reachable_queues(taxonomy)
        if correction.queue not in queues:
            raise CorrectionMismatch(
                f"{correction.queue!r} is not a queue of taxonomy {taxonomy.name!r} "
                f"(queues: {', '.join(queues)})",
                QUEUE,
                correction.queue,
                queues,
            )


def first_problem(exc: ValidationError) -> ErrorDetails:
    return exc.errors()[0]


def problem_text(err: ErrorDetails) -> str:
    """Pydantic's message without its "Value error, " prefix; a missing value reads as such."""
    if err["type"] == "missing":
        return "missing"
    return str(err["msg"]).removeprefix("Value error, ")


def field_counts(corrections: Iterable[Correction]) -> Counter[str]:
    """How many corrections correct each axis (and override the queue)."""
    counts: Counter[str] = Counter()
    for correction in corrections:
        counts.update(correction.fields_corrected)
    return counts


def describe_counts(counts: Mapping[str, int], axes: Sequence[str]) -> str:
    """``team 10, urgency 3, queue 2``: the taxonomy's axis order, then the queue overrides."""
    order = [*axes, QUEUE, *sorted(set(counts) - {*axes, QUEUE})]
    return ", ".join(f"{name} {counts[name]}" for name in order if counts.get(name))


# ---------------------------------------------------------------------------- pure: one from flags


def parse_set(specs: Sequence[str]) -> dict[str, str]:
    """``--set team=billing`` (repeatable) → {axis: label}; the taxonomy check comes later."""
    labels: dict[str, str] = {}
    for spec in specs:
        axis, sep, label = spec.partition("=")
        axis, label = axis.strip(), label.strip()
        if not sep or not axis or not label:
            raise UserError(f"--set: expected AXIS=LABEL, got {spec!r}")
        if axis in labels:
            raise UserError(f"--set: axis {axis!r} is set twice")
        labels[axis] = label
    return labels


def correction_from_flags(
    values: Mapping[str, Any], source: CorrectionSource, taxonomy: Taxonomy, now: datetime
) -> Correction:
    """The one correction the flags describe; a problem is one line naming the flag.

    ``values`` holds the flags by field name (``labels`` already parsed); None means not given.
    """
    document = {name: value for name, value in values.items() if value is not None}
    document.update(source=source, corrected_at=now)
    try:
        correction = Correction.model_validate(document)
    except ValidationError as exc:
        err = first_problem(exc)
        if not err["loc"]:
            raise UserError(
                "nothing to correct: give --set AXIS=LABEL (repeatable) or --queue QUEUE"
            ) from None
        flag = FLAG_FOR_FIELD.get(str(err["loc"][0]), str(err["loc"][0]))
        if err["type"] == "missing":
            raise UserError(f"{flag} is required") from None
        raise UserError(f"{flag}: {problem_text(err)}") from None
    try:
        check_against_taxonomy(correction, taxonomy)
    except CorrectionMismatch as exc:
        flag = "--queue" if exc.field == QUEUE else "--set"
        raise UserError(f"{flag}: {exc}") from None
    return correction


# ---------------------------------------------------------------------------- pure: CSV import


@dataclass(frozen=True)
class Columns:
    """Which CSV column fills which Correction field (``fields``) and which axis (``axes``)."""

    fields: dict[str, str] = field(default_factory=dict)
    axes: dict[str, str] = field(default_factory=dict)

    def column_for(self, name: str) -> str | None:
        """The column behind a field, or behind ``labels.AXIS``; None when not from the file."""
        if name.startswith(LABELS_PREFIX):
            return self.axes.get(name.removeprefix(LABELS_PREFIX))
        return self.fields.get(name)

    @property
    def columns(self) -> set[str]:
        return {*self.fields.values(), *self.axes.values()}

    @property
    def correcting_columns(self) -> list[str]:
        """The columns that can make a row a correction: the axes' and the queue's."""
        queue = [self.fields[QUEUE]] if QUEUE in self.fields else []
        return [*self.axes.values(), *queue]


def mapping_target(name: str, taxonomy: Taxonomy) -> tuple[str, str]:
    """("field", name) or ("axis", axis) for one ``--map`` name; unknown names list what is allowed.

    A field name wins over an axis of the same name; ``labels.AXIS`` reaches such an axis.
    """
    if name in CSV_FIELDS:
        return "field", name
    axis = name.removeprefix(LABELS_PREFIX)
    if axis in taxonomy.axes:
        return "axis", axis
    raise UserError(
        f"--map: unknown field {name!r} (fields: {', '.join(CSV_FIELDS)}; axes: {', '.join(taxonomy.axes)})"
    )


def parse_columns(specs: Sequence[str], taxonomy: Taxonomy) -> Columns:
    """``--map event_id=Id,team=Assigned Group`` (repeatable) → Columns, checked before reading."""
    columns = Columns()
    for spec in specs:
        for item in spec.split(","):
            if not item.strip():
                continue
            name, sep, column = item.partition("=")
            name, column = name.strip(), column.strip()
            if not sep or not name or not column:
                raise UserError(f"--map: expected FIELD=COLUMN or AXIS=COLUMN, got {item.strip()!r}")
            kind, target = mapping_target(name, taxonomy)
            into = columns.fields if kind == "field" else columns.axes
            if target in into:
                raise UserError(f"--map: {target!r} is mapped twice")
            into[target] = column
    return columns


def complete_columns(columns: Columns, header: Sequence[str], taxonomy: Taxonomy) -> Columns:
    """The explicit mapping plus columns named like a field or an axis; checks what is required."""
    present = set(header)
    listed = f"(columns: {', '.join(header)})"
    unknown = [
        column for column in [*columns.fields.values(), *columns.axes.values()] if column not in present
    ]
    if unknown:
        raise UserError(f"--map: no column {', '.join(map(repr, unknown))} in the CSV header {listed}")
    taken = columns.columns
    fields = {name: name for name in CSV_FIELDS if name in present and name not in taken}
    axes = {
        axis: axis for axis in taxonomy.axes if axis in present and axis not in taken and axis not in fields
    }
    full = Columns({**fields, **columns.fields}, {**axes, **columns.axes})
    for name in REQUIRED_COLUMNS:
        if name not in full.fields:
            raise UserError(f"CSV: no column for {name!r}; map one with --map {name}=COLUMN {listed}")
    if not full.axes and QUEUE not in full.fields:
        raise UserError(
            f"CSV: no column for any axis ({', '.join(taxonomy.axes)}) or the queue; "
            f"map one with --map AXIS=COLUMN {listed}"
        )
    return full


def parse_label_map(specs: Sequence[str], taxonomy: Taxonomy) -> dict[str, dict[str, str]]:
    """``--label-map "team:Billing Ops=billing"`` (repeatable) → {axis: {help-desk name: label}}.

    The target label is checked here, so a typo in the map fails before the file is read.
    """
    table: dict[str, dict[str, str]] = {}
    for spec in specs:
        axis, colon, rest = spec.partition(":")
        name, sep, label = rest.rpartition("=")
        axis, name, label = axis.strip(), name.strip(), label.strip()
        if not colon or not sep or not axis or not name or not label:
            raise UserError(f"--label-map: expected AXIS:NAME=LABEL, got {spec!r}")
        if axis not in taxonomy.axes:
            raise UserError(f"--label-map {spec!r}: unknown axis {axis!r} (axes: {', '.join(taxonomy.axes)})")
        labels = taxonomy.axes[axis].labels
        if label not in labels:
            raise UserError(
                f"--label-map {spec!r}: {label!r} is not a label of axis {axis!r} "
                f"(allowed: {', '.join(labels)})"
            )
        earlier = table.setdefault(axis, {}).setdefault(name, label)
        if earlier != label:
            raise UserError(f"--label-map: {axis}:{name} maps to both {earlier!r} and {label!r}")
    return table


def label_for(cell: str, translations: Mapping[str, str]) -> str:
    """The help desk's name translated, else the cell lower-cased (labels are lower-case)."""
    return translations.get(cell, cell.lower())


@dataclass(frozen=True)
class RowDefaults:
    """What every row gets unless a column says otherwise."""

    source: CorrectionSource
    actor: str | None
    now: datetime


def document_from_row(
    row: Mapping[str, str | None],
    columns: Columns,
    label_map: Mapping[str, Mapping[str, str]],
    defaults: RowDefaults,
) -> dict[str, Any]:
    """A Correction-shaped dict from one row; an empty cell means "not given" (the axis is not corrected)."""
    document: dict[str, Any] = {"source": defaults.source, "corrected_at": defaults.now}
    if defaults.actor is not None:
        document["actor"] = defaults.actor
    for name, column in columns.fields.items():
        cell = (row.get(column) or "").strip()
        if cell:
            document[name] = cell
    labels: dict[str, str] = {}
    for axis, column in columns.axes.items():
        cell = (row.get(column) or "").strip()
        if cell:
            labels[axis] = label_for(cell, label_map.get(axis, {}))
    document["labels"] = labels
    return document


def row_problem(
    exc: ValidationError | CorrectionMismatch, row: Mapping[str, str | None], columns: Columns
) -> str:
    """What is wrong with a row, naming the column and the cell as they are in the file."""
    if isinstance(exc, CorrectionMismatch):
        column = columns.column_for(exc.field)
        cell = (row.get(column) or "").strip() if column else exc.value
        where = f"column {column!r}: " if column else ""
        if exc.field == QUEUE:
            return f"{where}{cell!r} is not a queue of the taxonomy (queues: {', '.join(exc.allowed)})"
        axis = exc.field.removeprefix(LABELS_PREFIX)
        return (
            f"{where}{cell!r} is not a label of axis {axis!r} (allowed: {', '.join(exc.allowed)}; "
            f"translate help-desk names with --label-map {axis}:NAME=LABEL)"
        )
    err = first_problem(exc)
    if not err["loc"]:
        listed = ", ".join(columns.correcting_columns)
        return f"nothing to correct: every label column is empty and there is no queue ({listed})"
    name = ".".join(str(part) for part in err["loc"][:2])
    column = columns.column_for(name) or columns.column_for(str(err["loc"][0]))
    where = f"column {column!r}" if column else str(err["loc"][0])
    return f"{where}: {problem_text(err)}"


def corrections_from_csv(
    text: str,
    source_name: str,
    columns: Columns,
    label_map: Mapping[str, Mapping[str, str]],
    defaults: RowDefaults,
    taxonomy: Taxonomy,
) -> list[Correction]:
    """Every row as a checked Correction, or one UserError for the file naming the first bad row.

    Rows are counted from 1 after the header; the line is the physical one, so a quoted cell that
    spans lines still points at the right place in an editor.
    """
    reader = csv.DictReader(io.StringIO(text, newline=""))
    corrections: list[Correction] = []
    problems: list[str] = []
    try:
        header = reader.fieldnames
        if not header:
            raise UserError(f"{source_name}: the CSV file is empty (expected a header line)")
        full = complete_columns(columns, header, taxonomy)
        start_line = reader.line_num + 1
        for number, row in enumerate(reader, start=1):
            try:
                correction = Correction.model_validate(document_from_row(row, full, label_map, defaults))
                check_against_taxonomy(correction, taxonomy)
                corrections.append(correction)
            except (ValidationError, CorrectionMismatch) as exc:
                problems.append(
                    f"{source_name} row {number} (line {start_line}): {row_problem(exc, row, full)}"
                )
            start_line = reader.line_num + 1
    except csv.Error as exc:
        raise UserError(f"{source_name}:{reader.line_num}: not valid CSV ({exc})") from None
    refuse_if_invalid(problems, "rows")
    if not corrections:
        raise UserError(f"{source_name}: no rows after the header: nothing to correct")
    return corrections


# ---------------------------------------------------------------------------- command


def taxonomy_for(path: Path | None) -> Taxonomy:
    """``--taxonomy``, else TAXONOMY_PATH, else the shipped taxonomy: what the router checks against."""
    if path is not None:
        return load_taxonomy(path, origin="--taxonomy")
    return load_taxonomy(load_tool_settings().taxonomy_path)


def refuse_mixed_modes(args: argparse.Namespace) -> None:
    """One correction from flags or a CSV file, not both: a flag ignored silently is a wrong import."""
    if args.csv is not None:
        given = [f"--{name.replace('_', '-')}" for name in FLAGS_MODE_ONLY if getattr(args, name)]
        if given:
            raise UserError(f"{given[0]} describes one correction; with --csv map a column instead (--map)")
    else:
        for flag, value in (("--map", args.map), ("--label-map", args.label_map)):
            if value:
                raise UserError(f"{flag} only applies to --csv FILE")


def read_csv_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_corrections(
    args: argparse.Namespace, taxonomy: Taxonomy, now: datetime
) -> tuple[list[Correction], str]:
    """The corrections to send, all checked, and where they came from (for the summary)."""
    refuse_mixed_modes(args)
    if args.csv is None:
        source = CorrectionSource(args.source or CorrectionSource.AGENT)
        values = {
            "event_id": args.event_id,
            "ticket_id": args.ticket_id,
            "labels": parse_set(args.set),
            "queue": args.queue,
            "actor": args.actor,
            "subject": args.subject,
            "body": args.body,
            "language": args.language,
        }
        return [correction_from_flags(values, source, taxonomy, now)], "the command line"
    columns = parse_columns(args.map, taxonomy)
    if args.actor is None and "actor" not in columns.fields:
        raise UserError("--actor is required (who made the corrections), unless --map actor=COLUMN")
    label_map = parse_label_map(args.label_map, taxonomy)
    defaults = RowDefaults(CorrectionSource(args.source or CorrectionSource.IMPORT), args.actor, now)
    text = read_csv_text(args.csv)
    return corrections_from_csv(text, str(args.csv), columns, label_map, defaults, taxonomy), str(args.csv)


def summary(count: int, counts: Counter[str], taxonomy: Taxonomy) -> str:
    noun = "correction" if count == 1 else "corrections"
    return f"{count} {noun} ({describe_counts(counts, taxonomy.axis_names)})"


def handle(args: argparse.Namespace) -> int:
    if args.partitions is not None and args.partitions < 1:
        raise UserError(f"--partitions must be at least 1, not {args.partitions}")
    if args.topic is None:
        args.topic = load_tool_settings().corrections_topic
    if not args.topic.strip():
        raise UserError("--topic is empty")
    taxonomy = taxonomy_for(args.taxonomy)
    corrections, origin = load_corrections(args, taxonomy, datetime.now(UTC))
    counts = field_counts(corrections)
    if args.dry_run:
        out = sys.stdout.buffer
        for correction in corrections:
            out.write(encode(correction) + b"\n")
        out.flush()
        status(
            f"dry run: {summary(len(corrections), counts, taxonomy)} from {origin} "
            f"would be published to {args.topic!r}"
        )
        return 0
    return asyncio.run(send(args, corrections, origin, summary(len(corrections), counts, taxonomy)))


async def send(
    args: argparse.Namespace, corrections: Sequence[Correction], origin: str, described: str
) -> int:
    """Publish every correction keyed by ticket id; Ctrl-C stops and reports what was acknowledged."""
    connection = connection_from_args(args)
    existing = await cluster_topics(connection)
    hint = " (pass --create-topic to create it)"
    await ensure_or_require_topic(connection, existing, args.topic, args.create_topic, args.partitions, hint)
    records = [
        PublishRecord(number, correction.ticket_id.encode("utf-8"), encode(correction))
        for number, correction in enumerate(corrections, start=1)
    ]
    stop = asyncio.Event()
    with interrupt_sets(stop), kafka_errors_as_user_errors(connection):
        result = await publish_records(connection, args.topic, records, 0.0, stop=stop)
    where = f"from {origin} to {args.topic!r} at {connection.bootstrap}"
    if result.failures:
        status(f"{len(result.failures)} corrections failed, first: {result.failures[0]}")
    if result.interrupted or result.failures:
        status(f"published {result.delivered} of {described} {where}")
        return INTERRUPTED_STATUS if result.interrupted else 1
    status(f"published {described} {where}")
    return 0


def add_parser(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "correct",
        help="publish corrected labels for routed tickets (one from flags, or a help-desk CSV export)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    one = parser.add_argument_group("one correction from flags")
    one.add_argument("--event-id", help="the classified ticket event being corrected")
    one.add_argument("--ticket-id", help="its ticket id (the record key)")
    one.add_argument(
        "--set", action="append", default=[], metavar="AXIS=LABEL", help="a corrected label (repeatable)"
    )
    one.add_argument("--queue", help="the queue the ticket was moved to (a queue of the taxonomy)")
    one.add_argument("--subject", help="the ticket's subject, for a ticket the router never saw")
    one.add_argument("--body", help="the ticket's text, for a ticket the router never saw")
    one.add_argument("--language", help="BCP 47 tag of the text")
    bulk = parser.add_argument_group("bulk import from a help desk's CSV export")
    bulk.add_argument("--csv", type=Path, metavar="FILE", help="one correction per row")
    bulk.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="NAME=COLUMN,...",
        help=f"column mapping: fields ({', '.join(CSV_FIELDS)}) and axes by name, e.g. "
        "event_id=Id,ticket_id=Ticket,team=Assigned Group; columns already named so need no mapping",
    )
    bulk.add_argument(
        "--label-map",
        action="append",
        default=[],
        metavar="AXIS:NAME=LABEL",
        help='translate a help-desk value to a label, e.g. "team:Billing Ops=billing" (repeatable); '
        "other values are lower-cased and must be labels",
    )
    parser.add_argument(
        "--source",
        choices=[source.value for source in CorrectionSource],
        default=None,
        help="who corrected (default: agent; import with --csv)",
    )
    parser.add_argument("--actor", help="opaque id of who corrected (with --csv: unless a column is mapped)")
    parser.add_argument(
        "--taxonomy",
        type=Path,
        metavar="FILE",
        help="check labels against this taxonomy (default: TAXONOMY_PATH)",
    )
    parser.add_argument(
        "--topic", default=None, help=f"default: CORRECTIONS_TOPIC ({DEFAULT_CORRECTIONS_TOPIC})"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check and print each correction (one JSON per line), send nothing",
    )
    parser.add_argument("--create-topic", action="store_true", help="create the topic if it is missing")
    parser.add_argument(
        "--partitions", type=int, default=None, help="for --create-topic (default TOPIC_PARTITIONS)"
    )
    add_connection_arguments(parser)
    parser.set_defaults(handler=handle)
