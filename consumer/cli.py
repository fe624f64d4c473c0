"""``ticket-router``: the service's command line.

User mistakes (bad config, a bad taxonomy file, an unreachable broker) end with one readable line
on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from aiokafka.errors import KafkaConnectionError

from consumer import __version__
from consumer.classify.local import TrainingDataError
from consumer.config import ConfigError, Settings, load_settings
from consumer.errors import UserError
from consumer.kafka.connection import preflight
from consumer.kafka.embedded_broker import BrokerStartError, EmbeddedBroker, port_is_free
from consumer.learn.dense import EncoderUnavailable
from consumer.logs import configure_logging
from consumer.routing import reachable_queues
from consumer.service import check_shadow_name, install_signal_handlers, run_service
from consumer.taxonomy import TaxonomyError, load_taxonomy

USER_ERRORS = (
    UserError,
    ConfigError,
    TaxonomyError,
    TrainingDataError,
    EncoderUnavailable,
    BrokerStartError,
    KafkaConnectionError,
    OSError,
)


@contextlib.contextmanager
def kafka_endpoint(settings: Settings) -> Iterator[str]:
    """The configured cluster, or an embedded broker on loopback for the duration."""
    if settings.kafka_bootstrap_servers:
        yield settings.kafka_bootstrap_servers
        return
    port = settings.embedded_broker_port if port_is_free(settings.embedded_broker_port) else None
    with EmbeddedBroker(port=port) as broker:
        print(f"embedded Kafka-protocol broker (Tansu) on {broker.bootstrap_servers}", file=sys.stderr)
        yield broker.bootstrap_servers


async def _consume(settings: Settings, shadow: str | None = None) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    with kafka_endpoint(settings) as bootstrap:
        await preflight(settings, bootstrap)
        try:
            await run_service(settings, bootstrap, stop, shadow=shadow)
        except KafkaConnectionError as exc:
            raise UserError(f"lost Kafka at {bootstrap} while starting: {exc}") from None


def cmd_consume(args: argparse.Namespace) -> int:
    check_shadow_name(args.shadow)
    settings = load_settings()
    if args.shadow is not None and settings.embedded_broker:
        # An embedded broker of its own would hold no live traffic: the shadow would wait forever.
        raise UserError(
            "--shadow needs KAFKA_BOOTSTRAP_SERVERS: a shadow reads the live router's input topic "
            "(for `ticket-router run`, the address it printed)"
        )
    configure_logging(settings.log_level)
    asyncio.run(_consume(settings, args.shadow))
    return 0


async def _draft(settings: Settings) -> None:
    from consumer.draft.service import run_drafter

    stop = asyncio.Event()
    install_signal_handlers(stop)
    with kafka_endpoint(settings) as bootstrap:
        await preflight(settings, bootstrap)
        try:
            await run_drafter(settings, bootstrap, stop)
        except KafkaConnectionError as exc:
            raise UserError(f"lost Kafka at {bootstrap} while starting: {exc}") from None


def cmd_draft(_args: argparse.Namespace) -> int:
    """The drafter: drafts of first replies for routed tickets, for agents to review (never sent)."""
    settings = load_settings()
    if settings.embedded_broker:
        # An embedded broker of its own would hold no routed tickets: the drafter would wait forever.
        raise UserError(
            "ticket-router draft needs KAFKA_BOOTSTRAP_SERVERS: it reads the queue topics the router "
            "writes (for `ticket-router run`, the address it printed)"
        )
    configure_logging(settings.log_level)
    asyncio.run(_draft(settings))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The demo; its exit status is 130 after Ctrl-C (the start-up is cancelled, not waited for)."""
    if args.exit_after is not None and not (math.isfinite(args.exit_after) and args.exit_after > 0):
        raise UserError(f"--exit-after must be a positive number of seconds, not {args.exit_after:g}")
    from consumer.demo import demo_settings, run_demo

    settings = demo_settings(load_settings())
    configure_logging("WARNING" if not args.verbose else settings.log_level)
    return asyncio.run(run_demo(settings, samples=args.samples, exit_after=args.exit_after))


def cmd_schema_export(args: argparse.Namespace) -> int:
    from schemas.export import export

    for path in export(Path(args.directory)):
        print(path)
    return 0


