"""The aiohttp edge of the fake Messages API: routes, connection-level faults and the control plane.

All decisions (what to answer, how to bill, which fault, whether the request meets today's contract)
are made by the pure modules; this file only moves bytes, sleeps without blocking the loop, and keeps
the little state a run needs (the cache, the recorded requests, the seeded dice), so one server can
sustain thousands of requests a second.
"""

from __future__ import annotations

import asyncio
import random
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
from producer_tools.fake_api.batches import (
    FakeBatch,
    batch_object,
    batch_only_problem,
    errored,
    new_batch_id,
    page_limit,
    page_of,
    parse_batch_requests,
    result_lines,
    scripted_failure,
    settle,
    too_large,
)
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
BATCH_YIELD_EVERY = 100  # requests processed between yields, so a big batch never stalls the server
_READ_CHUNK = 1 << 20
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
        self._batches: dict[str, FakeBatch] = {}
        self._batch_creations: list[dict[str, Any]] = []
        self._batch_tasks: set[asyncio.Task[None]] = set()

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
        app.router.add_post("/v1/messages/batches", self._handle_batch_create)
        app.router.add_get("/v1/messages/batches", self._handle_batch_list)
        app.router.add_get("/v1/messages/batches/{batch_id}", self._handle_batch_retrieve)
        app.router.add_delete("/v1/messages/batches/{batch_id}", self._handle_batch_delete)
        app.router.add_post("/v1/messages/batches/{batch_id}/cancel", self._handle_batch_cancel)
        app.router.add_get("/v1/messages/batches/{batch_id}/results", self._handle_batch_results)
        app.router.add_get("/_control/batches", self._handle_batch_creations)
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
        self._batch_creations.clear()

    def batch_creations(self) -> list[dict[str, Any]]:
        """Every batch created so far (``id``, ``request_count``, ``custom_ids``), oldest first: what a
        test of a resumed run checks to prove nothing was submitted twice."""
        return [dict(creation) for creation in self._batch_creations]

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

    # -- Message Batches -------------------------------------------------------------------------

    async def _handle_batch_create(self, request: web.Request) -> web.StreamResponse:
        request_id = new_request_id()
        script = self._scenario.batches
        try:
            check_auth(request.headers, self._scenario.api_key)
            version = api_version(request.headers)
            raw = await _read_limited(request, script.max_bytes)
            requests = parse_batch_requests(parse_json_body(raw), script)
        except ApiError as exc:
            return _error_response(exc, request_id)
        batch = FakeBatch(new_batch_id(), self._wall_clock(), self._clock(), requests)
        self._batches[batch.id] = batch
        self._batch_creations.append(
            {"id": batch.id, "request_count": len(requests), "custom_ids": [r.custom_id for r in requests]}
        )
        task = asyncio.create_task(self._process_batch(batch, version))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)
        return self._batch_response(request, batch, request_id)

    async def _process_batch(self, batch: FakeBatch, version: str) -> None:
        """Answers each request as ``/v1/messages`` would, yielding now and then; stops on a cancel."""
        rng = random.Random(f"{self._scenario.seed}:batch:{len(self._batch_creations)}")
        for done, item in enumerate(batch.requests):
            if batch.status != "in_progress":
                return
            batch.results[item.custom_id] = self._batch_result(item.params, version, rng)
            if done % BATCH_YIELD_EVERY == BATCH_YIELD_EVERY - 1:
                await asyncio.sleep(0)

    def _batch_result(self, params: Mapping[str, Any], version: str, rng: random.Random) -> dict[str, Any]:
        """One request's result: the error it would get alone, a scripted failure, or its message."""
        request_id = new_request_id()
        try:
            problem = batch_only_problem(params)
            if problem is not None:
                raise problem
            today = self._wall_clock().date()
            parsed = parse_messages_request(
                params, self._scenario, count_only=False, today=today, version=version
            )
            layout = self._layout(parsed)
        except ApiError as exc:
            return errored(exc, request_id)
        failure = scripted_failure(self._scenario.batches, rng)
        if failure is not None:
            return failure
        plan = self._dice.plan(parsed.model_name, parsed.script)
        if plan.fault in ("drop", "timeout"):
            return errored(ApiError("api_error", "Internal server error"), request_id)
        if plan.fault is not None:
            return errored(fault_error(plan.fault, parsed.script, self._wall_clock()), request_id)
        reply = self._reply(parsed, plan)
        usage = self._cache.charge(layout, self._clock(), self._scenario.min_cacheable_tokens(parsed.model))
        return {"type": "succeeded", "message": message_body(parsed.model, reply, usage)}

    def _found_batch(self, request: web.Request) -> FakeBatch:
        """The path's batch, settled to now; a 404 for an unknown (or deleted) id."""
        check_auth(request.headers, self._scenario.api_key)
        batch_id = request.match_info["batch_id"]
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError("not_found_error", f"message_batch_id: no batch {batch_id!r}")
        settle(batch, self._scenario.batches, self._clock(), self._wall_clock())
        return batch

    def _batch_response(self, request: web.Request, batch: FakeBatch, request_id: str) -> web.Response:
        return _json_response(self._batch_json(request, batch), request_id)

    def _batch_json(self, request: web.Request, batch: FakeBatch) -> dict[str, Any]:
        url = f"{request.url.origin()}/v1/messages/batches/{batch.id}/results"
        return batch_object(batch, url, self._scenario.batches.expires_after_s)

    async def _handle_batch_retrieve(self, request: web.Request) -> web.StreamResponse:
        request_id = new_request_id()
        try:
            batch = self._found_batch(request)
        except ApiError as exc:
            return _error_response(exc, request_id)
        return self._batch_response(request, batch, request_id)

    async def _handle_batch_cancel(self, request: web.Request) -> web.StreamResponse:
        """Cancelling an ended batch changes nothing; otherwise it is ``canceling`` until next looked at."""
        request_id = new_request_id()
        try:
            batch = self._found_batch(request)
        except ApiError as exc:
            return _error_response(exc, request_id)
        if batch.ended_at is None and batch.cancel_initiated_at is None:
            batch.cancel_initiated_at = self._wall_clock()
        return self._batch_response(request, batch, request_id)

    async def _handle_batch_delete(self, request: web.Request) -> web.StreamResponse:
        request_id = new_request_id()
        try:
            batch = self._found_batch(request)
            if batch.ended_at is None:
                raise invalid(f"Batch {batch.id} cannot be deleted while it is processing; cancel it first.")
        except ApiError as exc:
            return _error_response(exc, request_id)
        del self._batches[batch.id]
        return _json_response({"id": batch.id, "type": "message_batch_deleted"}, request_id)

    async def _handle_batch_results(self, request: web.Request) -> web.StreamResponse:
        """The results as JSONL, one line per request, not in request order."""
        request_id = new_request_id()
        try:
            batch = self._found_batch(request)
            if batch.ended_at is None:
                raise invalid(f"Batch {batch.id} has not finished processing; results are not available yet.")
        except ApiError as exc:
            return _error_response(exc, request_id)
        lines = result_lines(batch, random.Random(f"{self._scenario.seed}:results:{batch.id}"))
        body = b"".join(orjson.dumps(line) + b"\n" for line in lines)
        return web.Response(body=body, content_type="application/binary", headers={"request-id": request_id})

    async def _handle_batch_list(self, request: web.Request) -> web.StreamResponse:
        """Newest first, ``limit`` per page, paged with ``after_id``/``before_id`` like the real list."""
        request_id = new_request_id()
        query = request.query
        try:
            check_auth(request.headers, self._scenario.api_key)
            limit = page_limit(query.get("limit"))
        except ApiError as exc:
            return _error_response(exc, request_id)
        newest_first = list(reversed(self._batches))
        ids, has_more = page_of(newest_first, limit, query.get("after_id"), query.get("before_id"))
        data = []
        for batch_id in ids:
            batch = self._batches[batch_id]
            settle(batch, self._scenario.batches, self._clock(), self._wall_clock())
            data.append(self._batch_json(request, batch))
        body = {
            "data": data,
            "has_more": has_more,
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
        }
        return _json_response(body, request_id)

    async def _handle_batch_creations(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self.batch_creations())

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


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The whole body, refused with a 413 past ``limit``: a batch may be far larger than the 32 MB
    ``/v1/messages`` takes, so it is read from the stream rather than through ``client_max_size``."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(declared, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


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
