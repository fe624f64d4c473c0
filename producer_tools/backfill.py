"""``ticket-tools backfill``: classify a backlog through the Message Batches API, at half the price.

SOURCE is a JSONL/JSON/CSV file (the formats and ``--map`` of ``publish``) or a topic range
(``--topic T`` with ``--from-offset``/``--from-time`` and ``--to-offset``/``--to-time``). Every ticket
gets the request the live path sends (the Claude tier's system prompt, retrieved examples, output
schema and model settings; the cached prefix with the 1-hour TTL, since batches take long), with
a ``custom_id`` that maps back to its source position. Requests are cut into batches within the
API's limits, submitted and polled; results go through the live path's validation, thresholds
and routing: confident answers are routed (``--publish``: to the queue topics; otherwise written
as RoutedTicket JSONL to ``--out``), low-confidence ones go to a second batch on the strong model,
errored/expired/invalid ones are retried once and then triaged with the reason. Every ticket ends
in exactly one outcome, and the summary compares the spend with the live price of the same tokens.

The run is resumable: ``--state`` records batch ids, outcomes and what was written; running the
same command again after Ctrl-C, a crash or a kill continues without re-submitting a batch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, cast

import anthropic
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from consumer.classify.base import axes_below_threshold
from consumer.classify.claude import (
    ClaudeTier,
    Reply,
    classification_from_reply,
    cost_usd,
    failure_from_exception,
    usage_from,
)
from consumer.classify.pipeline import Pipeline, PipelineResult, tiers_for_ticket
from consumer.classify.prompt import AnswerError
from consumer.config import Settings, load_settings
from consumer.errors import UserError
from consumer.kafka.reading import caught_up
from consumer.processing import (
    InputRecord,
    Outcome,
    ProcessorConfig,
    RecordProcessor,
    Unreadable,
    read_record,
)
from consumer.service import build_claude_tiers, prompt_version_of
from consumer.taxonomy import Taxonomy, load_taxonomy
from producer_tools.backfill_plan import (
    Conclude,
    Limits,
    ResultKind,
    Step,
    after_result,
    batch_price,
    custom_id_for,
    index_of,
    spend_line,
    split_batches,
    tally,
    unaccounted,
)
from producer_tools.backfill_state import BackfillState, BatchEntry, TicketProgress, load_state, save_state
from producer_tools.evaluate import moment
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
from producer_tools.publish import INTERRUPTED_STATUS, CsvDefaults, load_records
from schemas.events import AccountTier, Channel, Classification, ErrorKind, TicketEvent, TierAttempt

CLAUDE_TIERS = ("fast", "strong")
DEFAULT_POLL_S = 30.0
POLL_MS = 200
API_TIMEOUT_S = 600.0  # creating a batch uploads up to 256 MB
API_RETRIES = 2


# ---------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class SourceItem:
    """One record of the source, as the router would read it: a ticket, or why it is not one."""

    record: InputRecord
    ticket: TicketEvent | Unreadable


def items_from_file(args: argparse.Namespace, max_bytes: int) -> tuple[list[SourceItem], str]:
    """The file's records through ``publish``'s readers (so the formats and ``--map`` are the same)."""
    records, source = load_records(args)
    items = []
    for record in records:
        position = InputRecord(source, 0, record.line, record.key, record.value)
        items.append(SourceItem(position, read_record(record.value, max_bytes, TicketEvent)))
    return items, source


@dataclass(frozen=True)
class TopicRange:
    topic: str
    from_offset: int | None
    to_offset: int | None
    from_ms: int | None
    to_ms: int | None

    def wants(self, offset: int, timestamp_ms: int) -> bool:
        """Offsets are half-open ``[from, to)`` per partition, times ``[from, to)`` by record timestamp."""
        if self.to_offset is not None and offset >= self.to_offset:
            return False
        if self.from_ms is not None and timestamp_ms < self.from_ms:
            return False
        return self.to_ms is None or timestamp_ms < self.to_ms


def topic_range(args: argparse.Namespace) -> TopicRange:
    """The ``--topic`` flags checked: offsets not negative and ordered, times ordered."""
    since, until = moment("--from-time", args.from_time), moment("--to-time", args.to_time)
    for flag, value in (("--from-offset", args.from_offset), ("--to-offset", args.to_offset)):
        if value is not None and value < 0:
            raise UserError(f"{flag} must be 0 or more, not {value}")
    if args.from_offset is not None and args.to_offset is not None and args.from_offset >= args.to_offset:
        raise UserError(f"--from-offset {args.from_offset} is not before --to-offset {args.to_offset}")
    if since is not None and until is not None and since >= until:
        raise UserError(f"--from-time {args.from_time} is not before --to-time {args.to_time}")
    return TopicRange(args.topic, args.from_offset, args.to_offset, _ms(since), _ms(until))


def _ms(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp() * 1000)


async def items_from_topic(connection: Connection, wanted: TopicRange, max_bytes: int) -> list[SourceItem]:
    """The range's records, read with no group (nothing is committed) up to each high watermark."""
    existing = await cluster_topics(connection)
    require_topics(existing, [wanted.topic])
    partitions = topic_partitions(existing, [wanted.topic])
    items: list[SourceItem] = []
    async with reader(connection) as consumer:
        consumer.assign(partitions)
        for tp in partitions:
            if wanted.from_offset is not None:
                consumer.seek(tp, wanted.from_offset)
            else:
                await consumer.seek_to_beginning(tp)
        while not await caught_up(consumer, partitions):
            batch = await consumer.getmany(timeout_ms=POLL_MS)
            for tp in sorted(batch):
                for record in batch[tp]:
                    if wanted.wants(record.offset, record.timestamp):
                        position = InputRecord(
                            record.topic, record.partition, record.offset, record.key, record.value
                        )
                        ticket = read_record(record.value or b"", max_bytes, TicketEvent)
                        items.append(SourceItem(position, ticket))
    return items


