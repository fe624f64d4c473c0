"""``POST /v1/tickets``: push-based ingestion onto the input topic, on its own port (API_PORT).

The promise to a caller is the one the router keeps for Kafka: a ``202`` names only events the
broker acknowledged (``acks=all``), so an accepted ticket is never lost; anything else is an error
the caller can retry with the same ``event_id``s, which are then answered without a second record.

Order of checks, cheapest and least revealing first: body size (by Content-Length), credentials
(an unauthenticated request never reaches the rate limiter or the JSON parser), the client's rate,
Content-Type, JSON, every event's schema; only then is anything produced.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr, ValidationError

from consumer import __version__
from consumer.api.auth import (
    INTERCOM_SIGNATURE_HEADER,
    ZENDESK_SIGNATURE_HEADER,
    ZENDESK_TIMESTAMP_HEADER,
    SeenSignatures,
    SignedRequest,
    Unauthorized,
    bearer_client,
    check_signed_headers,
    check_zendesk_headers,
    hmac_client,
    intercom_client,
    signature_key,
    zendesk_client,
)
from consumer.api.classify import CLASSIFY_ROUTE, Classifier
from consumer.api.classify import OUTCOMES as CLASSIFY_OUTCOMES
from consumer.api.explain import EXPLAIN_ROUTE, Explainer
from consumer.api.explain import OUTCOMES as EXPLAIN_OUTCOMES
from consumer.api.health import start_http
from consumer.api.mapping import WebhookMapping, adapter_for
from consumer.api.openapi import OPENAPI_ROUTE, Limits, Operation, openapi_document
from consumer.api.ratelimit import RateLimiter, retry_after_header
from consumer.api.webhooks import (
    INTERCOM_TIER_PATH,
    ZENDESK_TIER_PATH,
    Adapter,
    PayloadError,
    Skipped,
    intercom_event,
    zendesk_event,
)
from consumer.config import Settings
from consumer.kafka.dedup import RecentIds
from consumer.metrics import Metrics
from schemas.events import TicketEvent

log = logging.getLogger("ticket_router")

TICKETS_ROUTE = "/v1/tickets"
ZENDESK_ROUTE = "/v1/webhooks/zendesk"
INTERCOM_ROUTE = "/v1/webhooks/intercom"
CONSOLE_PREFIX = "/console/"
"""Where the triage console (consumer.console) is mounted, with its own sign-in."""
MAPPED_ROUTE = "/v1/webhooks/{name}"
"""One route per API_WEBHOOK_MAPPINGS entry (a static path each, so metric labels stay bounded)."""
PRODUCE_TIMEOUT_S = 10.0
"""How long a request waits for the broker's acknowledgements before answering 503."""
BROKER_RETRY_AFTER_S = 5
JSON_CONTENT_TYPES = ("application/json",)
CLIENT = web.RequestKey("client", str)
"""The authenticated client's name, for the handlers."""
REMEMBERED = web.RequestKey("remembered_signature", str)
"""The signature this request's authentication remembered against replays (if it was signed)."""


@dataclass(frozen=True)
class IngestConfig:
    topic: str
    tokens: Mapping[str, SecretStr]
    hmac_secrets: Mapping[str, SecretStr]
    max_body_bytes: int
    max_batch: int
    rate_per_s: float
    rate_burst: int
    dedup_window: int
    produce_timeout_s: float = PRODUCE_TIMEOUT_S
    zendesk_secrets: Mapping[str, SecretStr] = field(default_factory=dict)
    intercom_secrets: Mapping[str, SecretStr] = field(default_factory=dict)
    zendesk_tier_path: tuple[str | int, ...] = ZENDESK_TIER_PATH
    intercom_tier_path: tuple[str | int, ...] = INTERCOM_TIER_PATH
    webhook_mappings: Mapping[str, WebhookMapping] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestConfig:
        return cls(
            topic=settings.input_topic,
            tokens=settings.api_tokens,
            hmac_secrets=settings.api_hmac_secrets,
            max_body_bytes=settings.api_max_body_bytes,
            max_batch=settings.api_max_batch,
            rate_per_s=settings.api_rate_per_s,
            rate_burst=settings.api_rate_burst,
            dedup_window=settings.dedup_window,
            zendesk_secrets=settings.api_zendesk_secrets,
            intercom_secrets=settings.api_intercom_secrets,
            zendesk_tier_path=settings.api_zendesk_tier_path,
            intercom_tier_path=settings.api_intercom_tier_path,
            webhook_mappings=settings.api_webhook_mappings,
        )


