"""One measured scenario, run in a process of its own: ``python -m producer_tools.bench.worker SPEC``.

Why a separate process per scenario: the kernel's peak-RSS mark (``VmHWM``) and the process CPU
clock only ever grow, so in a shared process the second scenario would inherit the first one's
peak and CPU. A fresh process gives each router run a clean peak that includes everything an
operator has to size a pod for (imports, the local model's training, the language detector, the
in-flight tickets). It also keeps the fake Messages API, which runs in the parent, out of the
router's CPU and memory figures, and gives the fake its own interpreter lock, as a real remote
API would not compete with the router for one.

The worker writes a ``WorkerResult`` as JSON to ``spec.result_path``; anything it logs goes to
stderr, which the parent sends to a file. Every loop here is bounded by the ticket count and by
``spec.timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import resource
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from consumer.classify.base import TierError
from consumer.config import load_settings
from consumer.kafka.connection import client_options
from consumer.logs import configure_logging
from consumer.processing import InputRecord, Outcome
from producer_tools.bench.scenarios import WorkerResult, WorkerSpec, bench_tickets

COMMIT_INTERVAL_S = 0.5  # the router's default COMMIT_INTERVAL_MS
POLL_TIMEOUT_MS = 100  # the router's poll timeout
FETCH_BYTES = 2 * 1_048_576  # the router's fetch size for the default MAX_EVENT_BYTES
READY_LINE = "ready"
"""What a member of a multi-process scenario prints on stdout once it owns partitions."""
GO_LINE = "go"
"""What the parent sends every member once all are ready, just before it publishes the tickets."""


class BenchFailure(RuntimeError):
    """The scenario could not complete (timeout, router stopped early); the parent shows the log."""


def peak_rss_mb() -> float:
    """This process's peak resident set size: ``VmHWM`` from /proc, else ``ru_maxrss`` (KiB on Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """This process's resident set size now (``VmRSS``); the peak where /proc is missing."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return peak_rss_mb()


class Meter:
    """Counts outcomes and keeps the first-start and last-finish times, in O(1) memory.

    A member of a multi-process scenario (``exact=False``) does not know its share in advance:
    ``expected`` is only an upper bound, the CPU clock is read at every outcome instead of at the
    last one, and the records it handled are kept for the parent to count duplicates.
    """

    def __init__(
        self,
        expected: int,
        exact: bool = True,
        rss_every: int | None = None,
        rss_baseline: int | None = None,
    ) -> None:
        self.expected = expected
        self.exact = exact
        self.rss_every = rss_every
        self.rss_baseline = rss_baseline
        self.rss_samples: list[tuple[int, float]] = []
        self.handled: list[str] = []
        self.wall_offset = time.time() - time.perf_counter()
        self.count = 0
        self.first_start = float("inf")
        self.last_finish = 0.0
        self.cpu_start = time.process_time()
        self.cpu_end: float | None = None
        self.outcomes: Counter[str] = Counter()
        self.tier_visits: Counter[str] = Counter()
        self.triage_kinds: Counter[str] = Counter()
        self.done = asyncio.Event()

    def started(self) -> None:
        """Restart the CPU clock: what came before (imports, training, group join) is not per ticket."""
        self.cpu_start = time.process_time()

    def finished(self, started_at: float, kind: str) -> None:
        now = time.perf_counter()
        self.first_start = min(self.first_start, started_at)
        self.last_finish = now
        self.count += 1
        self.outcomes[kind] += 1
        if self.rss_every is not None and self.wants_rss_sample():
            self.rss_samples.append((self.count, current_rss_mb()))
        if not self.exact:
            self.cpu_end = time.process_time()
        elif self.count >= self.expected and self.cpu_end is None:
            self.cpu_end = time.process_time()
            self.done.set()

    def wants_rss_sample(self) -> bool:
        every = self.rss_every or 1
        return self.count % every == 0 or self.count in (self.rss_baseline, self.expected)

    def outcome_hook(self, record: InputRecord, outcome: Outcome, elapsed: float) -> None:
        """The router's outcome hook: called after the outcome is acknowledged by the broker."""
        if outcome.result is not None:
            self.tier_visits.update(outcome.result.tiers_tried)
        if outcome.kind == "triaged":
            self.triage_kinds[str(outcome.error_kind)] += 1
        if not self.exact:
            self.handled.append(f"{record.partition}:{record.offset}")
        self.finished(time.perf_counter() - elapsed, outcome.kind)

    def result(self, spec: WorkerSpec) -> WorkerResult:
        if self.exact and self.count < self.expected:
            raise BenchFailure(f"only {self.count} of {self.expected} tickets completed")
        if self.count == 0:
            raise BenchFailure("this member handled no ticket: it never owned a partition with records")
        seconds = max(self.last_finish - self.first_start, 1e-9)
        cpu_s = (self.cpu_end if self.cpu_end is not None else time.process_time()) - self.cpu_start
        return WorkerResult(
            scenario=spec.scenario,
            tickets=self.count,
            seconds=seconds,
            tps=self.count / seconds,
            cpu_s=cpu_s,
            cpu_ms_per_ticket=cpu_s * 1000 / self.count,
            peak_rss_mb=peak_rss_mb(),
            outcomes=dict(self.outcomes),
            tier_visits=dict(self.tier_visits),
            triage_kinds=dict(self.triage_kinds),
            first_at=self.first_start + self.wall_offset,
            last_at=self.last_finish + self.wall_offset,
            member_tickets=[] if self.exact else [self.count],
            rss_samples=self.rss_samples,
        )