def cmd_schema_check(args: argparse.Namespace) -> int:
    from schemas.export import stale_files

    stale = stale_files(Path(args.directory))
    if stale:
        print(
            f"ticket-router: stale JSON Schemas: {', '.join(stale)} (run: ticket-router schema export)",
            file=sys.stderr,
        )
        return 1
    print("JSON Schemas are up to date")
    return 0


def cmd_taxonomy_check(args: argparse.Namespace) -> int:
    """Validate FILE (else TAXONOMY_PATH, else the bundled one); errors blame whichever gave the path."""
    if args.path:
        taxonomy = load_taxonomy(args.path, origin="taxonomy check")
    else:
        taxonomy = load_taxonomy(os.environ.get("TAXONOMY_PATH") or None)
    print(f"taxonomy {taxonomy.name!r} version {taxonomy.version} (fingerprint {taxonomy.fingerprint()})")
    for name, axis in taxonomy.axes.items():
        default = ", default" if axis.threshold_is_default else ""
        local = f", local tier {axis.local_threshold}" if axis.local_threshold is not None else ""
        print(f"  {name} (threshold {axis.threshold}{default}{local}): {', '.join(axis.labels)}")
    queues = reachable_queues(taxonomy)
    print(f"  {len(queues)} queues: {', '.join(queues)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticket-router", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ticket-router {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    consume = commands.add_parser("consume", help="run the service (the main job)")
    consume.add_argument(
        "--shadow",
        metavar="NAME",
        default=None,
        help="run as candidate NAME: own consumer group, decisions to topic shadow.NAME only, "
        "never to a queue or the triage topic (compare: ticket-tools shadow-report NAME)",
    )
    consume.set_defaults(handler=cmd_consume)

    draft = commands.add_parser(
        "draft",
        help="draft first replies for routed tickets (DraftReply to DRAFTS_TOPIC), for agents to review",
    )
    draft.set_defaults(handler=cmd_draft)

    run = commands.add_parser("run", help="local demo: embedded broker, service, sample tickets, live table")
    run.add_argument(
        "--samples", type=Path, default=None, help="JSONL of ticket events (default: bundled samples)"
    )
    run.add_argument(
        "--exit-after", type=float, default=None, metavar="S", help="stop after S seconds (S > 0)"
    )
    run.add_argument("--verbose", action="store_true", help="show the service's JSON logs")
    run.set_defaults(handler=cmd_run)

    schema = commands.add_parser("schema", help="JSON Schema of the wire events")
    schema_commands = schema.add_subparsers(dest="schema_command", required=True)
    default_dir = str(Path(__file__).resolve().parent.parent / "schemas" / "json")
    for name, handler, text in (
        ("export", cmd_schema_export, "write schemas/json/*.json"),
        ("check", cmd_schema_check, "fail if schemas/json is stale"),
    ):
        sub = schema_commands.add_parser(name, help=text)
        sub.add_argument("--directory", default=default_dir)
        sub.set_defaults(handler=handler)

    taxonomy = commands.add_parser("taxonomy", help="inspect a taxonomy file")
    taxonomy_commands = taxonomy.add_subparsers(dest="taxonomy_command", required=True)
    check = taxonomy_commands.add_parser("check", help="validate a taxonomy and list its queues")
    check.add_argument(
        "path", nargs="?", default=None, help="file (default: TAXONOMY_PATH or the bundled one)"
    )
    check.set_defaults(handler=cmd_taxonomy_check)
    return parser


def run_cli(argv: list[str] | None, parser: argparse.ArgumentParser, prog: str) -> int:
    """Dispatch, turning user mistakes into one line and exit status 2."""
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        return closed_output()
    except USER_ERRORS as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


SIGPIPE_STATUS = 141  # what a shell reports for a program ended by SIGPIPE


def closed_output() -> int:
    """The reader of our output went away (``… | head -1``): not a mistake, nothing to say.

    stdout is pointed at /dev/null first, so the interpreter's final flush of the buffered rest
    cannot raise the same error again on the way out.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return SIGPIPE_STATUS


def main(argv: list[str] | None = None) -> int:
    return run_cli(argv, build_parser(), "ticket-router")


if __name__ == "__main__":
    sys.exit(main())
