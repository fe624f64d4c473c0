"""``ticket-tools explain``: ask the router's API why a ticket went where it did, and print the
explanation as the model writes it.

Name the ticket by ``--event-id`` (answered by the replica that routed it, from its memory of
recent decisions) or by ``--topic/--partition/--offset`` of the routed record, as ``ticket-tools
tail --json`` shows them (answered by any replica). Credentials come from the environment, never
from flags (which end up in shell history and ``ps``): ``TICKET_ROUTER_API_TOKEN`` for a bearer
token, or ``TICKET_ROUTER_API_CLIENT`` and ``TICKET_ROUTER_API_SECRET`` to sign requests.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson

from consumer.api.auth import signature_of
from consumer.errors import UserError

EXPLAIN_PATH = "/v1/explain"
TOKEN_ENV = "TICKET_ROUTER_API_TOKEN"
CLIENT_ENV = "TICKET_ROUTER_API_CLIENT"
SECRET_ENV = "TICKET_ROUTER_API_SECRET"
URL_ENV = "TICKET_ROUTER_API_URL"
TIMEOUT_S = 300.0


# ---------------------------------------------------------------------------- pure


def auth_headers(environ: Mapping[str, str], now: float) -> dict[str, str]:
    """A bearer token if one is set, else a signature over the (empty) body."""
    token = environ.get(TOKEN_ENV, "").strip()
    if token:
        return {"Authorization": f"Bearer {token}"}
    client, secret = environ.get(CLIENT_ENV, "").strip(), environ.get(SECRET_ENV, "")
    if client and secret:
        stamp = str(int(now))
        return {"X-Client": client, "X-Timestamp": stamp, "X-Signature": signature_of(secret, stamp, b"")}
    raise UserError(f"no API credentials: set {TOKEN_ENV}, or {CLIENT_ENV} and {SECRET_ENV}")


def explain_query(args: argparse.Namespace) -> dict[str, str]:
    position = [args.topic, args.partition, args.offset]
    if args.event_id is not None:
        if any(value is not None for value in position):
            raise UserError("give --event-id, or --topic, --partition and --offset, not both")
        return {"event_id": args.event_id}
    if any(value is None for value in position):
        raise UserError("give --event-id, or all of --topic, --partition and --offset")
    return {"topic": args.topic, "partition": str(args.partition), "offset": str(args.offset)}


def explain_url(base: str, query: Mapping[str, str]) -> str:
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"--api: expected http(s)://HOST:PORT, got {base!r}")
    return f"{base.rstrip('/')}{EXPLAIN_PATH}?{urlencode(query)}"


@dataclass
class EventReader:
    """Server-sent events from chunks as they arrive: (event, JSON data) once each is complete."""

    _buffer: str = ""
    _pending: list[str] = field(default_factory=list)

    def feed(self, chunk: str) -> Iterator[tuple[str, dict[str, Any]]]:
        self._buffer += chunk.replace("\r\n", "\n")
        while "\n\n" in self._buffer:
            block, self._buffer = self._buffer.split("\n\n", 1)
            event, data = "message", []
            for line in block.split("\n"):
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
            if data:
                yield event, orjson.loads("\n".join(data))


def decision_lines(decision: Mapping[str, Any]) -> list[str]:
    """The facts the explanation is grounded in, as a short header."""
    confidences = decision.get("confidences", {})
    labels = ", ".join(
        f"{axis}={label}" + (f" ({confidences[axis]:.2f})" if axis in confidences else "")
        for axis, label in decision.get("labels", {}).items()
    )
    rule = decision.get("rule") or "none (human triage)"
    return [f"queue {decision.get('queue')} by rule {rule}", f"labels: {labels or 'none'}"]


# ---------------------------------------------------------------------------- I/O


async def stream_explanation(
    url: str, headers: Mapping[str, str], out: TextIO, err: TextIO, as_json: bool
) -> int:
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url, headers=headers) as response:
            if response.status != 200:
                raise UserError(f"HTTP {response.status}: {await error_of(response)}")
            return await print_events(response, out, err, as_json)
    except aiohttp.ClientError as exc:
        raise UserError(f"--api: cannot reach {urlsplit(url).netloc}: {type(exc).__name__}") from None


async def error_of(response: aiohttp.ClientResponse) -> str:
    text = await response.text()
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text.strip()[:200] or response.reason or "no reason given"
    if isinstance(body, dict) and "error" in body:
        where = f" (field {body['field']})" if body.get("field") else ""
        return f"{body['error']}{where}"
    return text.strip()[:200]


async def print_events(response: aiohttp.ClientResponse, out: TextIO, err: TextIO, as_json: bool) -> int:
    reader = EventReader()
    decoder = codecs.getincrementaldecoder("utf-8")()  # a chunk may end inside a character
    status = 1  # a stream that ends without "done" is a failure
    async for chunk in response.content.iter_any():
        for event, data in reader.feed(decoder.decode(chunk)):
            if as_json:
                out.write(orjson.dumps({"event": event, **data}).decode() + "\n")
            elif event == "decision":
                err.write("\n".join(decision_lines(data)) + "\n\n")
            elif event == "text":
                out.write(str(data.get("text", "")))
            elif event == "done":
                out.write("\n")
                err.write(f"\n(cost ${float(data.get('cost_usd', 0.0)):.5f}, {data.get('stop_reason')})\n")
            elif event == "error":
                out.write("\n")
                err.write(f"error: {data.get('error')}\n")
            out.flush()
            if event == "done":
                status = 0
    return status


def run(args: argparse.Namespace) -> int:
    base = args.api or os.environ.get(URL_ENV, "")
    if not base:
        raise UserError(f"--api: the router API's URL is required (or set {URL_ENV})")
    url = explain_url(base, explain_query(args))
    headers = auth_headers(os.environ, time.time())
    return asyncio.run(stream_explanation(url, headers, sys.stdout, sys.stderr, args.json))


def add_parser(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "explain",
        help="stream why the router sent a ticket to its queue (GET /v1/explain)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--event-id", default=None, help="the ticket event's event_id")
    parser.add_argument("--topic", default=None, help="queue or triage topic of the routed record")
    parser.add_argument("--partition", type=int, default=None)
    parser.add_argument("--offset", type=int, default=None)
    parser.add_argument(
        "--api", default=None, help=f"the router API, e.g. http://router:8081 (default: {URL_ENV})"
    )
    parser.add_argument("--json", action="store_true", help="one JSON line per event instead of text")
    parser.set_defaults(handler=run)
