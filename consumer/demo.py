"""``ticket-router run`` (``make run``): the whole path on one machine, visible in one table.

Starts the embedded broker unless KAFKA_BOOTSTRAP_SERVERS is set, runs the service in-process,
publishes the bundled sample tickets once the service has joined its group, and shows each
ticket's queue as its outcome is acknowledged by the broker, in a table that fits the terminal.
Ctrl-C during start-up cancels it; afterwards it drains and stops; either way the exit status is 130.
/metrics is served on loopback unless METRICS_HOST is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr
from rich.console import Console
from rich.live import Live
from rich.table import Table

from consumer.config import Settings
from consumer.console.passwords import hash_password
from consumer.kafka.connection import client_options
from consumer.kafka.embedded_broker import EmbeddedBroker, port_is_free
from consumer.processing import InputRecord, Outcome
from consumer.service import DEFAULT_API_URL, RunningService, run_service

SAMPLES_RESOURCE = "samples.jsonl"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
BROKER_STOP_GRACE_S = 0.5


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


@dataclass(frozen=True)
class Row:
    """One handled event as the table shows it."""

    kind: str
    ticket: str
    subject: str
    queue: str
    tier: str
    detail: str
    ms: str


def row_for(outcome: Outcome, elapsed: float) -> Row:
    subject = outcome.ticket.subject if outcome.ticket else ""
    if outcome.kind == "routed" and outcome.routed is not None:
        axes = outcome.routed.classification.axes
        weakest = min(p.confidence for p in axes.values())
        detail = "/".join(p.label for p in axes.values()) + f" (min {weakest:.2f})"
        queue = outcome.queue or ""
        tier = outcome.routed.tiers_tried[-1] + (LOW_CONFIDENCE_MARK if outcome.routed.low_confidence else "")
    elif outcome.kind == "triaged":
        queue = "needs-human-triage"
        detail = f"{outcome.error_kind}: {outcome.triage.message if outcome.triage else ''}"
        tier = outcome.result.tiers_tried[-1] if outcome.result and outcome.result.tiers_tried else "-"
    else:
        queue, detail, tier = "(not classified)", outcome.skip_reason or "", "-"
    return Row(outcome.kind, outcome.ticket_id or "?", subject, queue, tier, detail, f"{elapsed * 1000:.0f}")


@dataclass(frozen=True)
class ColumnSpec:
    header: str
    width: int
    """The most a column takes; for a flexible one, the least (it gets the terminal's spare room)."""
    flexible: bool = False


LOW_CONFIDENCE_MARK = "*"
COLUMNS: dict[str, ColumnSpec] = {
    "ticket": ColumnSpec("ticket", 10),
    "subject": ColumnSpec("subject", 24, flexible=True),
    "queue": ColumnSpec("queue", 23),  # critical-infrastructure, the longest queue name
    "tier": ColumnSpec("tier", 7),  # strong*
    "detail": ColumnSpec("labels (weakest confidence)", 30, flexible=True),
    "ms": ColumnSpec("ms", 5),
}
# Dropped in this order when the terminal is too narrow; the ticket, its subject and its queue stay.
DROP_ORDER = ("detail", "ms", "tier")
# Lines around the rows: the status lines above the table, its title, borders, header and caption.
LINES_AROUND_ROWS = 9


def table_width(columns: list[str]) -> int:
    """Width of a rich table (default box, padding 1) whose columns are at their widths."""
    return sum(COLUMNS[name].width for name in columns) + 3 * len(columns) + 1


def columns_for(width: int) -> list[str]:
    """The columns that fit ``width`` terminal columns, dropping the least useful first. Pure."""
    shown = list(COLUMNS)
    for name in DROP_ORDER:
        if table_width(shown) <= width:
            break
        shown.remove(name)
    return shown


def rows_that_fit(height: int) -> int:
    """How many of the newest rows fit a terminal ``height`` lines tall (rich would cut the rest,
    the newest first). Pure."""
    return max(3, height - LINES_AROUND_ROWS)


class OutcomeTable:
    """Rows of the live table, newest last, rendered to fit the terminal."""

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self.rows: list[Row] = []

    def hook(self, _record: InputRecord, outcome: Outcome, elapsed: float) -> None:
        self.rows.append(row_for(outcome, elapsed))

    def title(self) -> str:
        # Everything on the input topic counts, not only the samples: `ticket-tools publish` adds more.
        return f"ticket-router: {len(self.rows)} events handled ({self.samples} samples published)"

    def caption(self, columns: list[str], live: bool) -> str | None:
        notes = []
        if "tier" in columns and any(row.tier.endswith(LOW_CONFIDENCE_MARK) for row in self.rows):
            notes.append(f"{LOW_CONFIDENCE_MARK} low confidence, routed flagged")
        if live:
            notes.append("Ctrl-C to stop")
        return " · ".join(notes) or None

    def render(self, width: int, height: int, live: bool = True) -> Table:
        """The newest rows that fit ``height`` lines, in the columns that fit ``width``."""
        columns = columns_for(width)
        table = Table(title=self.title(), caption=self.caption(columns, live), expand=True)
        for name in columns:
            spec = COLUMNS[name]
            if spec.flexible:
                table.add_column(
                    spec.header, overflow="ellipsis", no_wrap=True, min_width=spec.width, ratio=1
                )
            else:
                table.add_column(spec.header, overflow="ellipsis", no_wrap=True, max_width=spec.width)
        for row in self.rows[-rows_that_fit(height) :]:
            table.add_row(*(getattr(row, name) for name in columns))
        return table

    def summary(self) -> str:
        routed = sum(1 for row in self.rows if row.kind == "routed")
        return (
            f"handled {len(self.rows)} events: {routed} routed, {len(self.rows) - routed} triaged or skipped"
        )


async def publish_samples(settings: Settings, bootstrap: str, samples: list[bytes]) -> None:
    producer = AIOKafkaProducer(**client_options(settings, bootstrap), acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for line in samples:
            await producer.send(settings.input_topic, line, key=ticket_key(line))
        await producer.flush()
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def demo_endpoint(settings: Settings) -> AsyncIterator[str]:
    """The configured cluster, or an embedded broker on loopback, started so Ctrl-C can cancel it."""
    if settings.kafka_bootstrap_servers:
        yield settings.kafka_bootstrap_servers
        return
    wanted = settings.embedded_broker_port
    broker = EmbeddedBroker(port=wanted if port_is_free(wanted) else None)
    await broker.start_async()
    try:
        status(broker_banner(wanted, broker.bootstrap_servers))
        yield broker.bootstrap_servers
    finally:
        # Memory storage: nothing is lost by not waiting long; Tansu's SIGTERM waits for requests in
        # progress, e.g. a group join that Ctrl-C abandoned.
        broker.stop(grace_s=BROKER_STOP_GRACE_S)


def broker_banner(wanted_port: int, bootstrap: str) -> str:
    """Where the broker runs; when it is not EMBEDDED_BROKER_PORT, the flag the tools need. Pure."""
    line = f"embedded Kafka-protocol broker (Tansu) on {bootstrap}"
    if bootstrap.rsplit(":", 1)[-1] == str(wanted_port):
        return line
    return (
        f"{line} (port {wanted_port} is busy): give the tools --bootstrap {bootstrap}, "
        f"e.g. ticket-tools tail --bootstrap {bootstrap}"
    )


def demo_settings(settings: Settings) -> Settings:
    """The demo serves /metrics on loopback unless METRICS_HOST says otherwise (the pod keeps 0.0.0.0):
    a laptop running ``make run`` should not expose its metrics to the network."""
    if "metrics_host" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"metrics_host": "127.0.0.1"})


