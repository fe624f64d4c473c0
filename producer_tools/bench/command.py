"""``ticket-tools bench``: orchestration. Broker, fake API, input tickets; one worker process per scenario.

The parent measures nothing itself: it starts the broker (embedded Tansu unless ``--bootstrap``)
and the fake Messages API (on a thread here, so its CPU is not charged to the router), publishes
each scenario's tickets before the worker starts (so consumption is never waiting on a producer),
then runs the worker and collects its ``WorkerResult``.

The scale-out scenario (g) is the exception: its workers join one group first and the tickets
follow, so that neither member starts with the whole topic to itself. Publishing is far faster
than the pair consumes, so the topic stays ahead of them all the same. The soak (``--soak``) is
one long router run on its own, with resident memory read through it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from consumer.config import load_settings
from consumer.errors import UserError
from consumer.kafka.connection import client_options
from consumer.kafka.embedded_broker import EmbeddedBroker
from consumer.kafka.topics import ensure_topics
from producer_tools.bench.report import (
    best_run,
    combine_members,
    environment,
    render,
    render_soak,
    summarise,
    summarise_soak,
)
from producer_tools.bench.scenarios import (
    DEFAULT_COUNTS,
    DUMMY_API_KEY,
    FAST_MODEL,
    QUICK_COUNTS,
    QUICK_SOAK_TICKETS,
    SCENARIO_IDS,
    SCENARIOS,
    SOAK_BASELINE_SHARE,
    SOAK_ID,
    SOAK_TICKETS,
    STRONG_MODEL,
    WorkerResult,
    WorkerSpec,
    bench_tickets,
    fake_scenario,
    rss_every,
    soak_baseline,
    tier_names,
)
from producer_tools.bench.worker import GO_LINE, READY_LINE
from producer_tools.fake_api import ThreadedFakeApi, run_in_thread
from producer_tools.kafka_io import quiet_client_logs
from schemas.codec import encode

DEFAULT_JSON = Path("bench-results.json")
DEFAULT_SOAK_JSON = Path("soak-results.json")
DEFAULT_REPEAT = 3
"""Rounds of every scenario. On a shared machine one scenario can run 30% slower than the next for
reasons outside it (measured: (d) 720-942 calls/s in three back-to-back runs); each scenario's
fastest round is the one least disturbed, and interleaving gives every scenario the same chances."""
PARTITIONS = 6  # the default TOPIC_PARTITIONS
WORKER_SETUP_S = 90.0
"""Per-worker allowance for imports, local-model training, topic creation and the group join."""
FLOOR_TPS = {"a": 500.0, "b": 100.0, "c": 50.0, "d": 50.0, "e": 40.0, "f": 4.0, "g": 40.0, "s": 40.0}
"""Far below anything measured: a worker slower than this is stuck, and is stopped. With (s) at
100,000 tickets this bounds the soak at about 45 minutes."""
WORKER_EXIT_GRACE_S = 30.0
SOAK_MIN_TICKETS = SOAK_BASELINE_SHARE
"""A soak needs a first tenth to take its baseline after."""
DRAIN_POLL_S = 0.2
"""How often the parent asks for the scale-out group's committed offsets. It only decides when
to stop the members: the figures come from their own first and last outcome times."""
LOG_TAIL_LINES = 8


@dataclass(frozen=True)
class BenchOptions:
    counts: dict[str, int]
    only: list[str]
    json_path: Path
    bootstrap: str | None
    profile_dir: Path | None
    repeat: int = 1
    soak: bool = False


def parse_only(text: str | None) -> list[str]:
    if text is None:
        return list(SCENARIO_IDS)
    chosen = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in SCENARIO_IDS]
    if unknown or not chosen:
        raise UserError(f"--only takes scenario letters from {','.join(SCENARIO_IDS)}, not {text!r}")
    return [sid for sid in SCENARIO_IDS if sid in chosen]


def soak_options(args: argparse.Namespace) -> BenchOptions:
    """``--soak``: one run of (s), alone; the options that shape the scenario table do not apply."""
    clashing = [
        flag
        for flag, value in (
            ("--only", args.only),
            ("--repeat", args.repeat),
            ("--sequential-tickets", args.sequential_tickets),
        )
        if value is not None
    ]
    if clashing:
        raise UserError(f"--soak runs alone: drop {', '.join(clashing)}")
    tickets = (
        args.tickets if args.tickets is not None else (QUICK_SOAK_TICKETS if args.quick else SOAK_TICKETS)
    )
    if tickets < SOAK_MIN_TICKETS:
        raise UserError(f"--tickets with --soak must be at least {SOAK_MIN_TICKETS}, not {tickets}")
    if args.bootstrap is not None and not args.bootstrap.strip():
        raise UserError("--bootstrap is empty (expected host:port[,host:port...])")
    return BenchOptions(
        counts={SOAK_ID: tickets},
        only=[SOAK_ID],
        json_path=Path(args.json) if args.json else DEFAULT_SOAK_JSON,
        bootstrap=args.bootstrap.strip() if args.bootstrap else None,
        profile_dir=Path(args.profile) if args.profile else None,
        soak=True,
    )


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    if args.soak:
        return soak_options(args)
    counts = dict(QUICK_COUNTS if args.quick else DEFAULT_COUNTS)
    if args.tickets is not None:
        if args.tickets < 1:
            raise UserError(f"--tickets must be at least 1, not {args.tickets}")
        counts.update({sid: args.tickets for sid in "abcdeg"})
    if args.sequential_tickets is not None:
        if args.sequential_tickets < 1:
            raise UserError(f"--sequential-tickets must be at least 1, not {args.sequential_tickets}")
        counts["f"] = args.sequential_tickets
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else DEFAULT_REPEAT)
    if repeat < 1:
        raise UserError(f"--repeat must be at least 1, not {repeat}")
    if args.bootstrap is not None and not args.bootstrap.strip():
        raise UserError("--bootstrap is empty (expected host:port[,host:port...])")
    return BenchOptions(
        counts=counts,
        only=parse_only(args.only),
        json_path=Path(args.json) if args.json else DEFAULT_JSON,
        bootstrap=args.bootstrap.strip() if args.bootstrap else None,
        profile_dir=Path(args.profile) if args.profile else None,
        repeat=repeat,
    )


@contextlib.contextmanager
def kafka_cluster(bootstrap: str | None) -> Iterator[str]:
    """The given cluster, or an embedded broker on a free loopback port for the bench's duration."""
    if bootstrap is not None:
        yield bootstrap
        return
    with EmbeddedBroker(port=None) as broker:
        yield broker.bootstrap_servers