# -- (b), (c), (e), (f): the real service -----------------------------------------------------------


async def run_router(spec: WorkerSpec) -> WorkerResult:
    """The service as ``ticket-router consume`` runs it (JSON logs at INFO included), in-process."""
    from consumer.service import run_service

    settings = load_settings(**spec.settings)
    configure_logging(settings.log_level)
    member = spec.member is not None
    meter = Meter(spec.tickets, exact=not member, rss_every=spec.rss_every, rss_baseline=spec.rss_baseline)
    stop = asyncio.Event()
    service = asyncio.create_task(
        run_service(
            settings,
            spec.bootstrap,
            stop,
            on_started=lambda _running: started(meter, member),
            extra_hooks=[meter.outcome_hook],
        ),
        name="router",
    )
    finish = asyncio.create_task(follow_parent(meter) if member else meter.done.wait())
    try:
        await asyncio.wait({service, finish}, return_when=asyncio.FIRST_COMPLETED)
        if service.done():
            service.result()  # re-raises what stopped it
            raise BenchFailure("the router stopped before every ticket was handled")
    finally:
        finish.cancel()
        stop.set()
        if not service.done():
            await service  # drains and commits, bounded by DRAIN_TIMEOUT_S
    if spec.ids_path is not None:
        await asyncio.to_thread(write_lines, Path(spec.ids_path), meter.handled)
    return meter.result(spec)


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def started(meter: Meter, member: bool) -> None:
    """The service owns partitions now. A member says so to the parent, which publishes the
    tickets only once every member is in the group, so no member starts with the whole topic."""
    meter.started()
    if member:
        sys.stdout.write(f"{READY_LINE}\n")
        sys.stdout.flush()


async def follow_parent(meter: Meter) -> None:
    """A member's instructions on stdin. ``go`` (every member is in the group, the tickets are on
    their way) restarts the CPU clock, so the wait for the other members is not charged to the
    tickets. Returns when the parent closes stdin: its way of saying the topic is drained (and,
    should the parent die, the end of the run too)."""
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while line := await reader.readline():
        if line.strip() == GO_LINE.encode():
            meter.started()


# -- (a): the Kafka client's ceiling ---------------------------------------------------------------


async def run_passthrough(spec: WorkerSpec) -> WorkerResult:
    """consume → produce → commit with no classification, batched the way the router batches.

    Same client settings as the router (acks=all, linger 5 ms, 1 MiB batches, no idempotence), the
    same budget of ``in_flight`` unacknowledged records, ``getmany`` asked for at most the free
    budget, commits every 500 ms of the highest acknowledged offset per partition.
    """
    settings = load_settings(**spec.settings)
    options = client_options(settings, spec.bootstrap)
    consumer = AIOKafkaConsumer(
        spec.input_topic,
        **options,
        group_id=spec.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_partition_fetch_bytes=FETCH_BYTES,
        fetch_max_bytes=52_428_800,
    )
    producer = AIOKafkaProducer(
        **options,
        acks="all",
        linger_ms=5,
        max_batch_size=1_048_576,
        max_request_size=FETCH_BYTES + 262_144,
        enable_idempotence=False,
    )
    meter = Meter(spec.tickets)
    await producer.start()
    try:
        await consumer.start()
        try:
            meter.started()
            await _pass_through(spec, consumer, producer, meter)
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
    return meter.result(spec)


