"""``ticket-tools publish``: put ticket events on the input topic, from a file or generated.

Sources: a JSONL file of TicketEvents, a JSON file holding an array of them, a CSV export from a
help desk with a column mapping, or ``--sample N`` generated tickets (texts the local tier was not
trained on). Every event is validated before the first one is sent, because half a file published
and half refused is the hardest state to clean up. Records are keyed by ``ticket_id`` like the
upstream services do, so per-ticket order holds in the router. Ctrl-C stops sending, waits for the
records already sent to be acknowledged, prints how many were, and exits with status 130.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from consumer.errors import UserError
from producer_tools.kafka_io import (
    Connection,
    add_connection_arguments,
    cluster_topics,
    connection_from_args,
    ensure_or_require_topic,
    kafka_errors_as_user_errors,
    load_tool_settings,
    producer,
    status,
)
from producer_tools.samples import SAMPLES_RESOURCE, generate_samples
from schemas.codec import describe_validation_error, encode
from schemas.events import AccountTier, AuthorRole, Channel, EventType, TicketEvent

MAPPABLE_FIELDS: tuple[str, ...] = tuple(name for name in TicketEvent.model_fields if name != "metadata")
METADATA_PREFIX = "metadata."
ENUM_FIELDS = frozenset({"event_type", "account_tier", "author_role", "channel"})
CSV_SUFFIXES = frozenset({".csv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
JSON_SUFFIXES = frozenset({".json"})
INTERRUPTED_STATUS = 130


# ---------------------------------------------------------------------------- pure: records


@dataclass(frozen=True)
class PublishRecord:
    """One record to send; ``unit`` and ``line`` point back into the source for error messages.

    ``unit`` is "line" for JSONL and CSV, "item" for the elements of a JSON array.
    """

    line: int
    key: bytes | None
    value: bytes
    unit: str = "line"

    @property
    def where(self) -> str:
        return f"{self.unit} {self.line}"


def ticket_key(document: object) -> bytes | None:
    """The record key: the ticket id, so one ticket's events stay in one partition, in order."""
    if isinstance(document, Mapping):
        ticket_id = document.get("ticket_id")
        if isinstance(ticket_id, str) and ticket_id:
            return ticket_id.encode("utf-8")
    return None


def records_from_jsonl(raw: bytes, source: str, validate: bool) -> list[PublishRecord]:
    """Non-blank lines as records, sent byte for byte (the producer's bytes are the contract).

    With ``validate`` every line must be a TicketEvent; all problems are counted but the first
    one is named, with its line number, since fixing files goes one line at a time.
    """
    records: list[PublishRecord] = []
    problems: list[str] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        document: object = None
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if validate:
                problems.append(f"{source}:{number}: not valid JSON ({exc})")
                continue
        if validate:
            try:
                TicketEvent.model_validate(document)
            except ValidationError as exc:
                problems.append(
                    f"{source}:{number}: not a valid TicketEvent: {describe_validation_error(exc)}"
                )
                continue
        records.append(PublishRecord(number, ticket_key(document), line))
    refuse_if_invalid(problems)
    return records


def records_from_json_document(raw: bytes, source: str, validate: bool) -> list[PublishRecord]:
    """A ``.json`` file: an array of TicketEvents (or one event); anything else is read as JSONL.

    Array items are re-encoded compactly, one record each, and errors name the item (1-based).
    A file that does not parse as one JSON document is most likely JSONL under a ``.json`` name.
    """
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return records_from_jsonl(raw, source, validate)
    if isinstance(document, dict):
        return records_from_jsonl(orjson.dumps(document), source, validate)
    if not isinstance(document, list):
        raise UserError(f"{source}: expected a JSON array of TicketEvents, found a {type(document).__name__}")
    return records_from_items(document, source, validate)


