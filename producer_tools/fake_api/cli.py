"""``ticket-tools fake-api``: the fake Messages API as a long-running process for demos and benchmarks.

Follows the ``ticket-tools`` convention: ``add_parser(subcommands)`` registers the subcommand and
stores its handler as ``args.handler``, which returns an exit status; a bad scenario file is a
``UserError`` so the CLI reports it as one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import ValidationError

from consumer.errors import UserError
from producer_tools.fake_api.scenario import Scenario, load_scenario
from producer_tools.fake_api.server import FakeApiServer

DEFAULT_PORT = 8765
DESCRIPTION = """\
Serve a fake Anthropic Messages API (on loopback by default) for tests, benchmarks and demos.
Point the router at it with ANTHROPIC_BASE_URL=http://HOST:PORT and any ANTHROPIC_API_KEY
(unless the scenario sets api_key).

Its answers are NOT a classification: each label is scripted by the scenario (keywords, a
ticket_id table, a fixed label) or else a stable hash of the ticket text, and confidences are
the scenario's (0.9 by default). So a ticket about a leaked admin token may well land in a
critical-infrastructure queue. What it does check is the API contract (versions, parameters
per model, thinking and effort rules, retired models) and the usage it reports; see the
README section "The fake Messages API" and example-scenario.yaml beside this module.
"""


def read_scenario(path: Path | str | None) -> Scenario:
    """The scenario at ``path`` (defaults when None), with file-format problems turned into UserError."""
    if path is None:
        return Scenario()
    try:
        return load_scenario(path)
    except (ValidationError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise UserError(f"invalid scenario file {path}: {exc}") from exc


async def serve_forever(
    host: str = "127.0.0.1", port: int = DEFAULT_PORT, scenario_path: Path | str | None = None
) -> None:
    """Serves until cancelled; the ready line is what scripts wait for before pointing clients here."""
    server = FakeApiServer(read_scenario(scenario_path))
    url = await server.start(host, port)
    print(f"fake Anthropic API listening on {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def handle_cli(args: argparse.Namespace) -> int:
    """Blocks until Ctrl-C, which is the normal way to stop a server, so it still exits 0."""
    read_scenario(args.scenario)  # fail with one line before binding anything
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(args.host, args.port, args.scenario))
    return 0


if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


def add_cli_parser(subparsers: Subcommands) -> argparse.ArgumentParser:
    """Registers ``fake-api``; dispatch with ``args.handler(args)``."""
    parser = subparsers.add_parser(
        "fake-api",
        help="run a scriptable fake Anthropic Messages API (labels are scripted or hashed, not real)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to bind (default: %(default)s)")
    parser.add_argument(
        "--scenario",
        type=Path,
        metavar="FILE",
        help="scenario JSON or YAML file: labels, confidences, latency, faults per model "
        "(default: hashed labels at confidence 0.9, no faults)",
    )
    parser.set_defaults(handler=handle_cli)
    return parser


# The name ``producer_tools.cli`` looks up in each subcommand module.
add_parser = add_cli_parser