def worker_settings(sid: str, spec_base: dict[str, Any], embedded: bool) -> dict[str, Any]:
    """Explicit settings for a router or SDK worker, so the caller's environment cannot skew a run.

    Session timeouts: Tansu makes a join wait half the session timeout, so 2 s keeps each worker's
    start short; a real cluster usually refuses sessions under 6 s, so it keeps the default.
    """
    info = SCENARIOS[sid]
    settings: dict[str, Any] = {
        **spec_base,
        "tiers": tier_names(sid),
        "max_in_flight": info.in_flight,
        "commit_interval_ms": 500,
        "log_level": "INFO",
        "log_ticket_text": False,
        "metrics_port": 0,
        "metrics_host": "127.0.0.1",
        "topic_partitions": PARTITIONS,
        "create_topics": True,
        "fast_model": FAST_MODEL,
        "strong_model": STRONG_MODEL,
        "session_timeout_ms": 2_000 if embedded else 10_000,
        "heartbeat_interval_ms": 400 if embedded else 3_000,
    }
    if embedded:  # whatever KAFKA_SECURITY_PROTOCOL says, the embedded broker speaks plaintext
        settings["kafka_security_protocol"] = "PLAINTEXT"
    if sid == "b":
        settings.update(anthropic_api_key=None, anthropic_base_url=None)
    return settings


def worker_env() -> dict[str, str]:
    """The caller's environment without any Anthropic variables (the workers get the fake's URL and a
    dummy key explicitly), and with loopback exempt from any HTTP proxy."""
    env = {key: value for key, value in os.environ.items() if not key.upper().startswith("ANTHROPIC_")}
    for name in ("NO_PROXY", "no_proxy"):
        extra = [part for part in env.get(name, "").split(",") if part]
        env[name] = ",".join([*extra, "127.0.0.1", "localhost"])
    return env


def log_tail(path: Path) -> str:
    lines = path.read_text("utf-8", "replace").strip().splitlines() if path.exists() else []
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(no output)"


def worker_label(spec: WorkerSpec) -> str:
    """``e``, or ``g1``/``g2`` for the processes of a multi-process scenario: names its files."""
    return spec.scenario if spec.member is None else f"{spec.scenario}{spec.member}"


def worker_command(spec: WorkerSpec, workdir: Path) -> list[str]:
    spec_path = workdir / f"{worker_label(spec)}.spec.json"
    spec_path.write_text(spec.model_dump_json())
    return [sys.executable, "-m", "producer_tools.bench.worker", str(spec_path)]