def records_from_items(items: Sequence[object], source: str, validate: bool) -> list[PublishRecord]:
    """The elements of a JSON array as records; with ``validate`` each must be a TicketEvent."""
    records: list[PublishRecord] = []
    problems: list[str] = []
    for number, item in enumerate(items, start=1):
        if validate:
            try:
                TicketEvent.model_validate(item)
            except ValidationError as exc:
                problems.append(
                    f"{source} item {number}: not a valid TicketEvent: {describe_validation_error(exc)}"
                )
                continue
        records.append(PublishRecord(number, ticket_key(item), orjson.dumps(item), unit="item"))
    refuse_if_invalid(problems, "items")
    return records


def refuse_if_invalid(problems: Sequence[str], units: str = "lines") -> None:
    """One line for the whole file: the first problem, and how many more there are."""
    if not problems:
        return
    more = f"and {len(problems) - 1} more invalid {units}; " if len(problems) > 1 else ""
    raise UserError(f"{problems[0]} ({more}nothing was published)")


def records_from_events(events: Iterable[TicketEvent]) -> list[PublishRecord]:
    return [
        PublishRecord(number, event.ticket_id.encode("utf-8"), encode(event))
        for number, event in enumerate(events, start=1)
    ]


# ---------------------------------------------------------------------------- pure: CSV mapping


@dataclass(frozen=True)
class CsvDefaults:
    """Values for required fields a CSV export usually lacks; the flags override them."""

    account_tier: str = AccountTier.PRO.value
    channel: str = Channel.EMAIL.value
    customer_id: str = "unknown-customer"
    event_type: str = EventType.CREATED.value
    author_role: str = AuthorRole.CUSTOMER.value


def parse_mapping(specs: Sequence[str]) -> dict[str, str]:
    """``--map subject=Title,body=Description`` (repeatable) → {field: column}.

    Field names are checked here, before the file is read, so a typo names the allowed fields.
    ``metadata.KEY=Column`` copies a column into the event's metadata.
    """
    mapping: dict[str, str] = {}
    for spec in specs:
        for item in spec.split(","):
            if not item.strip():
                continue
            name, sep, column = item.partition("=")
            name, column = name.strip(), column.strip()
            if not sep or not name or not column:
                raise UserError(f"--map: expected FIELD=COLUMN, got {item.strip()!r}")
            if name not in MAPPABLE_FIELDS and not (
                name.startswith(METADATA_PREFIX) and len(name) > len(METADATA_PREFIX)
            ):
                raise UserError(
                    f"--map: unknown field {name!r} (fields: {', '.join(MAPPABLE_FIELDS)}, metadata.KEY)"
                )
            if name in mapping:
                raise UserError(f"--map: field {name!r} is mapped twice")
            mapping[name] = column
    return mapping


def complete_mapping(mapping: Mapping[str, str], header: Sequence[str]) -> dict[str, str]:
    """The explicit mapping plus columns already named like a field; checks every column exists."""
    columns = set(header)
    unknown = [f"{name}={column}" for name, column in mapping.items() if column not in columns]
    if unknown:
        raise UserError(
            f"--map: no column {', '.join(unknown)} in the CSV header (columns: {', '.join(header)})"
        )
    mapped_columns = set(mapping.values())
    implicit = {
        name: name
        for name in MAPPABLE_FIELDS
        if name in columns and name not in mapping and name not in mapped_columns
    }
    full = {**implicit, **mapping}
    if "body" not in full:
        raise UserError(
            f"CSV: no column for the required field 'body'; map one with --map body=COLUMN "
            f"(columns: {', '.join(header)})"
        )
    return full


