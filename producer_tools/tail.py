"""``ticket-tools tail``: watch routed tickets arrive on queue topics (and triage), live.

"Only new records" cannot use ``auto_offset_reset="latest"``, ``seek_to_end`` or
``offsets_for_times(now)``: on the embedded Tansu broker all three are wrong (ListOffsets reports
the start of the newest batch + 1, ``seek_to_end`` lands on 0, and ``offsets_for_times`` answers
offset 0 for a time after every record). What is right on Tansu and on real Kafka is the high
watermark that every fetch response carries. So the tool assigns the partitions itself (no group,
nothing committed), starts at ``seek_to_end`` (exact on real Kafka, merely early on Tansu), and
when the first fetch response for a partition reports its high watermark, seeks there and drops
anything below it. Records produced after the "following" line on stderr are always shown.

Topics can also be named as they are on the broker (``ticket-tools tail needs-human-triage``),
which is how people and runbooks tend to write it; ``--queue``/``--all``/``--triage`` resolve
names through the prefix and the taxonomy instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple, dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from consumer.errors import UserError
from consumer.routing import reachable_queues
from consumer.taxonomy import load_taxonomy
from producer_tools.kafka_io import (
    Connection,
    add_connection_arguments,
    cluster_topics,
    connection_from_args,
    kafka_errors_as_user_errors,
    reader,
    status,
    topic_partitions,
)
from schemas.codec import DecodeError, decode
from schemas.events import RoutedTicket, TriageRecord

POLL_MS = 200
TABLE_ROWS = 30
COLUMNS = ("ticket", "queue", "team/urgency", "confidence", "account", "tiers", "cost", "latency")


# ---------------------------------------------------------------------------- pure: topic choice


def select_topics(
    existing: Iterable[str],
    queues: Sequence[str],
    all_queues: bool,
    reachable: Sequence[str],
    prefix: str,
    triage_topic: str | None,
    topics: Sequence[str] = (),
) -> list[str]:
    """The topics to follow; names every requested topic the broker does not have.

    ``topics`` are full topic names (the positional arguments), taken as they are: no prefix.
    """
    present = set(existing)
    absent = [topic for topic in topics if topic not in present]
    if absent:
        raise UserError(
            f"topic {', '.join(repr(t) for t in absent)} does not exist on the broker "
            "(positional arguments are topic names as on the broker; --queue takes queue names)"
        )
    if all_queues:
        chosen = [prefix + queue for queue in reachable if prefix + queue in present]
        if not chosen and triage_topic is None and not topics:
            raise UserError(
                f"no queue topics with prefix {prefix!r} exist on the broker (start the router once)"
            )
    else:
        chosen = [prefix + queue for queue in queues]
        missing = [topic for topic in chosen if topic not in present]
        if missing:
            known = [prefix + q for q in reachable if prefix + q in present]
            raise UserError(
                f"no queue topic {', '.join(repr(t) for t in missing)} on the broker "
                f"(existing queue topics: {', '.join(known) or 'none'})"
            )
    if triage_topic is not None:
        if triage_topic not in present:
            raise UserError(f"triage topic {triage_topic!r} does not exist on the broker")
        chosen.append(triage_topic)
    chosen.extend(topics)
    if not chosen:
        raise UserError("nothing to follow: give TOPIC..., --queue NAME..., --all or --triage")
    return list(dict.fromkeys(chosen))


# ---------------------------------------------------------------------------- pure: "only new"


class NewRecordsGate:
    """Decides which records are new: at or above the first high watermark seen per partition."""

    def __init__(self, partitions: Iterable[TopicPartition]) -> None:
        self.pending = set(partitions)
        self.baseline: dict[TopicPartition, int] = {}

    def observe(self, tp: TopicPartition, highwater: int | None) -> bool:
        """Record the first high watermark of ``tp``; True when this made it known."""
        if highwater is None or tp in self.baseline:
            return False
        self.baseline[tp] = highwater
        self.pending.discard(tp)
        return True

    @property
    def ready(self) -> bool:
        return not self.pending

    def keep(self, tp: TopicPartition, offset: int) -> bool:
        start = self.baseline.get(tp)
        return start is not None and offset >= start


# ---------------------------------------------------------------------------- pure: rendering


@dataclass(frozen=True)
class TailRow:
    ticket_id: str
    queue: str
    labels: str
    confidence: str
    account_tier: str
    tiers: str
    cost: str
    latency: str


def row_for(topic: str, value: bytes, triage_topic: str | None) -> TailRow:
    """One table row from a queue record (RoutedTicket) or a triage record (TriageRecord).

    The triage topic is decoded as triage records; any other topic as routed tickets, falling
    back to a triage record, since a topic named on the command line can be either.
    """
    try:
        if topic == triage_topic:
            return _triage_row(topic, decode(TriageRecord, value))
        return _routed_row(decode(RoutedTicket, value))
    except (DecodeError, ValidationError):
        pass
    try:
        return _triage_row(topic, decode(TriageRecord, value))
    except (DecodeError, ValidationError):
        return TailRow("?", topic, "(not a RoutedTicket)", "-", "-", "-", "-", "-")


def _routed_row(routed: RoutedTicket) -> TailRow:
    axes = routed.classification.axes
    labels = "/".join(axes[name].label for name in ("team", "urgency") if name in axes)
    weakest = min(axes.items(), key=lambda item: item[1].confidence, default=None)
    confidence = f"{weakest[1].confidence:.2f} {weakest[0]}" if weakest else "-"
    if routed.low_confidence:
        confidence += " (low)"
    return TailRow(
        ticket_id=routed.ticket.ticket_id,
        queue=routed.queue,
        labels=labels or "-",
        confidence=confidence,
        account_tier=routed.ticket.account_tier.value,
        tiers="→".join(routed.tiers_tried) or "-",
        cost=f"${routed.cost_usd:.5f}",
        latency=f"{routed.latency_ms:.0f} ms",
    )


def _triage_row(topic: str, record: TriageRecord) -> TailRow:
    return TailRow(
        ticket_id=record.ticket_id or "?",
        queue=topic,
        labels=record.error_kind.value,
        confidence="-",
        account_tier="-",
        tiers="→".join(record.tiers_tried) or "-",
        cost="-",
        latency="-",
    )


def render_table(rows: Sequence[TailRow], seen: int, final: bool = False) -> Table:
    table = Table(title=f"ticket-tools tail: {seen} records" + ("" if final else " (Ctrl-C to stop)"))
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for row in rows[-TABLE_ROWS:]:
        table.add_row(*astuple(row))
    return table


def json_line(value: bytes) -> bytes | None:
    """The record's JSON value on one line (re-encoded compactly), or None when it is not JSON."""
    try:
        return orjson.dumps(orjson.loads(value))
    except orjson.JSONDecodeError:
        return None