def fingerprint(items: Sequence[SourceItem], prompt_version: str) -> str:
    """What a rerun must match to continue a state: the same records and the same prompt."""
    digest = hashlib.sha256(prompt_version.encode())
    for item in items:
        digest.update(orjson.dumps([item.record.topic, item.record.partition, item.record.offset]))
        digest.update(item.record.value or b"")
    return digest.hexdigest()


# ---------------------------------------------------------------------------- outputs


class Outputs:
    """Where outcomes go: JSONL files (cut back to the committed size on resume) or Kafka topics."""

    def __init__(
        self, out: Path, triage_out: Path, state: BackfillState, connection: Connection | None
    ) -> None:
        self.paths = {"routed": out, "triaged": triage_out}
        self.connection = connection
        self.files: dict[str, IO[bytes]] = {}
        self.sends: list[Awaitable[Any]] = []
        self._producer: Any = None
        self._context: contextlib.AbstractAsyncContextManager[Any] | None = None
        if connection is None:
            for path in self.paths.values():
                self.files[str(path)] = _reopen_at(path, state.written_bytes.get(str(path), 0))

    async def start(self) -> None:
        if self.connection is not None:
            self._context = producer(self.connection)
            self._producer = await self._context.__aenter__()

    async def write(self, outcome: Outcome) -> None:
        if outcome.kind == "skipped" or outcome.value is None:
            return
        if self._producer is not None:
            assert outcome.topic is not None
            self.sends.append(await self._producer.send(outcome.topic, outcome.value, key=outcome.key))
            return
        self.files[str(self.paths[outcome.kind])].write(outcome.value + b"\n")

    async def commit(self, state: BackfillState) -> None:
        """Everything written so far made durable (fsync, or every send acknowledged), then recorded."""
        if self.sends:
            await asyncio.gather(*self.sends)
            self.sends = []
        for name, file in self.files.items():
            file.flush()
            os.fsync(file.fileno())
            state.written_bytes[name] = file.tell()

    async def close(self) -> None:
        for file in self.files.values():
            file.close()
        if self._context is not None:
            await self._context.__aexit__(None, None, None)


def _reopen_at(path: Path, size: int) -> IO[bytes]:
    """The file opened for appending after cutting it to ``size``: a tail written after the last
    save of the state belongs to a batch that is collected again, so it would be written twice."""
    try:
        file = path.open("r+b") if path.exists() else path.open("w+b")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    file.truncate(min(size, path.stat().st_size))
    file.seek(0, os.SEEK_END)
    return file


# ---------------------------------------------------------------------------- the run