def event_from_row(
    row: Mapping[str, str | None],
    mapping: Mapping[str, str],
    defaults: CsvDefaults,
    now: datetime,
    new_id: Callable[[], str],
) -> dict[str, Any]:
    """A TicketEvent-shaped dict from one CSV row; empty cells count as missing.

    Missing required fields get generated values (a uuid4 event id, a ticket id, the current
    time) or the defaults, so a plain export of subject and body is enough to publish.
    """
    event: dict[str, Any] = {}
    metadata: dict[str, str] = {}
    for name, column in mapping.items():
        cell = (row.get(column) or "").strip()
        if not cell:
            continue
        if name.startswith(METADATA_PREFIX):
            metadata[name.removeprefix(METADATA_PREFIX)] = cell
        else:
            event[name] = cell.lower() if name in ENUM_FIELDS else cell
    event.setdefault("event_id", new_id())
    event.setdefault("ticket_id", f"T-{new_id().replace('-', '')[:12]}")
    event.setdefault("created_at", now.isoformat())
    for name in ("account_tier", "channel", "customer_id", "event_type", "author_role"):
        event.setdefault(name, getattr(defaults, name))
    if metadata:
        event["metadata"] = metadata
    return event


def records_from_csv(
    text: str,
    source: str,
    mapping: Mapping[str, str],
    defaults: CsvDefaults,
    validate: bool,
    now: datetime,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> list[PublishRecord]:
    """Rows as records. Line numbers are physical lines, so a quoted multi-line cell still points right."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames
        if not header:
            raise UserError(f"{source}: the CSV file is empty (expected a header line)")
        full_mapping = complete_mapping(mapping, header)
        records: list[PublishRecord] = []
        problems: list[str] = []
        start_line = reader.line_num + 1
        for row in reader:
            event = event_from_row(row, full_mapping, defaults, now, new_id)
            if validate:
                try:
                    event = TicketEvent.model_validate(event).model_dump(mode="json")
                except ValidationError as exc:
                    problems.append(
                        f"{source}:{start_line}: not a valid TicketEvent: {describe_validation_error(exc)}"
                    )
            records.append(PublishRecord(start_line, ticket_key(event), orjson.dumps(event)))
            start_line = reader.line_num + 1
    except csv.Error as exc:
        raise UserError(f"{source}:{reader.line_num}: not valid CSV ({exc})") from None
    refuse_if_invalid(problems)
    return records


# ---------------------------------------------------------------------------- pure: pacing


class TokenBucket:
    """Paces sends to ``rate`` per second with bursts of at most ``burst``.

    ``reserve`` takes a token and says how long to wait for it; tokens may go into debt, so the
    schedule never drifts no matter how late the caller wakes up.
    """

    def __init__(self, rate: float, burst: float = 1.0, now: float = 0.0) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def reserve(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


# ---------------------------------------------------------------------------- Kafka I/O


@dataclass
class PublishResult:
    per_partition: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def delivered(self) -> int:
        """Records the broker acknowledged."""
        return sum(self.per_partition.values())


async def pause_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` (the pacing delay) but wake at once on Ctrl-C; True when stopped.

    Without a delay it still yields once, so the signal handler gets to run even while a fast
    publish keeps the producer's buffer from ever filling up.
    """
    if seconds <= 0:
        await asyncio.sleep(0)
    elif not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def publish_records(
    connection: Connection,
    topic: str,
    records: Sequence[PublishRecord],
    rate: float,
    on_delivered: Callable[[], None] = lambda: None,
    stop: asyncio.Event | None = None,
) -> PublishResult:
    """Send every record (paced when ``rate`` > 0) and wait for every acknowledgement.

    When ``stop`` is set (Ctrl-C) no further record is sent, but the ones already handed to the
    producer are still awaited, so the count of acknowledged records is exact.
    """
    result = PublishResult()
    stop = stop or asyncio.Event()
    bucket = TokenBucket(rate, now=time.monotonic()) if rate > 0 else None
    pending: list[asyncio.Future[Any]] = []

    def delivered(where: str) -> Callable[[asyncio.Future[Any]], None]:
        def callback(future: asyncio.Future[Any]) -> None:
            if future.exception() is not None:
                result.failures.append(f"{where}: {future.exception()}")
            else:
                metadata = future.result()
                result.per_partition[(metadata.topic, metadata.partition)] += 1
            on_delivered()

        return callback

    async with producer(connection, linger_ms=0 if bucket else 5) as client:
        for record in records:
            wait = bucket.reserve(time.monotonic()) if bucket is not None else 0.0
            if await pause_unless_stopped(stop, wait):
                result.interrupted = True
                break
            try:
                future = await client.send(topic, record.value, key=record.key)
            except KafkaError as exc:
                result.failures.append(f"{record.where}: {exc}")
                on_delivered()
                continue
            future.add_done_callback(delivered(record.where))
            pending.append(future)
        await asyncio.gather(*pending, return_exceptions=True)
    return result


# ---------------------------------------------------------------------------- command


def load_records(args: argparse.Namespace) -> tuple[list[PublishRecord], str]:
    """The records to publish and a description of where they came from."""
    if args.sample is not None:
        if args.file is not None:
            raise UserError("give either a FILE or --sample N, not both")
        if args.map:
            raise UserError("--map only applies to a CSV file")
        events = generate_samples(args.sample, args.seed, datetime.now(UTC))
        return records_from_events(events), f"{args.sample} samples (seed {args.seed})"
    if args.file is None:
        raise UserError("nothing to publish: give a JSONL, JSON or CSV FILE, or --sample N")
    path = Path(args.file)
    kind = file_format(path, args.format)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    if kind in ("jsonl", "json"):
        if args.map:
            raise UserError(f"--map only applies to a CSV file ({kind.upper()} holds TicketEvents already)")
        read = records_from_jsonl if kind == "jsonl" else records_from_json_document
        return read(raw, str(path), args.validate), str(path)
    defaults = CsvDefaults(account_tier=args.account_tier, channel=args.channel, customer_id=args.customer_id)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    mapping = parse_mapping(args.map)
    return records_from_csv(text, str(path), mapping, defaults, args.validate, datetime.now(UTC)), str(path)


def file_format(path: Path, requested: str) -> str:
    if requested != "auto":
        return requested
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in JSON_SUFFIXES:
        return "json"
    raise UserError(
        f"cannot tell the format of {path} from its name; pass --format jsonl, --format json or --format csv"
    )


def count_table(result: PublishResult) -> Table:
    table = Table(title="published records")
    table.add_column("topic")
    table.add_column("partition", justify="right")
    table.add_column("records", justify="right")
    for (topic, partition), count in sorted(result.per_partition.items()):
        table.add_row(topic, str(partition), str(count))
    table.add_row("total", "", str(result.delivered), style="bold")
    return table


def print_dry_run(records: Sequence[PublishRecord], source: str, topic: str) -> None:
    """Every record's value, whole, one per line on stdout; the summary on stderr.

    Whole values are what make a ``--map`` checkable (``| jq .body``); the values are the exact
    bytes that would be sent, and JSONL lines, array items and CSV rows are all one line each.
    """
    out = sys.stdout.buffer
    for record in records:
        out.write(record.value + b"\n")
    out.flush()
    status(f"dry run: {len(records)} records from {source} would be published to {topic!r}")


@contextlib.contextmanager
def interrupt_sets(stop: asyncio.Event) -> Iterator[None]:
    """The first Ctrl-C sets ``stop`` instead of raising; a second one abandons the wait as usual.

    Raising KeyboardInterrupt mid-send would lose the count of what the broker acknowledged,
    which is exactly what someone who stopped a publish needs to know before resuming it.
    """
    loop = asyncio.get_running_loop()

    def first_interrupt() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)  # back to KeyboardInterrupt for the next one
        status("interrupted: waiting for the records already sent (Ctrl-C again to abandon them)")

    try:
        loop.add_signal_handler(signal.SIGINT, first_interrupt)
    except (NotImplementedError, RuntimeError):  # no signal handlers here (Windows, a thread)
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def outcome_line(result: PublishResult, total: int, source: str, topic: str, bootstrap: str) -> str:
    """The closing status line; an interrupted run says how many were sent and how many were not."""
    where = f"from {source} to {topic!r} at {bootstrap}"
    if result.interrupted:
        return (
            f"interrupted: published {result.delivered} of {total} records (acknowledged by the "
            f"broker) {where}; {total - result.delivered} not published"
        )
    return f"published {result.delivered} records {where}"