# -- validation (pure) ----------------------------------------------------------------------------


class BadRequest(Exception):
    """A 400: ``error`` for people, ``field`` a JSON path into the body, ``index`` the event's place."""

    def __init__(self, error: str, field: str | None = None, index: int | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.field = field
        self.index = index

    def body(self) -> dict[str, object]:
        return {"error": self.error, "field": self.field, "index": self.index}


def json_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as a JSON path: ``$.tickets[2].created_at``."""
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate_event(item: object, prefix: str, index: int) -> TicketEvent:
    """One event, or a BadRequest naming its first bad field (pydantic's message never quotes the
    value, so a body's secrets are not echoed back)."""
    try:
        return TicketEvent.model_validate(item)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = json_path(prefix, tuple(first["loc"]))
        more = exc.error_count() - 1
        extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise BadRequest(f"invalid TicketEvent at {where}: {first['msg']}{extra}", where, index) from None


def events_of(document: object, max_batch: int) -> list[tuple[dict[str, Any], TicketEvent]]:
    """Each event of a body (one TicketEvent, or ``{"tickets": [...]}``) with its JSON object,
    all validated before any is produced. The object is what is produced, so fields this version
    does not know survive for consumers that do."""
    if not isinstance(document, dict):
        raise BadRequest('expected a TicketEvent object or {"tickets": [...]}', "$", None)
    if "tickets" not in document:
        return [(document, validate_event(document, "$", 0))]
    batch = document["tickets"]
    if not isinstance(batch, list) or not batch:
        raise BadRequest('"tickets" must be a non-empty array of TicketEvent objects', "$.tickets", None)
    if len(batch) > max_batch:
        raise BadRequest(
            f'"tickets" holds {len(batch)} events; at most {max_batch} per request (API_MAX_BATCH)',
            "$.tickets",
            None,
        )
    events = []
    for index, item in enumerate(batch):
        prefix = f"$.tickets[{index}]"
        event = validate_event(item, prefix, index)
        events.append((item, event))
    return events


def json_of(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", "$", None) from None


def parse_body(raw: bytes, max_batch: int) -> list[tuple[dict[str, Any], TicketEvent]]:
    return events_of(json_of(raw), max_batch)


# -- producing, with a duplicate window --------------------------------------------------------


class BrokerUnavailable(Exception):
    """Not every event of a request was acknowledged in time; nothing is reported accepted."""


Deliver = Callable[[bytes, bytes], Coroutine[Any, Any, object]]
"""(key, value) → resolves once the broker acknowledged the record."""


def kafka_delivery(producer: AIOKafkaProducer, topic: str) -> Deliver:
    async def deliver(key: bytes, value: bytes) -> object:
        acknowledged = await producer.send(topic, value=value, key=key)
        return await acknowledged

    return deliver


@dataclass
class Ingestor:
    """Produces events and remembers which were acknowledged.

    An event already being produced for another request is not produced twice: the second
    request waits for the same acknowledgement. An id counts as accepted only once acknowledged,
    so a request that got 503 can be retried and only the missing events are produced.
    """

    deliver: Deliver
    accepted: RecentIds
    """Event ids the broker acknowledged, the last DEDUP_WINDOW of them."""
    timeout_s: float
    on_accepted: Callable[[int], None] = lambda _count: None
    _pending: dict[str, asyncio.Task[object]] = field(default_factory=dict)

    def _settle(self, event_id: str, task: asyncio.Task[object]) -> None:
        self._pending.pop(event_id, None)
        if task.cancelled() or task.exception() is not None:
            return
        self.accepted.add(event_id)
        self.on_accepted(1)

    def _delivery(self, item: Mapping[str, Any], event: TicketEvent) -> asyncio.Task[object]:
        task = self._pending.get(event.event_id)
        if task is None:
            value = orjson.dumps(item)
            task = asyncio.create_task(self.deliver(event.ticket_id.encode(), value))
            self._pending[event.event_id] = task
            task.add_done_callback(functools.partial(self._settle, event.event_id))
        return task

    async def accept(self, events: list[tuple[dict[str, Any], TicketEvent]]) -> list[str]:
        """The event ids of a request, once each is on the topic; raises BrokerUnavailable."""
        ids: list[str] = []
        waiting: list[asyncio.Task[object]] = []
        for item, event in events:
            if event.event_id in ids:
                continue  # the same event twice in one batch is produced once
            ids.append(event.event_id)
            if event.event_id not in self.accepted:
                waiting.append(self._delivery(item, event))
        if waiting:
            done, not_done = await asyncio.wait(waiting, timeout=self.timeout_s)
            if not_done:
                raise BrokerUnavailable(f"no acknowledgement within {self.timeout_s:g} s")
            for task in done:
                failure = task.exception()
                if failure is not None:
                    raise BrokerUnavailable(f"{type(failure).__name__}: {failure}")
        return ids


# -- HTTP -----------------------------------------------------------------------------------------


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def route_label(request: web.Request) -> str:
    """The matched route's path for the metric label (bounded), never the requested path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@dataclass
class Gate:
    """Authentication and rate limiting in front of every route."""

    config: IngestConfig
    seen: SeenSignatures = field(default_factory=SeenSignatures)
    limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.config.rate_per_s, self.config.rate_burst)

    async def client_of(self, request: web.Request) -> str:
        """Who sent ``request``: a bearer token on any route; a help desk's own signature on its
        own route only; else our X-Signature. A signed request's headers are checked before its
        body is read, and the body is verified as bytes before anything parses it as JSON."""
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            return bearer_client(authorization, self.config.tokens)
        route = route_label(request)
        if route == ZENDESK_ROUTE and ZENDESK_SIGNATURE_HEADER in request.headers:
            return await self.zendesk_client(request)
        if route == INTERCOM_ROUTE and INTERCOM_SIGNATURE_HEADER in request.headers:
            signature = request.headers.get(INTERCOM_SIGNATURE_HEADER)
            return intercom_client(signature, await request.read(), self.config.intercom_secrets, time.time())
        if "X-Signature" not in request.headers:
            raise Unauthorized(missing_credentials(route))
        signed = SignedRequest(
            request.headers.get("X-Client"),
            request.headers.get("X-Timestamp"),
            request.headers.get("X-Signature"),
            b"",
        )
        check_signed_headers(signed, self.config.hmac_secrets, time.time(), self.seen.window_s)
        body = await request.read()
        client = hmac_client(
            SignedRequest(signed.client, signed.timestamp, signed.signature, body),
            self.config.hmac_secrets,
            time.time(),
            self.seen,
        )
        request[REMEMBERED] = signature_key(signed.signature)
        return client

    async def zendesk_client(self, request: web.Request) -> str:
        """Zendesk's X-Zendesk-Webhook-Signature, with our 300 s window and replay refusal."""
        signed = SignedRequest(
            None,
            request.headers.get(ZENDESK_TIMESTAMP_HEADER),
            request.headers.get(ZENDESK_SIGNATURE_HEADER),
            b"",
        )
        check_zendesk_headers(signed, time.time(), self.seen.window_s)
        body = await request.read()
        client = zendesk_client(
            SignedRequest(None, signed.timestamp, signed.signature, body),
            self.config.zendesk_secrets,
            time.time(),
            self.seen,
        )
        request[REMEMBERED] = signature_key(signed.signature)
        return client

    def release(self, request: web.Request) -> None:
        """A signed request that was not accepted may be sent again as it was: a help desk's retry
        after our 429 or 503 carries the same signature, and refusing it as a replay would lose
        the ticket. A replay of an accepted request is still refused."""
        remembered = request.get(REMEMBERED)
        if remembered is not None:
            self.seen.forget(remembered)

    async def answer(
        self, request: web.Request, handler: Callable[..., Awaitable[Any]]
    ) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            return too_large(self.config.max_body_bytes)
        try:
            client = await self.client_of(request)
        except Unauthorized as exc:
            return error(401, str(exc), {"WWW-Authenticate": 'Bearer realm="ticket-router"'})
        wait_s = self.limiter.take(client, time.monotonic())
        if wait_s > 0:
            self.release(request)
            return error(
                429,
                f"rate limit of client {client!r} reached; retry after {retry_after_header(wait_s)} s",
                {"Retry-After": retry_after_header(wait_s)},
            )
        request[CLIENT] = client
        try:
            response: web.StreamResponse = await handler(request)
        except BaseException:
            self.release(request)
            raise
        if not 200 <= response.status < 300:
            self.release(request)
        return response


def missing_credentials(route: str) -> str:
    """The 401 for a request with no credentials, naming what this route accepts."""
    native = {
        ZENDESK_ROUTE: f", or Zendesk's {ZENDESK_SIGNATURE_HEADER} and {ZENDESK_TIMESTAMP_HEADER}",
        INTERCOM_ROUTE: f", or Intercom's {INTERCOM_SIGNATURE_HEADER}: sha1=<hex>",
    }.get(route, "")
    return (
        "credentials missing: send Authorization: Bearer <token>, or X-Client, X-Timestamp "
        f"and X-Signature: sha256=<HMAC-SHA256 of '<timestamp>.' + body>{native}"
    )


def too_large(limit: int) -> web.Response:
    return error(413, f"body larger than {limit} bytes (API_MAX_BODY_BYTES)")


async def produce_and_answer(
    ingestor: Ingestor, events: list[tuple[dict[str, Any], TicketEvent]], client: str
) -> web.Response:
    """202 naming the events once the broker acknowledged them all, else 503 (retry is safe)."""
    try:
        accepted = await ingestor.accept(events)
    except BrokerUnavailable as exc:
        log.warning("ingestion refused: broker unavailable (%s)", exc, extra={"client": client})
        return error(
            503,
            "the broker did not acknowledge the events; retry with the same event ids",
            {"Retry-After": str(BROKER_RETRY_AFTER_S)},
        )
    return web.json_response({"accepted": accepted}, status=202)


async def json_document(request: web.Request) -> object:
    """The request's JSON body, or the 415 or 400 answer that refuses it (a JSON document is never
    a Response, so the caller tells them apart by type)."""
    if request.content_type not in JSON_CONTENT_TYPES:
        return error(415, f"Content-Type must be application/json (got {request.content_type!r})")
    try:
        return json_of(await request.read())
    except BadRequest as exc:
        return web.json_response(exc.body(), status=400)


def webhook_handler(adapter: Adapter, ingestor: Ingestor) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A help desk's webhook route: its payload through ``adapter``, then produced like
    ``POST /v1/tickets`` (the guard middleware already authenticated and rate-limited it)."""

    async def post_webhook(request: web.Request) -> web.Response:
        document = await json_document(request)
        if isinstance(document, web.Response):
            return document
        try:
            outcome = adapter(document)
        except PayloadError as exc:
            return web.json_response(BadRequest(str(exc), exc.field, 0).body(), status=400)
        if isinstance(outcome, Skipped):
            return web.json_response({"accepted": [], "skipped": outcome.reason}, status=202)
        item = outcome.model_dump(mode="json")
        return await produce_and_answer(ingestor, [(item, outcome)], request[CLIENT])

    return post_webhook


def classify_handler(classifier: Classifier) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def post_classify(request: web.Request) -> web.Response:
        document = await json_document(request)
        if isinstance(document, web.Response):
            return document
        try:
            ticket = validate_event(document, "$", 0)
        except BadRequest as exc:
            return web.json_response(exc.body(), status=400)
        return await classifier.answer(ticket)

    return post_classify


def build_ingest_app(
    config: IngestConfig,
    deliver: Deliver,
    metrics: Metrics,
    classifier: Classifier | None = None,
    explainer: Explainer | None = None,
    console: web.Application | None = None,
) -> web.Application:
    """The API's aiohttp app; ``deliver`` puts one record on the input topic and awaits its ack.
    Without a ``classifier`` or ``explainer`` (tests of ingestion alone) their routes are absent.
    ``console`` (the triage console's sub-app) is mounted at /console/ and signs its own users in:
    the gate lets through only requests the router matched to it; every other route keeps the gate."""
    gate = Gate(config)
    ingestor = Ingestor(
        deliver, RecentIds(config.dedup_window), config.produce_timeout_s, metrics.api_accepted_tickets.inc
    )

    @web.middleware
    async def guard(request: web.Request, handler: Callable[..., Awaitable[Any]]) -> web.StreamResponse:
        response: web.StreamResponse
        try:
            if console is not None and console in request.match_info.apps:
                response = await handler(request)  # the console's own middleware signs people in
            else:
                response = await gate.answer(request, handler)
        except web.HTTPRequestEntityTooLarge:
            response = too_large(config.max_body_bytes)
        except web.HTTPException as exc:  # 404, 405: still a JSON answer, and counted
            response = error(exc.status, exc.reason)
        metrics.child(metrics.api_requests, route_label(request), str(response.status)).inc()
        return response

    async def post_tickets(request: web.Request) -> web.Response:
        if request.content_type not in JSON_CONTENT_TYPES:
            return error(415, f"Content-Type must be application/json (got {request.content_type!r})")
        try:
            events = parse_body(await request.read(), config.max_batch)
        except BadRequest as exc:
            return web.json_response(exc.body(), status=400)
        return await produce_and_answer(ingestor, events, request[CLIENT])

    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[guard])
    operations: list[Operation] = []

    def serve(op: Operation, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        app.router.add_route(op.method.upper(), op.path, handler)
        operations.append(op)

    serve(Operation("post", TICKETS_ROUTE, "tickets"), post_tickets)
    zendesk = functools.partial(zendesk_event, tier_path=config.zendesk_tier_path)
    intercom = functools.partial(intercom_event, tier_path=config.intercom_tier_path)
    serve(Operation("post", ZENDESK_ROUTE, "zendesk"), webhook_handler(zendesk, ingestor))
    serve(Operation("post", INTERCOM_ROUTE, "intercom"), webhook_handler(intercom, ingestor))
    for name, mapping in config.webhook_mappings.items():  # names are checked: no clash with the two above
        path = MAPPED_ROUTE.format(name=name)
        serve(Operation("post", path, "mapped"), webhook_handler(adapter_for(mapping), ingestor))
    if classifier is not None:
        serve(Operation("post", CLASSIFY_ROUTE, "classify"), classify_handler(classifier))
    if explainer is not None:
        serve(Operation("get", EXPLAIN_ROUTE, "explain"), explainer.handle)
    openapi_op = Operation("get", OPENAPI_ROUTE, "openapi")
    document = openapi_document(
        [*operations, openapi_op], __version__, Limits(config.max_body_bytes, config.max_batch)
    )

    async def get_openapi(_request: web.Request) -> web.Response:
        return web.json_response(document)

    serve(openapi_op, get_openapi)
    zero_api_series(metrics, [op.path for op in operations])
    if console is not None:
        app.add_subapp(CONSOLE_PREFIX, console)
    return app


ZERO_STATUSES = ("200", "202", "400", "401", "413", "429", "503")
"""The answers the dashboard and alerts count per route, exported at zero from the start."""


def zero_api_series(metrics: Metrics, paths: Sequence[str]) -> None:
    for path in paths:
        for status in ZERO_STATUSES:
            metrics.api_requests.labels(path, status)
    for outcome in CLASSIFY_OUTCOMES:
        metrics.api_classifications.labels(outcome)
    for outcome in EXPLAIN_OUTCOMES:
        metrics.api_explanations.labels(outcome)


async def start_api(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve the API; returns the runner and the bound port (0 picks a free one). A bind failure
    is one line naming API_HOST or API_PORT."""
    return await start_http(app, host, port, "API_PORT", "API_HOST")


async def start_ingest(
    settings: Settings,
    port: int,
    producer: AIOKafkaProducer,
    metrics: Metrics,
    classifier: Classifier | None = None,
    explainer: Explainer | None = None,
    console: web.Application | None = None,
) -> tuple[web.AppRunner, int]:
    """The API of a running service on ``port``, producing with its acks=all producer."""
    app = build_ingest_app(
        IngestConfig.from_settings(settings),
        kafka_delivery(producer, settings.input_topic),
        metrics,
        classifier,
        explainer,
        console,
    )
    return await start_api(app, settings.api_host, port)