@dataclass
class Run:
    """Everything one backfill needs, built once: tiers, routing, state, outputs, the batches client."""

    settings: Settings
    taxonomy: Taxonomy
    tiers: dict[str, ClaudeTier]
    items: list[SourceItem]
    state: BackfillState
    state_path: Path
    outputs: Outputs
    processor: RecordProcessor
    client: anthropic.AsyncAnthropic
    limits: Limits
    poll_s: float
    is_english: Callable[[TicketEvent], bool]
    classifications: dict[int, Classification] = field(default_factory=dict)

    def save(self) -> None:
        save_state(self.state_path, self.state)

    def tier_order(self, ticket: TicketEvent) -> list[str]:
        return tiers_for_ticket(
            list(self.tiers), self.is_english(ticket), self.settings.non_english_to_strong
        )

    def next_step(self, index: int, ticket: TicketEvent) -> Step:
        progress = self.state.progress.get(index)
        return progress.step if progress is not None else Step(self.tier_order(ticket)[0])


async def settle_unreadable_and_skipped(run: Run) -> None:
    """Records the live router would triage unread (bad JSON, schema) or skip (agent replies,
    repeated events) get that outcome at once, before any batch."""
    seen: set[str] = set()
    for index, item in enumerate(run.items):
        ticket = item.ticket
        if isinstance(ticket, TicketEvent):
            repeated = ticket.event_id in seen
            seen.add(ticket.event_id)
            if repeated or ticket.author_role.value == "agent":
                run.state.outcomes.setdefault(index, "skipped")
            continue
        if index not in run.state.outcomes:
            await run.outputs.write(
                run.processor.triage(item.record, ticket.kind, ticket.message, document=ticket.document)
            )
            run.state.outcomes[index] = "triaged"
    await run.outputs.commit(run.state)
    run.save()


def pending(run: Run) -> dict[Step, list[int]]:
    """Tickets with no outcome and not in a submitted batch, grouped by the request they need next."""
    busy = run.state.in_flight()
    groups: dict[Step, list[int]] = {}
    for index, item in enumerate(run.items):
        if index in run.state.outcomes or index in busy or not isinstance(item.ticket, TicketEvent):
            continue
        groups.setdefault(run.next_step(index, item.ticket), []).append(index)
    return groups


async def submit(run: Run, step: Step, indices: list[int]) -> None:
    """The step's requests cut into batches within the limits; each batch id is saved once created."""
    tier = run.tiers[step.tier]
    requests: dict[int, dict[str, Any]] = {}
    sizes: list[tuple[int, int]] = []
    for index in indices:
        ticket = cast(TicketEvent, run.items[index].ticket)
        content, _ = tier.user_content(ticket)
        params = tier.message_params(content)
        requests[index] = {"custom_id": custom_id_for(index, ticket.ticket_id), "params": params}
        sizes.append((index, len(orjson.dumps(params))))
    try:
        chunks = split_batches(sizes, run.limits)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for chunk in chunks:
        batch = await run.client.messages.batches.create(requests=[requests[i] for i in chunk])  # type: ignore[misc]
        run.state.batches.append(BatchEntry(id=batch.id, tier=step.tier, attempt=step.attempt, indices=chunk))
        run.save()
        status(f"submitted batch {batch.id}: {len(chunk)} requests to {tier.model} ({step.tier} tier)")


@dataclass(frozen=True)
class Judged:
    kind: ResultKind
    attempt: TierAttempt
    classification: Classification | None
    live_usd: float


def judge(result: Any, tier: ClaudeTier, thresholds: dict[str, float]) -> Judged:
    """One batch result read the way the live tier reads a reply, priced at the batch rate."""

    def attempt(outcome: str, usage: Any = None, usd: float = 0.0, error: str | None = None) -> TierAttempt:
        fields: dict[str, Any] = {"tier": tier.name, "model": tier.model, "outcome": outcome, "attempts": 1}
        fields.update(latency_ms=0.0, cost_usd=usd, error=error)
        if usage is not None:
            fields["usage"] = usage
        return TierAttempt.model_validate(fields)

    if result.type != "succeeded":
        reason = result.type
        if result.type == "errored":
            error = result.error.error
            reason = f"errored: {error.type}: {error.message}"
        return Judged(
            "failed", attempt("unavailable", error=f"{tier.model}: batch result {reason}"), None, 0.0
        )
    reply = Reply.model_validate(result.message.model_dump(mode="json"))
    usage, one_hour = usage_from(reply.usage)
    live = cost_usd(usage, tier.price, one_hour)
    texts = [block.text or "" for block in reply.content if block.type == "text"]
    try:
        classification = classification_from_reply(reply.stop_reason, texts, tier.taxonomy)
    except AnswerError as exc:
        failed = attempt("invalid_output", usage, batch_price(live), f"{tier.model}: {exc}")
        return Judged("invalid", failed, None, live)
    below = axes_below_threshold(classification, thresholds)
    outcome = "low_confidence" if below else "answered"
    kind: ResultKind = "low_confidence" if below else "confident"
    return Judged(kind, attempt(outcome, usage, batch_price(live)), classification, live)