# ---------------------------------------------------------------------------- Kafka I/O


async def follow(
    connection: Connection,
    partitions: Sequence[TopicPartition],
    from_beginning: bool,
    max_records: int | None,
    timeout_s: float | None,
    emit: Callable[[ConsumerRecord[Any, Any]], None],
    on_ready: Callable[[], None],
) -> int:
    """Call ``emit`` for each record until ``max_records`` or ``timeout_s``; returns the count."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    seen = 0
    async with reader(connection) as consumer:
        consumer.assign(list(partitions))
        gate = None if from_beginning else NewRecordsGate(partitions)
        await (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*partitions)
        if gate is None:
            on_ready()
        while max_records is None or seen < max_records:
            wait_ms = POLL_MS if deadline is None else min(POLL_MS, int((deadline - loop.time()) * 1000))
            if wait_ms <= 0:
                break
            batch = await consumer.getmany(timeout_ms=wait_ms)
            if gate is not None and not gate.ready:
                await _advance_gate(consumer, gate, partitions, on_ready)
            for record in _in_time_order(batch):
                if gate is not None and not gate.keep(
                    TopicPartition(record.topic, record.partition), record.offset
                ):
                    continue
                emit(record)
                seen += 1
                if max_records is not None and seen >= max_records:
                    break
    return seen


async def _advance_gate(
    consumer: AIOKafkaConsumer,
    gate: NewRecordsGate,
    partitions: Sequence[TopicPartition],
    on_ready: Callable[[], None],
) -> None:
    """Take the first high watermark of each partition as its start, and skip the fetch there."""
    for tp in partitions:
        if gate.observe(tp, consumer.highwater(tp)) and await consumer.position(tp) < gate.baseline[tp]:
            consumer.seek(tp, gate.baseline[tp])
    if gate.ready:
        on_ready()


def _in_time_order(
    batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]],
) -> list[ConsumerRecord[Any, Any]]:
    """Records of all partitions merged by timestamp (per-partition order is kept: sort is stable)."""
    records = [record for tp in sorted(batch) for record in batch[tp]]
    return sorted(records, key=lambda record: record.timestamp)


# ---------------------------------------------------------------------------- command


async def run_tail(args: argparse.Namespace) -> int:
    connection = connection_from_args(args)
    settings = connection.settings
    prefix = settings.queue_topic_prefix if args.prefix is None else args.prefix
    triage_name = args.triage_topic or settings.triage_topic
    triage_topic = triage_name if args.triage else None
    reachable = reachable_queues(load_taxonomy(args.taxonomy or settings.taxonomy_path))
    existing = await cluster_topics(connection)
    topics = select_topics(existing, args.queue, args.all, reachable, prefix, triage_topic, args.topics)
    partitions = topic_partitions(existing, topics)

    def ready() -> None:
        where = "from the beginning" if args.from_beginning else "new records only"
        status(f"following {', '.join(topics)} ({len(partitions)} partitions, {where})")

    with kafka_errors_as_user_errors(connection):
        if args.json:
            seen = await follow(
                connection, partitions, args.from_beginning, args.max, args.timeout, _print_json, ready
            )
        else:
            seen = await _follow_table(connection, partitions, args, triage_name, ready)
    status(f"tail: {seen} records")
    return 0


def _print_json(record: ConsumerRecord[Any, Any]) -> None:
    line = json_line(record.value or b"")
    if line is None:
        print(
            f"{record.topic}/{record.partition}/{record.offset}: value is not JSON, skipped", file=sys.stderr
        )
        return
    sys.stdout.buffer.write(line + b"\n")
    sys.stdout.buffer.flush()


async def _follow_table(
    connection: Connection,
    partitions: Sequence[TopicPartition],
    args: argparse.Namespace,
    triage_topic: str | None,
    ready: Callable[[], None],
) -> int:
    """A live table on a terminal; one plain line per record when piped (Live would show nothing)."""
    console = Console()
    rows: list[TailRow] = []
    shown = 0
    if not console.is_terminal:
        print("\t".join(COLUMNS), flush=True)

        def add_line(record: ConsumerRecord[Any, Any]) -> None:
            print("\t".join(astuple(row_for(record.topic, record.value or b"", triage_topic))), flush=True)

        return await follow(
            connection, partitions, args.from_beginning, args.max, args.timeout, add_line, ready
        )
    with Live(render_table(rows, 0), console=console, refresh_per_second=4) as live:

        def add(record: ConsumerRecord[Any, Any]) -> None:
            nonlocal shown
            shown += 1
            rows.append(row_for(record.topic, record.value or b"", triage_topic))
            del rows[:-TABLE_ROWS]
            live.update(render_table(rows, shown))

        seen = await follow(connection, partitions, args.from_beginning, args.max, args.timeout, add, ready)
        live.update(render_table(rows, seen, final=True))
    return seen


def handle(args: argparse.Namespace) -> int:
    if args.max is not None and args.max < 1:
        raise UserError(f"--max must be at least 1, not {args.max}")
    if args.timeout is not None and args.timeout <= 0:
        raise UserError(f"--timeout must be positive, not {args.timeout:g}")
    if args.all and args.queue:
        raise UserError("give either --queue NAME... or --all, not both")
    return asyncio.run(run_tail(args))


def add_parser(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "tail",
        help="follow queue topics (and triage) as a live table or JSON lines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "topics",
        nargs="*",
        default=[],
        metavar="TOPIC",
        help="topic names as on the broker, e.g. needs-human-triage or a prefixed queue topic",
    )
    parser.add_argument(
        "--queue",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="queue names, e.g. billing-normal",
    )
    parser.add_argument("--all", action="store_true", help="every reachable queue topic that exists")
    parser.add_argument("--triage", action="store_true", help="also follow the triage topic")
    parser.add_argument("--triage-topic", default=None, help="default: TRIAGE_TOPIC (needs-human-triage)")
    parser.add_argument("--prefix", default=None, help="queue topic prefix (default: QUEUE_TOPIC_PREFIX)")
    parser.add_argument(
        "--taxonomy", default=None, help="taxonomy for --all (default: TAXONOMY_PATH or bundled)"
    )
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    parser.add_argument("--json", action="store_true", help="one JSON line per record on stdout")
    parser.add_argument("--max", type=int, default=None, metavar="N", help="stop after N records")
    parser.add_argument("--timeout", type=float, default=None, metavar="S", help="stop after S seconds")
    add_connection_arguments(parser)
    parser.set_defaults(handler=handle)
