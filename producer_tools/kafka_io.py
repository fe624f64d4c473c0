"""Kafka plumbing shared by ``publish``, ``tail`` and ``replay``.

Tools are run by people, so every way of not reaching the cluster (wrong address, nothing
listening, a firewall that drops packets) must end within a bounded time as one ``UserError``
line instead of a hang or a traceback.

The tools read only the settings they use (``TOOL_SETTINGS``): a bad ``METRICS_PORT`` or
``TIERS`` is the service's problem and must not stop someone from publishing or reading a topic.
Client options still come from the service's own ``client_options``, so a tool talks to a
secured cluster exactly the way the router does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import ValidationError

from consumer.config import Settings, format_settings_error, settings_from_values
from consumer.errors import UserError
from consumer.kafka.connection import client_options
from consumer.kafka.topics import ensure_topics

DEFAULT_CONNECT_TIMEOUT_S = 10.0


# The environment variables publish, tail and replay read: names of ``consumer.config.Settings``
# fields, validated by the service's own rules (one ConfigMap configures both).
TOOL_SETTINGS: tuple[str, ...] = (
    "kafka_bootstrap_servers",
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
    "input_topic",
    "triage_topic",
    "corrections_topic",
    "queue_topic_prefix",
    "topic_partitions",
    "topic_replication_factor",
    "embedded_broker_port",
    "taxonomy_path",
)


def load_tool_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """The service's Settings from the tools' variables only; a bad value is one line naming it.

    Variables not in ``TOOL_SETTINGS`` are never read, so an unparsable ``MODEL_PRICES`` or a
    ``TIERS`` the service would refuse cannot block a tool; every other field keeps its default.
    """
    values = {name: environ[name.upper()] for name in TOOL_SETTINGS if name.upper() in environ}
    try:
        return settings_from_values(values)
    except ValidationError as exc:
        raise UserError(format_settings_error(exc, show_value=True)) from None


@dataclass(frozen=True)
class Connection:
    """Where and how a tool connects: settings for security options, the resolved bootstrap.

    ``default_bootstrap`` is True when neither ``--bootstrap`` nor ``KAFKA_BOOTSTRAP_SERVERS``
    chose the address, so a failure can say that the default was only a guess.
    """

    settings: Settings
    bootstrap: str
    timeout_s: float
    default_bootstrap: bool = False

    def options(self) -> dict[str, Any]:
        options = client_options(self.settings, self.bootstrap)
        return {**options, "client_id": "ticket-tools"}


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap`` and ``--connect-timeout``; defaults are resolved at run time (see ``connect``)."""
    parser.add_argument(
        "--bootstrap",
        default=None,
        help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS, else the local "
        "`ticket-router run` broker on 127.0.0.1:EMBEDDED_BROKER_PORT; when that port was busy, "
        "`ticket-router run` used another one and printed it: pass that here)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT_S,
        metavar="S",
        help=f"give up reaching the broker after S seconds (default {DEFAULT_CONNECT_TIMEOUT_S:g})",
    )


def connection_from_args(args: argparse.Namespace) -> Connection:
    """Settings from the environment plus the command line's connection flags.

    Settings are loaded here, not when the parser is built, so a bad environment variable is
    reported by the CLI's one-line error path instead of breaking ``--help``.
    """
    quiet_client_logs()
    if args.connect_timeout <= 0:
        raise UserError(f"--connect-timeout must be positive, not {args.connect_timeout:g}")
    settings = load_tool_settings()
    bootstrap = resolve_bootstrap(args.bootstrap, settings)
    defaulted = args.bootstrap is None and settings.kafka_bootstrap_servers is None
    return Connection(settings, bootstrap, args.connect_timeout, default_bootstrap=defaulted)


def status(message: str) -> None:
    """A status line on stderr, unwrapped (rich would wrap it at 80 columns when piped) and flushed."""
    print(message, file=sys.stderr, flush=True)


def quiet_client_logs() -> None:
    """Keep aiokafka's own error logs off the terminal: the tools report failures as one line.

    Without a handler, Python's last-resort handler would print aiokafka's connection errors
    above the tool's own message. Applications that configure logging still receive them.
    """
    logger = logging.getLogger("aiokafka")
    if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())


def resolve_bootstrap(explicit: str | None, settings: Settings) -> str:
    """The flag, else the environment, else the embedded broker that ``ticket-router run`` starts."""
    chosen = explicit if explicit is not None else settings.kafka_bootstrap_servers
    if chosen is None:
        return f"127.0.0.1:{settings.embedded_broker_port}"
    if not chosen.strip():
        raise UserError("--bootstrap is empty (expected host:port[,host:port...])")
    return chosen.strip()