async def collect(run: Run, entry: BatchEntry) -> None:
    """Every result of an ended batch decided and written, then the batch marked collected."""
    tier = run.tiers[entry.tier]
    thresholds = run.taxonomy.thresholds()
    seen: set[int] = set()
    async for line in await run.client.messages.batches.results(entry.id):
        index = index_of(line.custom_id)
        if index not in entry.indices or index in seen:
            continue
        seen.add(index)
        await decide(run, index, Step(entry.tier, entry.attempt), judge(line.result, tier, thresholds))
    for index in sorted(set(entry.indices) - seen):  # a result the file lacks is a failed request
        missing = Judged("failed", _missing_attempt(tier), None, 0.0)
        await decide(run, index, Step(entry.tier, entry.attempt), missing)
    entry.collected = True
    await run.outputs.commit(run.state)
    run.save()


def _missing_attempt(tier: ClaudeTier) -> TierAttempt:
    return TierAttempt(
        tier=tier.name,
        model=tier.model,
        outcome="unavailable",
        attempts=1,
        latency_ms=0.0,
        error=f"{tier.model}: no result for this request in the batch's results",
    )


async def decide(run: Run, index: int, step: Step, judged: Judged) -> None:
    """The result's next step: another request (saved in the state's progress) or the outcome."""
    state = run.state
    item = run.items[index]
    ticket = cast(TicketEvent, item.ticket)
    state.batch_usd += judged.attempt.cost_usd
    state.live_usd += judged.live_usd
    before = state.progress.pop(index, None)
    history = with_attempt(before.history if before else [], judged.attempt)
    classification = judged.classification or (before.classification if before else None)
    decision = after_result(judged.kind, step, run.tier_order(ticket), run.settings.low_confidence_action)
    if isinstance(decision, Step):
        state.progress[index] = TicketProgress(
            tier=decision.tier,
            attempt=decision.attempt,
            history=history,
            classification=classification,
            last_error=judged.attempt.error or "",
        )
        return
    await conclude(run, index, decision, PipelineResult(classification, history), judged)


def with_attempt(history: Sequence[TierAttempt], latest: TierAttempt) -> list[TierAttempt]:
    """The ticket's attempts with ``latest`` added: a retry on the same tier is folded into that
    tier's attempt (calls, tokens and cost added up), as the live tier counts its own retries, so
    ``tiers_tried`` and ``escalated`` mean what they mean for a live decision."""
    if not history or history[-1].tier != latest.tier:
        return [*history, latest]
    previous = history[-1]
    folded = latest.model_copy(
        update={
            "attempts": previous.attempts + latest.attempts,
            "usage": previous.usage + latest.usage,
            "cost_usd": previous.cost_usd + latest.cost_usd,
        }
    )
    return [*history[:-1], folded]


async def conclude(run: Run, index: int, decision: Conclude, result: PipelineResult, judged: Judged) -> None:
    item = run.items[index]
    ticket = cast(TicketEvent, item.ticket)
    if decision.outcome == "routed" and result.classification is not None:
        result.low_confidence = decision.flagged
        outcome = run.processor.routed(item.record, ticket, result, 0.0)
    else:
        kind = ErrorKind(decision.error_kind or "internal")
        message = judged.attempt.error or f"{judged.attempt.tier}: below threshold"
        outcome = run.processor.triage(item.record, kind, message, ticket=ticket, result=result)
    await run.outputs.write(outcome)
    run.state.outcomes[index] = outcome.kind


async def wait_for_batches(run: Run, progress: ProgressBar) -> None:
    """Polls every open batch; each that has ended is collected at once (its results are final)."""
    while run.state.open_batches():
        ended = 0
        for entry in run.state.open_batches():
            batch = await run.client.messages.batches.retrieve(entry.id)
            if batch.processing_status == "ended":
                await collect(run, entry)
                ended += 1
            progress.show(run.state)
        if not ended and run.state.open_batches():
            await asyncio.sleep(run.poll_s)  # the API is asked again after the poll interval