DEMO_USER = "demo"


def demo_console(settings: Settings) -> tuple[Settings, str | None]:
    """The demo with the triage console on: settings that serve it on a free loopback API port with a
    ``demo`` user whose password is made up now, and that password (None when the environment
    configures the console itself). Only the demo does this; the service's defaults serve no console."""
    if settings.console_enabled:
        return settings, None
    password = secrets.token_urlsafe(9)
    update: dict[str, object] = {
        "console_users": {DEMO_USER: hash_password(password)},
        "console_cookie_secure": False,  # plain HTTP on loopback
    }
    if settings.api_port is None:
        update["api_port"] = 0
        if not (settings.api_tokens or settings.api_hmac_secrets):
            update["api_tokens"] = {"demo": SecretStr(secrets.token_urlsafe(24))}
    return settings.model_copy(update=update), password


def url_host(host: str) -> str:
    """A served address as a browser can open it: a wildcard as loopback, an IPv6 one in brackets. Pure."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def console_banner(settings: Settings, api_port: int | None, password: str | None) -> str | None:
    """Where the console is and how to sign in. Pure."""
    if api_port is None or not settings.console_enabled:
        return None
    url = f"http://{url_host(settings.api_host)}:{api_port}/console/"
    sign_in = f"sign in as {DEMO_USER} / {password}" if password else "sign in as configured (CONSOLE_USERS)"
    return f"triage console on {url} ({sign_in}): the low-confidence tickets wait there"


def claude_advice(problem: str, settings: Settings) -> str:
    """What a Claude API that does not answer means for the demo's tickets, and how to fix it. Pure."""
    url = settings.anthropic_base_url or DEFAULT_API_URL
    if problem.startswith(("rejected the key", "refused the key")):
        check = "check ANTHROPIC_API_KEY"
    else:
        check = "check ANTHROPIC_BASE_URL and the network"
    local = "unset ANTHROPIC_API_KEY" if settings.tiers is None else "set TIERS=local"
    return (
        f"Claude API at {url}: {problem}. Tickets the Claude tiers get will go to "
        f"'{settings.triage_topic}' after their retries; {check}, or {local} to classify with the "
        "local tier"
    )