def run_worker(spec: WorkerSpec, workdir: Path) -> WorkerResult:
    """Runs one worker process to completion (bounded), returns its result or raises UserError."""
    log_path = workdir / f"{worker_label(spec)}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            worker_command(spec, workdir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=worker_env(),
        )
        try:
            code = process.wait(timeout=spec.timeout_s + WORKER_EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=WORKER_EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raise UserError(f"bench scenario {spec.scenario} hung; log tail:\n{log_tail(log_path)}") from None
    result_path = Path(spec.result_path)
    if code != 0 or not result_path.exists():
        raise UserError(
            f"bench scenario {spec.scenario} failed (exit {code}); log tail:\n{log_tail(log_path)}"
        )
    return WorkerResult.model_validate_json(result_path.read_bytes())


async def publish_tickets(spec: WorkerSpec, topics: Sequence[str]) -> dict[int, int]:
    """Creates the scenario's topics and fills the input topic (the first one) with the bench tickets.

    Connects with the worker's own settings, so a secured ``--bootstrap`` cluster works too.
    Returns the input topic's end offset in every partition it wrote to.
    """
    from aiokafka import AIOKafkaProducer

    settings = load_settings(**spec.settings)
    options = {**client_options(settings, spec.bootstrap), "client_id": "ticket-tools-bench"}
    await ensure_topics(list(topics), PARTITIONS, 1, options)
    producer = AIOKafkaProducer(
        **options, acks="all", enable_idempotence=False, linger_ms=10, max_batch_size=524_288
    )
    await producer.start()
    try:
        sends = [
            await producer.send(topics[0], encode(event), key=event.ticket_id.encode())
            for event in bench_tickets(spec.tickets, spec.seed)
        ]
        written = await asyncio.gather(*sends)
    finally:
        await producer.stop()
    ends: dict[int, int] = {}
    for meta in written:
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    return ends


@dataclass
class Member:
    """One process of a multi-process scenario, with the pipes the parent steers it by."""

    spec: WorkerSpec
    process: asyncio.subprocess.Process
    log_path: Path

    def failure(self, what: str) -> UserError:
        return UserError(
            f"bench scenario {worker_label(self.spec)} {what}; log tail:\n{log_tail(self.log_path)}"
        )


def member_specs(spec: WorkerSpec, processes: int, workdir: Path) -> list[WorkerSpec]:
    return [
        spec.model_copy(
            update={
                "member": n,
                "result_path": str(workdir / f"{spec.scenario}{n}.result.json"),
                "ids_path": str(workdir / f"{spec.scenario}{n}.ids"),
            }
        )
        for n in range(1, processes + 1)
    ]


async def start_member(spec: WorkerSpec, workdir: Path) -> Member:
    log_path = workdir / f"{worker_label(spec)}.log"
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        process = await asyncio.create_subprocess_exec(
            *worker_command(spec, workdir),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=worker_env(),
        )
    return Member(spec, process, log_path)


async def wait_ready(member: Member) -> None:
    """Returns once the member owns partitions (it prints ``ready``); fails if it exits first."""
    assert member.process.stdout is not None
    while line := await member.process.stdout.readline():
        if line.strip() == READY_LINE.encode():
            return
    raise member.failure("stopped before it joined the group")


async def tell_members(members: Sequence[Member], line: bytes) -> None:
    for member in members:
        assert member.process.stdin is not None
        member.process.stdin.write(line)
        await member.process.stdin.drain()


async def committed_reach(spec: WorkerSpec, ends: dict[int, int]) -> None:
    """Returns when the group has committed every record the parent published: the topic is drained."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    options = client_options(load_settings(**spec.settings), spec.bootstrap)
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        partitions = [TopicPartition(spec.input_topic, partition) for partition in ends]
        while True:
            committed = await admin.list_consumer_group_offsets(spec.group, partitions=partitions)
            if all(tp in committed and committed[tp].offset >= ends[tp.partition] for tp in partitions):
                return
            await asyncio.sleep(DRAIN_POLL_S)
    finally:
        await admin.close()


async def until_drained(spec: WorkerSpec, ends: dict[int, int], members: Sequence[Member]) -> None:
    """Waits for the drain, failing at once if a member exits before it."""
    drained = asyncio.create_task(committed_reach(spec, ends))
    exits = {asyncio.create_task(member.process.wait()): member for member in members}
    try:
        await asyncio.wait({drained, *exits}, return_when=asyncio.FIRST_COMPLETED)
        for task, member in exits.items():
            if task.done():
                raise member.failure(f"exited (status {task.result()}) before the topic was drained")
        drained.result()
    finally:
        drained.cancel()
        for task in exits:
            task.cancel()


async def stop_members(members: Sequence[Member]) -> None:
    """Closing a member's stdin tells it to drain, commit and write its result."""
    for member in members:
        assert member.process.stdin is not None
        member.process.stdin.close()
    codes = await asyncio.gather(*(member.process.wait() for member in members))
    for member, code in zip(members, codes, strict=True):
        if code != 0:
            raise member.failure(f"failed (exit {code})")


def combined_result(spec: WorkerSpec, members: Sequence[Member]) -> WorkerResult:
    """The members' results as one, once every ticket is known to have been handled at least once."""
    results, handled = [], []
    for member in members:
        result_path, ids_path = Path(member.spec.result_path), Path(member.spec.ids_path or "")
        if not (result_path.exists() and ids_path.exists()):
            raise member.failure("wrote no result")
        results.append(WorkerResult.model_validate_json(result_path.read_bytes()))
        handled.append(ids_path.read_text().split())
    combined = combine_members(results, handled)
    if combined.tickets != spec.tickets:
        raise UserError(
            f"bench scenario {spec.scenario}: {combined.tickets} of {spec.tickets} tickets handled"
        )
    return combined


async def run_members(spec: WorkerSpec, processes: int, workdir: Path) -> list[Member]:
    """The processes of a scale-out scenario: all join, then the tickets are published; once the
    group has committed them all, every member is stopped (and has written its result)."""
    members = [await start_member(member, workdir) for member in member_specs(spec, processes, workdir)]
    phase = "joining the group"
    try:
        async with asyncio.timeout(WORKER_SETUP_S):
            await asyncio.gather(*(wait_ready(member) for member in members))
        phase = "consuming"
        await tell_members(members, f"{GO_LINE}\n".encode())
        async with asyncio.timeout(spec.timeout_s - WORKER_SETUP_S):
            ends = await publish_tickets(spec, [spec.input_topic])
            await until_drained(spec, ends, members)
        phase = "stopping"
        async with asyncio.timeout(WORKER_EXIT_GRACE_S):
            await stop_members(members)
    except TimeoutError:
        tails = "\n".join(f"{worker_label(m.spec)}:\n{log_tail(m.log_path)}" for m in members)
        raise UserError(f"bench scenario {spec.scenario} hung while {phase}; log tails:\n{tails}") from None
    finally:
        for member in members:
            if member.process.returncode is None:
                member.process.kill()
                await member.process.wait()
    return members


def build_spec(
    sid: str, options: BenchOptions, bootstrap: str, fake: ThreadedFakeApi, tag: str, workdir: Path
) -> WorkerSpec:
    info = SCENARIOS[sid]
    count = options.counts[sid]
    embedded = options.bootstrap is None
    base = {
        "kafka_bootstrap_servers": bootstrap,
        "input_topic": f"bench-{tag}-{sid}-tickets",
        "triage_topic": f"bench-{tag}-triage",
        "queue_topic_prefix": f"bench-{tag}.",
        "consumer_group": f"bench-{tag}-{sid}",
        "anthropic_api_key": DUMMY_API_KEY,
        "anthropic_base_url": fake.base_url,
    }
    soak = info.id == SOAK_ID
    return WorkerSpec(
        scenario=info.id,
        kind=info.kind,
        tickets=count,
        bootstrap=bootstrap,
        input_topic=base["input_topic"],
        output_topic=f"bench-{tag}-{sid}-passthrough",
        group=base["consumer_group"],
        in_flight=info.in_flight,
        timeout_s=WORKER_SETUP_S + count / FLOOR_TPS[sid],
        settings=worker_settings(sid, base, embedded),
        result_path=str(workdir / f"{sid}.result.json"),
        profile_path=str(options.profile_dir / f"bench-{sid}.prof") if options.profile_dir else None,
        rss_every=rss_every(count) if soak else None,
        rss_baseline=soak_baseline(count) if soak else None,
    )


def run_scenario(
    sid: str,
    options: BenchOptions,
    bootstrap: str,
    fake: ThreadedFakeApi,
    tag: str,
    workdir: Path,
    status: Console,
) -> WorkerResult:
    """Publishes the scenario's tickets to fresh topics, runs its worker, adds the fake's CPU."""
    info = SCENARIOS[sid]
    spec = build_spec(sid, options, bootstrap, fake, tag, workdir)
    status.print(f"({sid}) {info.title}: {spec.tickets:,} tickets …")
    if info.kind != "sdk" and info.processes == 1:
        topics = [spec.input_topic] + ([spec.output_topic] if info.kind == "passthrough" else [])
        asyncio.run(publish_tickets(spec, topics))
    fake.set_scenario(fake_scenario(info.fake_latency))
    # The fake's thread's CPU: the whole process's, less this thread's (which publishes for (g)).
    fake_cpu = time.process_time() - time.thread_time()
    if info.processes > 1:
        result = combined_result(spec, asyncio.run(run_members(spec, info.processes, workdir)))
    else:
        result = run_worker(spec, workdir)
    if tier_names(sid) != ["local"] and info.kind != "passthrough":
        fake_ms = (time.process_time() - time.thread_time() - fake_cpu) * 1000 / result.tickets
        result = result.model_copy(update={"fake_api_cpu_ms_per_ticket": fake_ms})
    status.print(f"    {result.tps:,.0f} tickets/s in {result.seconds:.2f}s, outcomes {result.outcomes}")
    return result


def run_bench(options: BenchOptions, status: Console) -> dict[str, Any]:
    """Runs the chosen scenarios ``repeat`` times, round after round, and returns the
    bench-results document built from each scenario's fastest run."""
    quiet_client_logs()
    if options.profile_dir is not None:
        options.profile_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[WorkerResult]] = {sid: [] for sid in options.only}
    tag = uuid.uuid4().hex[:8]
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="ticket-bench-") as tmp,
        kafka_cluster(options.bootstrap) as bootstrap,
        run_in_thread(fake_scenario(with_latency=False)) as fake,
    ):
        workdir = Path(tmp)
        status.print(f"broker {bootstrap}, fake Messages API {fake.base_url}")
        for round_number in range(1, options.repeat + 1):
            if options.repeat > 1:
                status.print(f"round {round_number} of {options.repeat}")
            for sid in options.only:
                result = run_scenario(sid, options, bootstrap, fake, f"{tag}-{round_number}", workdir, status)
                runs[sid].append(result)
    where = environment(bootstrap, options.bootstrap is None, load_before)
    if options.soak:
        [soak] = runs[SOAK_ID]
        return summarise_soak(soak, soak_baseline(soak.tickets), where)
    results = {sid: best_run(scenario_runs) for sid, scenario_runs in runs.items()}
    return summarise(results, where)