class ProgressBar:
    """The progress bar on stderr: tickets with an outcome of all tickets, and open batches."""

    def __init__(self, total: int) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self.task = self.bar.add_task("backfill", total=total)

    def show(self, state: BackfillState) -> None:
        open_count = len(state.open_batches())
        description = f"backfill: {len(state.batches)} batches, {open_count} open"
        self.bar.update(self.task, completed=len(state.outcomes), description=description)


async def drive(run: Run) -> None:
    """Rounds of submit-and-collect until every ticket has an outcome (escalations and retries
    are the later rounds)."""
    await settle_unreadable_and_skipped(run)
    progress = ProgressBar(len(run.items))
    with progress.bar:
        progress.show(run.state)
        while True:
            for step, indices in sorted(
                pending(run).items(), key=lambda pair: (pair[0].attempt, pair[0].tier)
            ):
                await submit(run, step, indices)
            if not run.state.open_batches():
                break
            await wait_for_batches(run, progress)
        progress.show(run.state)


# ---------------------------------------------------------------------------- summary


def summary_table(run: Run) -> Table:
    """Outcomes by kind (triage by reason), batches, and the spend against the live price."""
    state = run.state
    counts = tally(state.outcomes.values())
    table = Table(title=f"backfill of {state.source}")
    table.add_column("outcome")
    table.add_column("tickets", justify="right")
    for kind in ("routed", "triaged", "skipped"):
        table.add_row(kind, str(counts[kind]))
    table.add_row("total", str(sum(counts.values())), style="bold")
    return table


def summary_lines(run: Run) -> list[str]:
    state = run.state
    missing = unaccounted(state.total, state.outcomes)
    lines = [
        f"{state.total} tickets, {len(state.batches)} batches ({_tiers_used(state)})",
        spend_line(state.spend),
    ]
    if missing:
        lines.append(
            f"{len(missing)} tickets have no outcome (first: position {missing[0]}); rerun to continue"
        )
    return lines


def _tiers_used(state: BackfillState) -> str:
    counts = Counter(f"{entry.tier}#{entry.attempt}" for entry in state.batches)
    return ", ".join(f"{name}: {count}" for name, count in sorted(counts.items())) or "none"


# ---------------------------------------------------------------------------- wiring


def make_batches_client(settings: Settings) -> anthropic.AsyncAnthropic:
    """The SDK's own retries on (polls and result downloads are safe to repeat); one client."""
    if settings.anthropic_api_key is None:
        raise UserError("ANTHROPIC_API_KEY is required: backfill sends batches to the Claude API")
    return anthropic.AsyncAnthropic(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=settings.anthropic_base_url or None,
        max_retries=API_RETRIES,
        timeout=API_TIMEOUT_S,
    )


def claude_tiers_of(settings: Settings) -> list[str]:
    names = [name for name in settings.effective_tiers if name in CLAUDE_TIERS]
    if not names:
        raise UserError(
            f"TIERS={','.join(settings.effective_tiers)} has no Claude tier; backfill batches requests "
            "to the fast and/or strong tier (allowed: local, fast, strong)"
        )
    return names


def english_check(settings: Settings, names: Sequence[str]) -> Callable[[TicketEvent], bool]:
    if "strong" in names and settings.non_english_to_strong:
        from consumer.classify.language import EnglishDetector

        return EnglishDetector().is_english
    return lambda _ticket: True


def state_for(path: Path, source: str, print_: str, total: int) -> BackfillState:
    """The saved state when it is this backfill's, a new one when there is none."""
    saved = load_state(path)
    if saved is None:
        return BackfillState(source=source, fingerprint=print_, total=total)
    if saved.fingerprint != print_:
        raise UserError(
            f"--state: {path} belongs to another backfill (a different source, or the prompt or models "
            "changed); pass another --state or move it away"
        )
    return saved