def status(message: str) -> None:
    """A status line on stderr, unwrapped and flushed (tests and scripts wait for these lines)."""
    print(f"ticket-router: {message}", file=sys.stderr, flush=True)


async def run_demo(settings: Settings, samples: Path | None = None, exit_after: float | None = None) -> int:
    """Run the demo; returns the exit status: 0 when ``exit_after`` ended it, 128 + the signal's
    number when Ctrl-C (130) or SIGTERM did.

    A signal during start-up cancels the start-up (broker, training, topics, group join) at once; one
    after start-up drains the tickets in flight, and a second one stops without waiting for them.
    """
    lines = load_samples(samples)
    settings, password = demo_console(settings)
    table = OutcomeTable(len(lines))
    stop = asyncio.Event()
    up = asyncio.Event()
    received: list[int] = []
    demo = asyncio.create_task(_demo(settings, lines, table, stop, up, exit_after, password))

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()
        if not up.is_set() or len(received) > 1:
            demo.cancel()

    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await demo
    except asyncio.CancelledError:
        if not (received and demo.cancelled()):
            raise
        status(
            "interrupted during start-up"
            if not up.is_set()
            else "interrupted again: stopped without waiting for the tickets in flight (they are redelivered)"
        )
        return 128 + received[0]
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    print(table.summary(), file=sys.stderr)
    return 128 + received[0] if received else 0


async def _demo(
    settings: Settings,
    lines: list[bytes],
    table: OutcomeTable,
    stop: asyncio.Event,
    up: asyncio.Event,
    exit_after: float | None,
    password: str | None = None,
) -> None:
    async with demo_endpoint(settings) as bootstrap:
        started: asyncio.Future[RunningService] = asyncio.get_running_loop().create_future()
        service = asyncio.create_task(
            run_service(settings, bootstrap, stop, on_started=started.set_result, extra_hooks=[table.hook])
        )
        try:
            running = await _first_of(started, service)
            up.set()
            status(
                f"service up (tiers: {','.join(settings.effective_tiers)}; metrics on "
                f"http://{settings.metrics_host}:{running.http_port}/metrics); "
                f"publishing {len(lines)} sample tickets to '{settings.input_topic}'"
            )
            if running.claude is not None and running.claude.problem is not None:
                status(claude_advice(running.claude.problem, settings))
            banner = console_banner(settings, running.api_port, password)
            if banner is not None:
                status(banner)
            await publish_samples(settings, bootstrap, lines)
            await _show(table, stop, service, exit_after)
            await service
        finally:
            if not service.done():
                service.cancel()
            await asyncio.gather(service, return_exceptions=True)


async def _show(
    table: OutcomeTable, stop: asyncio.Event, service: asyncio.Task[None], exit_after: float | None
) -> None:
    """The live table until ``stop`` (a signal, or ``exit_after`` seconds) or the service ends."""
    console = Console()
    loop = asyncio.get_running_loop()
    deadline = None if exit_after is None else loop.time() + exit_after

    def render(running: bool = True) -> Table:
        return table.render(console.width, console.height, live=running)

    with Live(render(), console=console, refresh_per_second=4) as live:
        while not stop.is_set() and not service.done():
            live.update(render())
            if deadline is not None and loop.time() >= deadline:
                stop.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
        live.update(render(running=False))
    if not console.is_terminal:
        console.line()  # rich ends a piped live display without one; the summary needs its own line


async def _first_of(started: asyncio.Future[RunningService], service: asyncio.Task[None]) -> RunningService:
    """Wait for the service to come up, surfacing its start-up error if it fails instead."""
    await asyncio.wait({started, service}, return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
    if started.done():
        return started.result()
    service.result()
    raise RuntimeError("service stopped before it started")
