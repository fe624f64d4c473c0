"""The aiohttp edge of the fake Messages API: routes, connection-level faults and the control plane.

All decisions (what to answer, how to bill, which fault, whether the request meets today's contract)
are made by the pure modules; this file only moves bytes, sleeps without blocking the loop, and keeps
the little state a run needs (the cache, the recorded requests, the seeded dice), so one server can
sustain thousands of requests a second.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from producer_tools.fake_api.answers import build_answer, extract_ticket, free_text_answer, malform, user_text
from producer_tools.fake_api.caching import (
    CacheControlError,
    PromptCache,
    PromptLayout,
    layout_prompt,
    prompt_blocks,
)
from producer_tools.fake_api.contract import api_version
from producer_tools.fake_api.errors import ApiError, invalid
from producer_tools.fake_api.outcome import Generation, Reply, compose_reply, refuses
from producer_tools.fake_api.protocol import (
    MessagesRequest,
    check_auth,
    fault_error,
    message_body,
    new_request_id,
    overloaded,
    parse_json_body,
    parse_messages_request,
)
from producer_tools.fake_api.sampling import Dice, Plan
from producer_tools.fake_api.scenario import ModelScript, Scenario, parse_scenario
from producer_tools.fake_api.streaming import (
    EVENT_STREAM_CONTENT_TYPE,
    EVENT_STREAM_HEADERS,
    broken_off,
    error_event,
    message_events,
    sse_frame,
)

Clock = Callable[[], float]
WallClock = Callable[[], datetime]

MAX_BODY_BYTES = 32 * 1024 * 1024
# A dropped connection cancels its handler (handler_cancellation); this only bounds a handler that
# somehow outlives its connection.
_DROP_LINGER_S = 60.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def _json_response(
    body: Any, request_id: str | None = None, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    all_headers = dict(headers or {})
    if request_id is not None:
        all_headers["request-id"] = request_id
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=all_headers
    )


def _error_response(error: ApiError, request_id: str) -> web.Response:
    return _json_response(error.body(request_id), request_id, error.status, error.headers)


class FakeApiServer:
    """A scriptable stand-in for ``api.anthropic.com`` that the real SDK talks to over HTTP.

    ``clock`` drives cache TTLs (inject one to test expiry without sleeping); ``wall_clock`` dates the
    rate-limit reset headers and decides which models are retired today.
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        clock: Clock = time.monotonic,
        wall_clock: WallClock = utc_now,
        shutdown_timeout_s: float = 1.0,
    ) -> None:
        self._scenario = scenario if scenario is not None else Scenario()
        self._clock = clock
        self._wall_clock = wall_clock
        self._shutdown_timeout_s = shutdown_timeout_s
        self._cache = PromptCache()
        self._dice = Dice(self._scenario)
        self._records: deque[dict[str, Any]] = deque(maxlen=self._scenario.max_recorded_requests)
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Binds (port 0 picks a free one) and returns the base URL to give the SDK."""
        if self._runner is not None:
            raise RuntimeError("FakeApiServer is already running")
        runner = web.AppRunner(
            self.make_app(),
            handle_signals=False,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=self._shutdown_timeout_s,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=2048)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        bound_host, bound_port = runner.addresses[0][:2]
        self._runner = runner
        self._base_url = f"http://{_url_host(str(bound_host))}:{bound_port}"
        return self._base_url

    async def stop(self) -> None:
        """Stops listening; in-flight handlers get ``shutdown_timeout_s`` before they are cancelled."""
        runner, self._runner, self._base_url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeApiServer:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeApiServer is not running; call start() first")
        return self._base_url

    def make_app(self) -> web.Application:
        """A fresh aiohttp app bound to this server's state (also usable with aiohttp's test client)."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/v1/messages", self._handle_create)
        app.router.add_post("/v1/messages/count_tokens", self._handle_count_tokens)
        app.router.add_get("/_control/health", self._handle_health)
        app.router.add_get("/_control/scenario", self._handle_get_scenario)
        app.router.add_put("/_control/scenario", self._handle_put_scenario)
        app.router.add_get("/_control/requests", self._handle_requests)
        app.router.add_post("/_control/reset", self._handle_reset)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        return app

    # -- control (Python side; the HTTP control routes call these) --------------------------------

    @property
    def scenario(self) -> Scenario:
        return self._scenario

    def set_scenario(self, scenario: Scenario) -> None:
        """Replaces the script and rewinds its queues and random streams; the prompt cache survives."""
        self._scenario = scenario
        self._dice = Dice(scenario)
        self._records = deque(self._records, maxlen=scenario.max_recorded_requests)

    def requests(self) -> list[dict[str, Any]]:
        """Bodies of the ``/v1/messages`` calls received so far (valid or not), oldest first."""
        return list(self._records)

    def reset(self) -> None:
        """Forgets cached prefixes and recorded requests and rewinds the script, for test isolation."""
        self._cache.clear()
        self._records.clear()
        self._dice = Dice(self._scenario)

    @property
    def cache_entries(self) -> int:
        return len(self._cache)

    # -- Messages API ----------------------------------------------------------------------------

    async def _read_checked(self, request: web.Request, *, count_only: bool) -> MessagesRequest:
        """Auth, the version header, then the body; create bodies are recorded even when invalid."""
        check_auth(request.headers, self._scenario.api_key)
        version = api_version(request.headers)
        body = parse_json_body(await request.read())
        if not count_only:
            self._records.append(body)
        today = self._wall_clock().date()
        return parse_messages_request(
            body, self._scenario, count_only=count_only, today=today, version=version
        )

    def _layout(self, parsed: MessagesRequest) -> PromptLayout:
        blocks = prompt_blocks(parsed.system, parsed.messages, parsed.cache_control)
        try:
            return layout_prompt(parsed.model_name, blocks, parsed.uncached_texts, parsed.token_factor)
        except CacheControlError as exc:
            raise invalid(str(exc)) from exc

    async def _handle_create(self, request: web.Request) -> web.StreamResponse:
        request_id = new_request_id()
        try:
            parsed = await self._read_checked(request, count_only=False)
            layout = self._layout(parsed)
        except ApiError as exc:
            return _error_response(exc, request_id)
        plan = self._dice.plan(parsed.model_name, parsed.script)
        await _sleep(self._dice.latency_s(parsed.script))
        if plan.fault == "drop":
            return await _drop_connection(request)
        if plan.fault == "timeout":
            await asyncio.sleep(parsed.script.timeout_sleep_s)
        elif plan.fault is not None and not _breaks_mid_stream(plan, parsed.stream):
            return _error_response(fault_error(plan.fault, parsed.script, self._wall_clock()), request_id)
        reply = self._reply(parsed, plan)
        usage = self._cache.charge(layout, self._clock(), self._scenario.min_cacheable_tokens(parsed.model))
        message = message_body(parsed.model, reply, usage)
        if parsed.stream:
            broken = _breaks_mid_stream(plan, parsed.stream)
            return await _stream_message(request, request_id, message, parsed.script, broken=broken)
        return _json_response(message, request_id)

    def _reply(self, parsed: MessagesRequest, plan: Plan) -> Reply:
        output = parsed.output
        assert output is not None, "create requests always carry an output spec"
        ticket = extract_ticket(parsed.messages, self._scenario.ticket_pattern)
        answer: dict[str, Any] | str
        if output.mode == "text":
            # Prose has no schema to break, so a scripted malformation leaves a text answer alone.
            answer = free_text_answer(user_text(parsed.messages))
        else:
            good = build_answer(output.schema, parsed.script, ticket, parsed.model)
            answer = good if plan.malformed is None else malform(good, output.schema, plan.malformed, ticket)
        generation = Generation(
            max_tokens=parsed.max_tokens,
            factor=parsed.token_factor,
            thinking=parsed.thinking,
            tool_name=output.tool_name,
            tool_use_id="toolu_fake_" + uuid.uuid4().hex[:24],
        )
        refused = plan.refusal or refuses(parsed.script, ticket)
        return compose_reply(answer, ticket, generation, refused)

    async def _handle_count_tokens(self, request: web.Request) -> web.StreamResponse:
        """Free and fault-free, as the real endpoint is; the same contract checks as create."""
        request_id = new_request_id()
        try:
            layout = self._layout(await self._read_checked(request, count_only=True))
        except ApiError as exc:
            return _error_response(exc, request_id)
        return _json_response({"input_tokens": layout.total_tokens}, request_id)

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        error = ApiError("not_found_error", f"Not found: {request.method} {request.path}")
        return _error_response(error, new_request_id())

    # -- control plane over HTTP -----------------------------------------------------------------

    async def _handle_health(self, request: web.Request) -> web.StreamResponse:
        return _json_response({"status": "ok"})

    async def _handle_get_scenario(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self._scenario.model_dump(mode="json"))

    async def _handle_put_scenario(self, request: web.Request) -> web.StreamResponse:
        try:
            scenario = parse_scenario(parse_json_body(await request.read()))
        except ApiError as exc:
            return _error_response(exc, new_request_id())
        except ValidationError as exc:
            return _error_response(invalid(f"invalid scenario: {exc}"), new_request_id())
        self.set_scenario(scenario)
        return _json_response(scenario.model_dump(mode="json"))

    async def _handle_requests(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self.requests())

    async def _handle_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return _json_response({"reset": True})


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


def _breaks_mid_stream(plan: Plan, stream: bool) -> bool:
    """A ``529_mid_stream`` fault lets a stream begin; an unstreamed request just gets the 529."""
    return stream and plan.fault == "529_mid_stream"


async def _stream_message(
    request: web.Request,
    request_id: str,
    message: dict[str, Any],
    script: ModelScript,
    *,
    broken: bool,
) -> web.StreamResponse:
    """Writes ``message`` as server-sent events, pausing ``stream_delay_ms`` before each delta."""
    events = message_events(message)
    if broken:
        events = broken_off(events, error_event(overloaded().body(request_id)))
    response = web.StreamResponse(headers={"request-id": request_id, **EVENT_STREAM_HEADERS})
    response.content_type = EVENT_STREAM_CONTENT_TYPE
    response.charset = "utf-8"
    await response.prepare(request)
    for event in events:
        if event.is_delta:
            await _sleep(script.stream_delay_ms / 1000.0)
        await response.write(sse_frame(event))
    await response.write_eof()
    return response


async def _drop_connection(request: web.Request) -> web.StreamResponse:
    """Closes the socket with no response bytes, which the SDK reports as a connection error."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    await asyncio.sleep(_DROP_LINGER_S)
    return web.Response(status=500)