def handle(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    status = Console(stderr=True, highlight=False)
    doc = run_bench(options, status)
    # Piped (make bench | tee), rich would assume 80 columns and fold the table.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 190)
    if options.soak:
        render_soak(doc, console)
    else:
        render(doc, console)
    options.json_path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    status.print(f"wrote {options.json_path}")
    if options.profile_dir is not None:
        status.print(f"profiles in {options.profile_dir} (python -m pstats FILE; sort tottime; stats 30)")
    return 0


def add_parser(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "bench",
        help="measure throughput, CPU and memory of the router against the Kafka and SDK ceilings",
        description=(
            "Runs scenarios on the embedded broker and the fake Messages API: (a) Kafka passthrough, "
            "(b) router with the local tier, (c) router with the fake at 0 ms, (d) the SDK alone, "
            "(e) router with 50/180 ms latency and 15% escalations, (f) the same one ticket at a time, "
            "(g) two router processes in one group on (e)'s workload. Prints a table and writes JSON. "
            "--soak runs only the soak: 100,000 tickets through one router on (e)'s workload, "
            "with resident memory read throughout."
        ),
    )
    parser.add_argument(
        "--tickets",
        type=int,
        default=None,
        metavar="N",
        help="tickets for each of a–e and g (default: a,b 10k; c,d,e,g 6k); with --soak, the soak's",
    )
    parser.add_argument(
        "--sequential-tickets", type=int, default=None, metavar="N", help="tickets for (f) (default 100)"
    )
    parser.add_argument("--only", default=None, metavar="a,b,...", help="run only these scenarios")
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run of every scenario)")
    parser.add_argument(
        "--soak",
        action="store_true",
        help=f"run only the soak: {SOAK_TICKETS:,} tickets ({QUICK_SOAK_TICKETS:,} with --quick) through "
        "one router at 50/180 ms; RSS after the first tenth and at the end (default file soak-results.json)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        metavar="N",
        help=f"run every scenario N times, interleaved, and keep each one's fastest run "
        f"(default {DEFAULT_REPEAT}; 1 with --quick)",
    )
    parser.add_argument(
        "--json", default=None, metavar="PATH", help="results file (default bench-results.json)"
    )
    parser.add_argument(
        "--bootstrap", default=None, help="use this Kafka cluster instead of starting the embedded broker"
    )
    parser.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="run each worker under cProfile and write DIR/bench-<scenario>.prof (slows every figure)",
    )
    parser.set_defaults(handler=handle)
