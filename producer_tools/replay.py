"""``ticket-tools replay``: send triaged tickets back to the input topic for another try.

For when the cause is gone (the LLM was down, a threshold was too strict, a schema bug was fixed).
The ORIGINAL bytes go back with the original key, except that a JSON object's ``event_id`` is
replaced by a fresh one: the router drops an event id it has already seen, and the replay is a new
event about the same ticket. Headers say where the replay came from so it can be traced and is
never mistaken for upstream traffic. The triage topic is read with manual assignment and no
group, so replaying changes nobody's committed offsets and can be repeated with ``--dry-run``.

Without ``--error-kind`` every kind is replayed except malformed_json, schema_invalid and
too_large: those originals would be refused again exactly as they were, unless the router itself
changed (name them with ``--error-kind`` then). The summary accounts for every record read.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import TopicPartition
from pydantic import ValidationError

from consumer.errors import UserError
from consumer.kafka.reading import caught_up
from consumer.kafka.topics import ensure_topics
from producer_tools.kafka_io import (
    Connection,
    add_connection_arguments,
    cluster_topics,
    connection_from_args,
    kafka_errors_as_user_errors,
    producer,
    reader,
    require_topics,
    status,
    topic_partitions,
)
from schemas.codec import DecodeError, bytes_from_record, decode
from schemas.events import ErrorKind, TriageRecord

POLL_MS = 200
HEADER_FROM = "x-replayed-from"
HEADER_KIND = "x-replay-error-kind"
HEADER_AT = "x-replayed-at"
HEADER_ORIGINAL = "x-original-source"
HEADER_ORIGINAL_EVENT_ID = "x-original-event-id"
ALL_KINDS = "all"
UNCHANGED_FAILS: frozenset[ErrorKind] = frozenset(
    {ErrorKind.MALFORMED_JSON, ErrorKind.SCHEMA_INVALID, ErrorKind.TOO_LARGE, ErrorKind.DRAFT_FAILED}
)
"""Kinds whose original bytes the input topic refuses again as they are: replayed only when named.
A ``draft_failed`` record holds a routed ticket (the drafter's input), not a TicketEvent."""
DEFAULT_KINDS: frozenset[ErrorKind] = frozenset(ErrorKind) - UNCHANGED_FAILS


# ---------------------------------------------------------------------------- pure: filtering


def parse_error_kinds(values: Sequence[str]) -> frozenset[ErrorKind]:
    """``--error-kind`` values (repeatable, comma-separated allowed).

    None given means ``DEFAULT_KINDS``: replaying a record that can only be triaged again is
    noise in the triage topic. ``all`` means every kind.
    """
    allowed = [kind.value for kind in ErrorKind]
    kinds: set[ErrorKind] = set()
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            if name == ALL_KINDS:
                kinds.update(ErrorKind)
                continue
            if name not in allowed:
                raise UserError(
                    f"--error-kind: unknown kind {name!r} (allowed: {', '.join(allowed)}, {ALL_KINDS})"
                )
            kinds.add(ErrorKind(name))
    return frozenset(kinds) if kinds else DEFAULT_KINDS


@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


class NotReplayable(ValueError):
    """A triage record that cannot be sent back as it was (truncated original, bad base64)."""


@dataclass(frozen=True)
class ReplayRecord:
    """What goes to the input topic for one triage record."""

    triage: Position
    error_kind: ErrorKind
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    old_event_id: str | None
    new_event_id: str | None


def decode_triage(value: bytes | None) -> TriageRecord | None:
    """The triage record, or None for a value that is not one (skipped and counted, not fatal)."""
    if value is None:
        return None
    try:
        return decode(TriageRecord, value)
    except (DecodeError, ValidationError):
        return None


def with_fresh_event_id(original: bytes, new_id: str) -> tuple[bytes, str | None]:
    """(value to send, replaced event id); the bytes are unchanged unless there is an id to replace.

    Only a JSON object that has an ``event_id`` is rewritten: anything else is replayed byte for
    byte, since the router would treat it exactly as it did the first time anyway.
    """
    try:
        document = orjson.loads(original)
    except orjson.JSONDecodeError:
        return original, None
    if not isinstance(document, dict) or "event_id" not in document:
        return original, None
    old = document["event_id"]
    document["event_id"] = new_id
    return orjson.dumps(document), str(old)


def build_replay(record: TriageRecord, triage: Position, replayed_at: datetime, new_id: str) -> ReplayRecord:
    """The record to publish for one triage record; raises NotReplayable when that is impossible."""
    if record.original_truncated:
        raise NotReplayable(f"{triage}: the original was truncated in the triage record")
    try:
        original = bytes_from_record(record.original_value, record.original_encoding)
    except ValueError as exc:
        raise NotReplayable(f"{triage}: the original value cannot be decoded ({exc})") from None
    value, old_event_id = with_fresh_event_id(original, new_id)
    source = record.source
    headers = [
        (HEADER_FROM, str(triage).encode()),
        (HEADER_KIND, record.error_kind.value.encode()),
        (HEADER_AT, replayed_at.isoformat().encode()),
        (HEADER_ORIGINAL, f"{source.topic}/{source.partition}/{source.offset}".encode()),
    ]
    if old_event_id is not None:
        headers.append((HEADER_ORIGINAL_EVENT_ID, old_event_id.encode()))
    return ReplayRecord(
        triage=triage,
        error_kind=record.error_kind,
        key=record.original_key.encode("utf-8") if record.original_key is not None else None,
        value=value,
        headers=headers,
        old_event_id=old_event_id,
        new_event_id=new_id if old_event_id is not None else None,
    )


@dataclass
class ReplayPlan:
    """Everything read from the triage topic, sorted into what will and will not be replayed.

    Every record read lands in exactly one bucket, so ``accounted == read`` always holds and the
    summary can show where each one went.
    """

    replays: list[ReplayRecord] = field(default_factory=list)
    read: int = 0
    other_kinds: Counter[str] = field(default_factory=Counter)
    undecodable: list[str] = field(default_factory=list)
    not_replayable: list[str] = field(default_factory=list)
    past_max: int = 0
    caught_up: bool = True

    @property
    def filtered_out(self) -> int:
        return sum(self.other_kinds.values())

    @property
    def skipped(self) -> int:
        return len(self.undecodable) + len(self.not_replayable)

    @property
    def accounted(self) -> int:
        return len(self.replays) + self.filtered_out + self.skipped + self.past_max


def plan_replays(
    records: Iterable[tuple[Position, bytes | None]],
    kinds: frozenset[ErrorKind],
    now: Callable[[], datetime],
    new_id: Callable[[], str],
    plan: ReplayPlan | None = None,
    max_replays: int | None = None,
) -> ReplayPlan:
    """Add raw triage records to the plan: decode, filter by kind, build the replay.

    Once ``max_replays`` replays are planned, the rest of a fetched batch is counted as past
    ``--max`` rather than dropped silently.
    """
    plan = plan or ReplayPlan()
    for position, value in records:
        plan.read += 1
        if max_replays is not None and len(plan.replays) >= max_replays:
            plan.past_max += 1
            continue
        record = decode_triage(value)
        if record is None:
            plan.undecodable.append(f"{position}: not a TriageRecord")
            continue
        if record.error_kind not in kinds:
            plan.other_kinds[record.error_kind.value] += 1
            continue
        try:
            plan.replays.append(build_replay(record, position, now(), new_id()))
        except NotReplayable as exc:
            plan.not_replayable.append(str(exc))
    return plan


# ---------------------------------------------------------------------------- Kafka I/O


async def read_triage(
    connection: Connection,
    partitions: Sequence[TopicPartition],
    kinds: frozenset[ErrorKind],
    max_replays: int | None,
    timeout_s: float | None,
) -> ReplayPlan:
    """Read from the beginning until caught up with every partition's high watermark.

    The high watermark (from fetch responses) is the only end-of-partition figure that is right on
    Tansu as well as on Kafka; ``end_offsets`` is not.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    plan = ReplayPlan(caught_up=False)
    async with reader(connection) as consumer:
        consumer.assign(list(partitions))
        await consumer.seek_to_beginning(*partitions)
        while max_replays is None or len(plan.replays) < max_replays:
            if await caught_up(consumer, partitions):
                plan.caught_up = True
                break
            wait_ms = POLL_MS if deadline is None else min(POLL_MS, int((deadline - loop.time()) * 1000))
            if wait_ms <= 0:
                break
            batch = await consumer.getmany(timeout_ms=wait_ms)
            for tp in sorted(batch):
                raw = [(Position(r.topic, r.partition, r.offset), r.value) for r in batch[tp]]
                plan_replays(raw, kinds, _utc_now, _fresh_id, plan, max_replays)
        if not plan.caught_up:  # stopped by --max or --timeout: was that the end anyway?
            plan.caught_up = await caught_up(consumer, partitions)
    return plan


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _fresh_id() -> str:
    return str(uuid.uuid4())


async def publish_replays(
    connection: Connection, topic: str, replays: Sequence[ReplayRecord]
) -> Counter[str]:
    """Send every replay and wait for the acknowledgements; returns the count per error kind."""
    sent: Counter[str] = Counter()
    async with producer(connection) as client:
        futures = [
            await client.send(topic, replay.value, key=replay.key, headers=replay.headers)
            for replay in replays
        ]
        for replay, future in zip(replays, futures, strict=True):
            await future
            sent[replay.error_kind.value] += 1
    return sent


# ---------------------------------------------------------------------------- command


def describe(replay: ReplayRecord) -> str:
    key = replay.key.decode("utf-8", "replace") if replay.key is not None else "-"
    change = f" event_id {replay.old_event_id} → fresh" if replay.old_event_id is not None else ""
    return f"{replay.triage} [{replay.error_kind.value}] key={key}{change}"


def by_kind(counts: Counter[str]) -> str:
    return ", ".join(f"{kind}: {count}" for kind, count in sorted(counts.items()))


def summary(
    plan: ReplayPlan, counts: Counter[str], verb: str, topic: str, kinds: frozenset[ErrorKind]
) -> str:
    """One line in which replayed + other kinds + not replayable + past --max = read."""
    replayed = sum(counts.values())
    other = f" ({by_kind(plan.other_kinds)})" if plan.other_kinds else ""
    parts = [f"{replayed} {verb}", f"{plan.filtered_out} of other kinds{other}"]
    parts.append(f"{plan.skipped} not replayable")
    if plan.past_max:
        parts.append(f"{plan.past_max} past --max")
    line = (
        f"{verb} {replayed} records to {topic!r} ({by_kind(counts) or 'none'}); "
        f"read {plan.read} triage records: {', '.join(parts)}"
    )
    left_out = sorted(kind.value for kind in UNCHANGED_FAILS - kinds if kind.value in plan.other_kinds)
    if left_out and kinds == DEFAULT_KINDS:
        line += (
            f"; not replayed by default, since they would be triaged again unchanged: "
            f"{', '.join(left_out)} (name a kind with --error-kind to replay it)"
        )
    return line


def replay_partitions(connection: Connection, existing: dict[str, list[int]], requested: int | None) -> int:
    """Partitions for a created target: ``--partitions``, else the input topic's, else TOPIC_PARTITIONS."""
    if requested is not None:
        return requested
    input_partitions = existing.get(connection.settings.input_topic)
    return len(input_partitions) if input_partitions else connection.settings.topic_partitions


async def prepare_target(
    connection: Connection, existing: dict[str, list[int]], target: str, args: argparse.Namespace
) -> None:
    """Create the target with ``--create-topic``, else refuse a missing one naming the flag.

    A dry run creates nothing and only warns, so it can still show what would be replayed.
    """
    if target in existing:
        return
    hint = " (pass --create-topic to create it; --partitions N to choose its partition count)"
    if args.dry_run:
        status(f"note: topic {target!r} does not exist on the broker{hint}")
        return
    if not args.create_topic:
        require_topics(existing, [target], hint)
    partitions = replay_partitions(connection, existing, args.partitions)
    with kafka_errors_as_user_errors(connection):
        await ensure_topics(
            [target], partitions, connection.settings.topic_replication_factor, connection.options()
        )
    status(f"created topic {target!r} with {partitions} partitions")


async def run_replay(args: argparse.Namespace, kinds: frozenset[ErrorKind]) -> int:
    connection = connection_from_args(args)
    triage_topic = args.triage_topic or connection.settings.triage_topic
    target = args.topic or connection.settings.input_topic
    existing = await cluster_topics(connection)
    require_topics(existing, [triage_topic])
    await prepare_target(connection, existing, target, args)
    partitions = topic_partitions(existing, [triage_topic])
    with kafka_errors_as_user_errors(connection):
        plan = await read_triage(connection, partitions, kinds, args.max, args.timeout)
    for problem in [*plan.undecodable[:5], *plan.not_replayable[:5]]:
        status(f"skipped: {problem}")
    if not plan.caught_up and (args.max is None or len(plan.replays) < args.max):
        status(f"stopped after {args.timeout:g}s before reaching the end of {triage_topic!r}")
    elif not plan.caught_up:
        status(f"stopped at --max {args.max} before the end of {triage_topic!r}: later records were not read")
    if args.dry_run:
        for replay in plan.replays:
            print(f"would replay {describe(replay)}")
        counts = Counter(replay.error_kind.value for replay in plan.replays)
        status("dry run: " + summary(plan, counts, "would replay", target, kinds))
        return 0
    with kafka_errors_as_user_errors(connection):
        counts = await publish_replays(connection, target, plan.replays)
    status(summary(plan, counts, "replayed", target, kinds))
    return 0


def handle(args: argparse.Namespace) -> int:
    kinds = parse_error_kinds(args.error_kind)
    if args.max is not None and args.max < 1:
        raise UserError(f"--max must be at least 1, not {args.max}")
    if args.timeout is not None and args.timeout <= 0:
        raise UserError(f"--timeout must be positive, not {args.timeout:g}")
    if args.partitions is not None and args.partitions < 1:
        raise UserError(f"--partitions must be at least 1, not {args.partitions}")
    if args.partitions is not None and not args.create_topic:
        raise UserError("--partitions only applies with --create-topic")
    return asyncio.run(run_replay(args, kinds))


def add_parser(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "replay",
        help="re-publish triaged tickets to the input topic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--error-kind",
        action="append",
        default=[],
        metavar="KIND",
        help="replay only these kinds (repeatable, or comma-separated): "
        f"{', '.join(k.value for k in ErrorKind)}, or {ALL_KINDS}. Default: all but "
        f"{', '.join(sorted(k.value for k in UNCHANGED_FAILS))}, which would be triaged again unchanged",
    )
    parser.add_argument("--triage-topic", default=None, help="read from (default: TRIAGE_TOPIC)")
    parser.add_argument("--topic", default=None, help="publish to (default: INPUT_TOPIC)")
    parser.add_argument("--max", type=int, default=None, metavar="N", help="replay at most N records")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="stop reading after S seconds (default: at the end)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be replayed, publish nothing"
    )
    parser.add_argument(
        "--create-topic", action="store_true", help="create the --topic target if it does not exist"
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        metavar="N",
        help="for --create-topic (default: the input topic's partitions, else TOPIC_PARTITIONS)",
    )
    add_connection_arguments(parser)
    parser.set_defaults(handler=handle)