async def run_publish(args: argparse.Namespace, records: Sequence[PublishRecord], source: str) -> int:
    stop = asyncio.Event()
    with interrupt_sets(stop):
        return await publish_command(args, records, source, stop)


async def publish_command(
    args: argparse.Namespace, records: Sequence[PublishRecord], source: str, stop: asyncio.Event
) -> int:
    connection = connection_from_args(args)
    topic = args.topic or connection.settings.input_topic
    existing = await cluster_topics(connection)
    hint = " (start the router once, or pass --create-topic)"
    await ensure_or_require_topic(connection, existing, topic, args.create_topic, args.partitions, hint)
    progress = Progress(
        TextColumn(f"publishing to {topic}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with progress:
        task = progress.add_task("publish", total=len(records))
        with kafka_errors_as_user_errors(connection):
            result = await publish_records(
                connection, topic, records, args.rate, lambda: progress.advance(task), stop
            )
    Console().print(count_table(result))
    if result.failures:
        status(f"{len(result.failures)} records failed, first: {result.failures[0]}")
    status(outcome_line(result, len(records), source, topic, connection.bootstrap))
    if result.interrupted:
        return INTERRUPTED_STATUS
    return 1 if result.failures else 0


def handle(args: argparse.Namespace) -> int:
    if args.partitions is not None and args.partitions < 1:
        raise UserError(f"--partitions must be at least 1, not {args.partitions}")
    if args.rate < 0:
        raise UserError(f"--rate must be 0 (as fast as possible) or positive, not {args.rate:g}")
    records, source = load_records(args)
    if args.dry_run:
        print_dry_run(records, source, args.topic or load_tool_settings().input_topic)
        return 0
    return asyncio.run(run_publish(args, records, source))


def add_parser(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "publish",
        help="publish ticket events from a JSONL/JSON/CSV file or generated samples",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "file",
        nargs="?",
        default=None,
        metavar="FILE",
        help="JSONL of TicketEvents (.jsonl/.ndjson), a JSON array of them (.json), or CSV",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=None,
        metavar="N",
        help=f"publish N generated tickets; texts come from the bundled {SAMPLES_RESOURCE}, which the "
        "local tier is not trained on (few distinct texts: they repeat for a large N)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for --sample (default 1)")
    parser.add_argument(
        "--format",
        choices=("auto", "jsonl", "json", "csv"),
        default="auto",
        help="default: by suffix (.jsonl/.ndjson, .json, .csv)",
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN,...",
        help="CSV column mapping, e.g. subject=Title,body=Description,ticket_id=Id,metadata.url=Link",
    )
    parser.add_argument(
        "--account-tier", choices=[t.value for t in AccountTier], default=CsvDefaults.account_tier
    )
    parser.add_argument("--channel", choices=[c.value for c in Channel], default=CsvDefaults.channel)
    parser.add_argument("--customer-id", default=CsvDefaults.customer_id, help="CSV default customer_id")
    parser.add_argument("--topic", default=None, help="default: INPUT_TOPIC (tickets)")
    parser.add_argument("--rate", type=float, default=0.0, metavar="PER_S", help="events per second; 0 = max")
    parser.add_argument(
        "--validate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refuse the whole file if a line is not a valid TicketEvent (default: on)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="read and validate, print each event whole (one JSON per line), publish nothing",
    )
    parser.add_argument("--create-topic", action="store_true", help="create the topic if it is missing")
    parser.add_argument(
        "--partitions", type=int, default=None, help="for --create-topic (default TOPIC_PARTITIONS)"
    )
    add_connection_arguments(parser)
    parser.set_defaults(handler=handle)