async def _pass_through(
    spec: WorkerSpec, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, meter: Meter
) -> None:
    pending: deque[tuple[TopicPartition, int, float, asyncio.Future[object]]] = deque()
    acked: dict[TopicPartition, int] = {}
    last_commit = time.monotonic()
    while meter.count < spec.tickets:
        budget = spec.in_flight - len(pending)
        fetched = 0
        if budget > 0:
            batches = await consumer.getmany(timeout_ms=0 if pending else POLL_TIMEOUT_MS, max_records=budget)
            consumed_at = time.perf_counter()
            for tp, records in batches.items():
                for record in records:
                    future = await producer.send(spec.output_topic, record.value, key=record.key)
                    pending.append((tp, record.offset, consumed_at, future))
                    fetched += 1
        if pending and (budget <= 0 or fetched == 0):
            await pending[0][3]
        while pending and pending[0][3].done():
            tp, offset, consumed_at, future = pending.popleft()
            future.result()
            acked[tp] = offset + 1
            meter.finished(consumed_at, "passed")
        if time.monotonic() - last_commit >= COMMIT_INTERVAL_S or meter.count >= spec.tickets:
            last_commit = time.monotonic()
            if acked:
                await consumer.commit(dict(acked))


# -- (d): the SDK's ceiling -------------------------------------------------------------------------


async def run_sdk(spec: WorkerSpec) -> WorkerResult:
    """The fast tier's real ``ClaudeTier.classify`` on the same tickets, ``in_flight`` at a time, no Kafka.

    Built as the service builds it (``build_claude_tiers``), retrieval of similar examples included,
    so c/d compares the Kafka router around the tier with the tier alone.
    """
    from consumer.service import build_claude_tiers
    from consumer.taxonomy import load_taxonomy

    settings = load_settings(**spec.settings)
    configure_logging(settings.log_level)
    [tier] = build_claude_tiers(settings, load_taxonomy(settings.taxonomy_path), ["fast"], None)
    tickets = bench_tickets(spec.tickets, spec.seed)
    meter = Meter(spec.tickets)
    queue = iter(tickets)

    async def call_until_empty() -> None:
        for ticket in queue:  # shared iterator: each ticket is taken by exactly one caller
            started = time.perf_counter()
            kind = "answered"
            try:
                answer = await tier.classify(ticket)
                meter.tier_visits[answer.attempt.tier] += 1
            except TierError:
                kind = "failed"
            meter.finished(started, kind)

    try:
        meter.started()
        await asyncio.gather(*(call_until_empty() for _ in range(spec.in_flight)))
    finally:
        await tier.close()
    return meter.result(spec)


RUNNERS: dict[str, Callable[[WorkerSpec], Awaitable[WorkerResult]]] = {
    "passthrough": run_passthrough,
    "router": run_router,
    "sdk": run_sdk,
}


async def run_bounded(spec: WorkerSpec) -> WorkerResult:
    try:
        async with asyncio.timeout(spec.timeout_s):
            return await RUNNERS[spec.kind](spec)
    except TimeoutError:
        raise BenchFailure(f"scenario {spec.scenario} did not finish within {spec.timeout_s:.0f}s") from None
    except KafkaError as exc:
        raise BenchFailure(f"Kafka error: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m producer_tools.bench.worker SPEC.json", file=sys.stderr)
        return 2
    spec = WorkerSpec.model_validate_json(Path(args[0]).read_bytes())
    profiler = cProfile.Profile() if spec.profile_path else None
    try:
        if profiler is not None:
            profiler.enable()
        result = asyncio.run(run_bounded(spec))
    except BenchFailure as exc:
        print(f"bench worker {spec.scenario}: {exc}", file=sys.stderr)
        return 1
    finally:
        if profiler is not None and spec.profile_path:
            profiler.disable()
            profiler.dump_stats(spec.profile_path)
    Path(spec.result_path).write_text(result.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
