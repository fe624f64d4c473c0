"""``ticket-tools``: the tools around the service (publish, tail, replay, evaluate, bench, costs, fake-api).

Each subcommand lives in its own module exposing ``add_parser(subcommands)``; the parser's
handler returns an exit status. User mistakes end with one line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from consumer import __version__
from consumer.cli import run_cli

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "producer_tools.publish",
    "producer_tools.correct",
    "producer_tools.tail",
    "producer_tools.replay",
    "producer_tools.evaluate",
    "producer_tools.tune",
    "producer_tools.fake_api",
    "producer_tools.bench",
    "producer_tools.costs",
    "producer_tools.shadow_report",
    "producer_tools.explain",
    "producer_tools.console_user",
    "producer_tools.backfill",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticket-tools", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ticket-tools {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_cli(argv, build_parser(), "ticket-tools")


if __name__ == "__main__":
    sys.exit(main())