async def start_bounded(client: Any, connection: Connection) -> None:
    """``client.start()`` (or ``bootstrap()``) within the connect timeout, as a UserError on failure."""
    start = client.bootstrap if isinstance(client, AIOKafkaClient) else client.start
    try:
        async with asyncio.timeout(connection.timeout_s):
            await start()
    except (KafkaError, OSError, TimeoutError) as exc:
        await _close_quietly(client)
        raise UserError(
            f"cannot reach Kafka at {connection.bootstrap}: {failure_reason(exc, connection)}"
        ) from None


def failure_reason(exc: BaseException, connection: Connection) -> str:
    """A short reason for a failed start; aiokafka's own messages list socket tuples."""
    if connection.default_bootstrap and isinstance(exc, KafkaConnectionError | OSError | TimeoutError):
        return default_bootstrap_hint(connection.bootstrap)
    if isinstance(exc, TimeoutError):
        return f"no answer within {connection.timeout_s:g}s (check --bootstrap or KAFKA_BOOTSTRAP_SERVERS)"
    if isinstance(exc, KafkaConnectionError | OSError):
        return "no broker accepted a connection (check --bootstrap or KAFKA_BOOTSTRAP_SERVERS)"
    return str(exc) or type(exc).__name__


def default_bootstrap_hint(bootstrap: str) -> str:
    """Why the default address may be wrong: ``ticket-router run`` moves its broker when 9092 is taken."""
    return (
        f"no broker is listening on {bootstrap}, the default address (neither --bootstrap nor "
        "KAFKA_BOOTSTRAP_SERVERS is set); `ticket-router run` starts its broker on another port when "
        "that one is busy and prints the address: pass it with --bootstrap HOST:PORT"
    )


async def _close_quietly(client: Any) -> None:
    stop = client.close if isinstance(client, AIOKafkaClient) else client.stop
    with contextlib.suppress(Exception):
        await stop()


async def cluster_topics(connection: Connection) -> dict[str, list[int]]:
    """Every topic on the cluster and its partitions; doubles as the reachability check."""
    client = AIOKafkaClient(**connection.options())
    await start_bounded(client, connection)
    try:
        async with asyncio.timeout(connection.timeout_s):
            cluster = await client.fetch_all_metadata()
    except (KafkaError, TimeoutError) as exc:
        raise UserError(f"cannot read topic metadata from {connection.bootstrap}: {exc}") from None
    finally:
        await _close_quietly(client)
    return {topic: sorted(cluster.partitions_for_topic(topic) or ()) for topic in cluster.topics()}


@contextlib.contextmanager
def kafka_errors_as_user_errors(connection: Connection) -> Iterator[None]:
    """A broker-side refusal mid-command (authorization, a deleted topic) as one line, not a traceback."""
    try:
        yield
    except KafkaError as exc:
        raise UserError(f"Kafka at {connection.bootstrap}: {exc}") from None


async def ensure_or_require_topic(
    connection: Connection,
    existing: dict[str, list[int]],
    topic: str,
    create: bool,
    partitions: int | None,
    hint: str,
) -> None:
    """``--create-topic``: create ``topic`` when it is missing (``partitions`` or TOPIC_PARTITIONS);
    otherwise a missing topic is one line naming it, with ``hint``."""
    if create and topic not in existing:
        count = partitions or connection.settings.topic_partitions
        with kafka_errors_as_user_errors(connection):
            await ensure_topics(
                [topic], count, connection.settings.topic_replication_factor, connection.options()
            )
    else:
        require_topics(existing, [topic], hint)


def require_topics(existing: dict[str, list[int]], wanted: Iterable[str], hint: str = "") -> None:
    """One line naming every missing topic: publishing to one would auto-create it or hang."""
    missing = [topic for topic in wanted if topic not in existing]
    if missing:
        listed = ", ".join(repr(topic) for topic in missing)
        raise UserError(f"topic {listed} does not exist on the broker{hint}")


@contextlib.asynccontextmanager
async def producer(connection: Connection, **extra: Any) -> AsyncIterator[AIOKafkaProducer]:
    """An acks=all producer; not idempotent because aiokafka's idempotent producer fails on Tansu."""
    client = AIOKafkaProducer(
        **connection.options(),
        acks="all",
        enable_idempotence=False,
        request_timeout_ms=int(max(connection.timeout_s, 1.0) * 1000),
        **extra,
    )
    await start_bounded(client, connection)
    try:
        yield client
    finally:
        await client.stop()


@contextlib.asynccontextmanager
async def reader(connection: Connection) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer with no group: partitions are assigned by hand and nothing is ever committed.

    ``auto_offset_reset="earliest"`` only matters when a position is out of range; the tools
    choose their start offsets themselves.
    """
    client = AIOKafkaConsumer(
        **connection.options(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=200,
    )
    await start_bounded(client, connection)
    try:
        yield client
    finally:
        await client.stop()


def topic_partitions(existing: dict[str, list[int]], topics: Iterable[str]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for topic in topics for partition in existing[topic]]
