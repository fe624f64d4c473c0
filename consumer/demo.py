"""``ticket-router run`` (``make run``): the whole path on one machine, visible in one table.

Starts the embedded broker unless KAFKA_BOOTSTRAP_SERVERS is set, runs the service in-process,
publishes the bundled sample tickets once the service has joined its group, and shows each
ticket's queue as its outcome is acknowledged by the broker. Ctrl-C drains and stops cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from importlib import resources
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from consumer.cli import kafka_endpoint
from consumer.config import Settings
from consumer.kafka_common import client_options
from consumer.processing import InputRecord, Outcome
from consumer.service import RunningService, install_signal_handlers, run_service

SAMPLES_RESOURCE = "samples.jsonl"


def load_samples(path: Path | None) -> list[bytes]:
    raw = (
        Path(path).read_bytes()
        if path
        else resources.files("consumer.data").joinpath(SAMPLES_RESOURCE).read_bytes()
    )
    return [line for line in raw.splitlines() if line.strip()]


def ticket_key(line: bytes) -> bytes | None:
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
        ticket_id = orjson.loads(line).get("ticket_id")
        if isinstance(ticket_id, str):
            return ticket_id.encode()
    return None


class OutcomeTable:
    """Rows of the live table, newest last."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.rows: list[tuple[str, ...]] = []

    def hook(self, _record: InputRecord, outcome: Outcome, elapsed: float) -> None:
        subject = outcome.ticket.subject if outcome.ticket else ""
        if outcome.kind == "routed" and outcome.routed is not None:
            axes = outcome.routed.classification.axes
            weakest = min(p.confidence for p in axes.values())
            detail = "/".join(p.label for p in axes.values()) + f" (min {weakest:.2f})"
            where = outcome.queue or ""
            tier = outcome.routed.tiers_tried[-1] + (
                " (low confidence)" if outcome.routed.low_confidence else ""
            )
        elif outcome.kind == "triaged":
            where, detail = (
                "needs-human-triage",
                f"{outcome.error_kind}: {outcome.triage.message if outcome.triage else ''}",
            )
            tier = ",".join(outcome.result.tiers_tried) if outcome.result else "-"
        else:
            where, detail, tier = "(not classified)", outcome.skip_reason or "", "-"
        self.rows.append(
            (outcome.ticket_id or "?", subject[:48], where, tier, detail[:90], f"{elapsed * 1000:.0f}")
        )

    def render(self) -> Table:
        table = Table(
            title=f"ticket-router: {len(self.rows)}/{self.expected} sample events handled (Ctrl-C to stop)"
        )
        widths = {
            "ticket": 7,
            "subject": 20,
            "queue": 18,
            "tier": 5,
            "labels (weakest confidence)": 30,
            "ms": 3,
        }
        for column, min_width in widths.items():
            table.add_column(column, overflow="ellipsis", no_wrap=True, min_width=min_width)
        for row in self.rows[-40:]:
            table.add_row(*row)
        return table


async def publish_samples(settings: Settings, bootstrap: str, samples: list[bytes]) -> None:
    producer = AIOKafkaProducer(**client_options(settings, bootstrap), acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for line in samples:
            await producer.send(settings.input_topic, line, key=ticket_key(line))
        await producer.flush()
    finally:
        await producer.stop()


async def run_demo(settings: Settings, samples: Path | None = None, exit_after: float | None = None) -> None:
    lines = load_samples(samples)
    table = OutcomeTable(len(lines))
    stop = asyncio.Event()
    install_signal_handlers(stop)
    started: asyncio.Future[RunningService] = asyncio.get_running_loop().create_future()
    console = Console()
    with kafka_endpoint(settings) as bootstrap:
        service = asyncio.create_task(
            run_service(settings, bootstrap, stop, on_started=started.set_result, extra_hooks=[table.hook])
        )
        running = await _first_of(started, service)
        console.print(
            f"service up (tiers: {','.join(settings.effective_tiers)}; "
            f"metrics on :{running.http_port}/metrics); "
            f"publishing {len(lines)} sample tickets to '{settings.input_topic}'"
        )
        await publish_samples(settings, bootstrap, lines)
        deadline = None if exit_after is None else asyncio.get_running_loop().time() + exit_after
        with Live(table.render(), console=console, refresh_per_second=4) as live:
            while not stop.is_set() and not service.done():
                live.update(table.render())
                if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                    stop.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)
            live.update(table.render())
        await service
    routed = sum(1 for row in table.rows if row[2] not in ("needs-human-triage", "(not classified)"))
    print(
        f"handled {len(table.rows)} events: {routed} routed, {len(table.rows) - routed} triaged or skipped",
        file=sys.stderr,
    )


async def _first_of(started: asyncio.Future[RunningService], service: asyncio.Task[None]) -> RunningService:
    """Wait for the service to come up, surfacing its start-up error if it fails instead."""
    await asyncio.wait({started, service}, return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
    if started.done():
        return started.result()
    service.result()
    raise RuntimeError("service stopped before it started")