async def run_backfill(args: argparse.Namespace) -> int:
    settings = load_settings(prompt_cache_ttl="1h")
    taxonomy = load_taxonomy(settings.taxonomy_path)
    names = claude_tiers_of(settings)
    client = make_batches_client(settings)
    connection = connection_from_args(args) if (args.topic or args.publish) else None
    if args.topic:
        assert connection is not None
        with kafka_errors_as_user_errors(connection):
            items = await items_from_topic(connection, topic_range(args), settings.max_event_bytes)
        source = f"{args.topic} ({len(items)} records)"
    else:
        items, source = items_from_file(args, settings.max_event_bytes)
    built = cast(list[ClaudeTier], build_claude_tiers(settings, taxonomy, names, None))
    prompt_version = prompt_version_of(list(built), taxonomy)
    state_path = Path(args.state) if args.state else Path(f"{args.out}.state.json")
    state = state_for(state_path, source, fingerprint(items, prompt_version), len(items))
    triage_out = Path(args.triage_out or f"{args.out}.triage.jsonl")
    outputs = Outputs(Path(args.out), triage_out, state, connection if args.publish else None)
    processor = RecordProcessor(
        ProcessorConfig.of(settings, prompt_version),
        taxonomy,
        Pipeline(list(built), taxonomy.thresholds()),
    )
    run = Run(
        settings=settings,
        taxonomy=taxonomy,
        tiers={tier.name: tier for tier in built},
        items=items,
        state=state,
        state_path=state_path,
        outputs=outputs,
        processor=processor,
        client=client,
        limits=Limits(max_requests=args.batch_size),
        poll_s=args.poll_interval,
        is_english=english_check(settings, names),
    )
    try:
        await outputs.start()
        await drive(run)
    except (anthropic.APIError, anthropic.APIConnectionError) as exc:
        failure = failure_from_exception(exc)
        reason = failure.describe() if failure is not None else type(exc).__name__
        status(f"the Batches API failed: {reason}; progress is saved in {state_path}: rerun to continue")
        return 1
    finally:
        await outputs.close()
        await client.close()
        for tier in built:
            await tier.close()
    Console().print(summary_table(run))
    for line in summary_lines(run):
        status(line)
    return 0 if not unaccounted(state.total, state.outcomes) else 1


def handle(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.batch_size > Limits().max_requests:
        raise UserError(f"--batch-size must be between 1 and {Limits().max_requests}, not {args.batch_size}")
    if args.poll_interval <= 0:
        raise UserError(f"--poll-interval must be positive, not {args.poll_interval:g}")
    if (args.file is None) == (args.topic is None):
        raise UserError("give either a SOURCE file or --topic T (with --from-/--to- offsets or times)")
    if args.topic is None and any(
        value is not None for value in (args.from_offset, args.to_offset, args.from_time, args.to_time)
    ):
        raise UserError("--from-offset, --to-offset, --from-time and --to-time select records of --topic")
    try:
        return asyncio.run(run_backfill(args))
    except KeyboardInterrupt:
        state = args.state or f"{args.out}.state.json"
        status(f"interrupted: progress is saved in {state}; run the same command again to continue")
        return INTERRUPTED_STATUS


def add_parser(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "backfill",
        help="classify a backlog (file or topic range) through the Message Batches API at half price",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "file", nargs="?", default=None, metavar="SOURCE", help="JSONL, JSON or CSV of tickets"
    )
    parser.add_argument("--format", choices=("auto", "jsonl", "json", "csv"), default="auto")
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN,...",
        help="CSV column mapping, as for publish",
    )
    parser.add_argument(
        "--account-tier", choices=[t.value for t in AccountTier], default=CsvDefaults.account_tier
    )
    parser.add_argument("--channel", choices=[c.value for c in Channel], default=CsvDefaults.channel)
    parser.add_argument("--customer-id", default=CsvDefaults.customer_id, help="CSV default customer_id")
    parser.add_argument("--topic", default=None, help="read the tickets from this topic instead of a file")
    parser.add_argument("--from-offset", type=int, default=None, help="first offset, every partition")
    parser.add_argument("--to-offset", type=int, default=None, help="stop before this offset")
    parser.add_argument("--from-time", default=None, help="records at or after (ISO 8601; UTC if no zone)")
    parser.add_argument("--to-time", default=None, help="records before (ISO 8601)")
    parser.add_argument(
        "--out", default="backfill-routed.jsonl", help="RoutedTicket JSONL (without --publish)"
    )
    parser.add_argument("--triage-out", default=None, help="TriageRecord JSONL (default: OUT.triage.jsonl)")
    parser.add_argument(
        "--publish", action="store_true", help="publish to the queue and triage topics instead"
    )
    parser.add_argument("--state", default=None, help="resumable state file (default: OUT.state.json)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=Limits().max_requests,
        help="most requests per batch (default and API limit: 100000)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=DEFAULT_POLL_S,
        metavar="S",
        help=f"seconds between status checks (default {DEFAULT_POLL_S:g})",
    )
    add_connection_arguments(parser)
    parser.set_defaults(handler=handle, sample=None, validate=True, seed=1)
