"""One HTTP port for Prometheus and the kubelet: /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from consumer.classify.retry import CallFailure, is_spend_limit
from consumer.errors import UserError
from consumer.kafka.loop import LoopState
from consumer.metrics import Metrics

log = logging.getLogger("ticket_router")

PROBE_TIMEOUT_S = 2.0
PROBE_CACHE_S = 1.0
# The Claude check repeats the start-up count_tokens call (free, but rate-limited per key): often
# enough that /readyz recovers soon after an outage ends, rarely while all is well.
CLAUDE_RECHECK_FAILING_S = 10.0
CLAUDE_RECHECK_OK_S = 60.0
CLAUDE_CHECK_TIMEOUT_S = 6.0  # count_tokens itself gives up after 5 s; this only backs it up
# Liveness allows a start-up this long (joining can wait out other members' drains); longer is wedged.
START_UP_LIMIT_S = 300.0


# Claude API problems that are this pod's configuration (its key), not an outage; see readiness().
KEY_PROBLEMS = ("rejected the key", "refused the key")


def readiness(
    state: LoopState, broker_reachable: bool, claude_problem: str | None = None
) -> tuple[bool, str]:
    """Ready = consuming, group joined, broker answering, the Claude API key accepted (when a tier
    uses it), not draining. Pure, for tests.

    A refused key is this pod's configuration: a rollout must stop on it before good pods are
    replaced. An unreachable or failing API is everyone's outage: failing readiness for it would
    only stall deployments (including one that switches to ``TIERS=local``) while tickets are
    triaged and nothing is lost, so it is reported in the body and by the LLM error alert instead.
    """
    if not state.started:
        return False, "starting"
    if state.draining:
        return False, "draining"
    if not state.joined:
        return False, "not yet joined the consumer group"
    if not broker_reachable:
        return False, "broker not answering metadata requests"
    if claude_problem is not None and claude_problem.startswith(KEY_PROBLEMS):
        return False, f"Claude API {claude_problem}"
    return True, "ready"


def liveness(
    loop_started: bool, loop_finished: bool, starting_for_s: float, limit_s: float = START_UP_LIMIT_S
) -> tuple[bool, str]:
    """Alive = starting (within ``limit_s``) or consuming. Pure, for tests.

    A slow group join is normal start-up, not a reason to restart the pod (readiness waits for
    it); only a loop that stopped after starting, or a start-up that never ends, is dead.
    """
    if loop_finished:
        return False, "consumer loop stopped"
    if loop_started:
        return True, "ok"
    if starting_for_s > limit_s:
        return False, f"start-up not finished after {limit_s:.0f}s"
    return True, "starting"


def api_problem(failure: CallFailure) -> str | None:
    """What a failed check call says about the Claude API; None when it answered (a plain 429
    proves the key works and the API is there, only busy). Pure, for tests."""
    if failure.kind == "connection":
        return f"unreachable: {failure.message or 'connection error'}"
    if failure.kind == "timeout":
        return f"unreachable: {failure.message or 'request timed out'}"
    if failure.status == 401:
        return f"{KEY_PROBLEMS[0]}: {failure.describe()}"
    if failure.status == 403:
        return f"{KEY_PROBLEMS[1]}: {failure.describe()}"
    if failure.status == 429 and not is_spend_limit(failure):
        return None
    return f"failing: {failure.describe()}"


def api_summary(problems: Mapping[str, str | None]) -> str | None:
    """One line for all models: None when all answered, the shared problem when all fail alike,
    else each failing model with its own. Pure, for tests."""
    failing = {model: problem for model, problem in problems.items() if problem is not None}
    if not failing:
        return None
    if len(failing) == len(problems) and len(set(failing.values())) == 1:
        return next(iter(failing.values()))
    return "; ".join(f"{model} {problem}" for model, problem in failing.items())


Check = Callable[[], Awaitable[object]]
Describe = Callable[[BaseException], str | None]


class ClaudeApiProbe:
    """Whether the Messages API answers the Claude tiers' models, for the start-up log and /readyz.

    Its first check is the start-up ``count_tokens`` call of each model (``call`` records how it
    ended); /readyz then reads the cached answer and, once it is older than the re-check interval,
    starts one background re-check, so a probe never waits for the API and an outage's end shows
    within seconds. ``describe`` turns a failure into a one-line problem (None: it answered).
    """

    def __init__(
        self,
        checks: Mapping[str, Check],
        describe: Describe,
        *,
        timeout_s: float = CLAUDE_CHECK_TIMEOUT_S,
        recheck_failing_s: float = CLAUDE_RECHECK_FAILING_S,
        recheck_ok_s: float = CLAUDE_RECHECK_OK_S,
    ) -> None:
        self._checks = dict(checks)
        self._describe = describe
        self.timeout_s = timeout_s
        self.recheck_failing_s = recheck_failing_s
        self.recheck_ok_s = recheck_ok_s
        self._problems: dict[str, str | None] = {}
        self._checked_at = time.monotonic()
        self._recheck: asyncio.Task[str | None] | None = None

    @property
    def problem(self) -> str | None:
        """The last check's problem (None: every model answered), without checking again."""
        return api_summary({model: self._problems.get(model) for model in self._checks})

    async def call(self, model: str) -> object:
        """One check call for ``model``, its outcome recorded; re-raises, so the caller can report it.

        Bounded by the call itself (count_tokens gives up after 5 s); ``check`` adds a backstop.
        """
        try:
            result = await self._checks[model]()
        except Exception as exc:
            self._problems[model] = self._describe(exc)
            raise
        self._problems[model] = None
        return result

    async def _bounded_call(self, model: str) -> None:
        try:
            await asyncio.wait_for(self.call(model), self.timeout_s)
        except TimeoutError as exc:
            self._problems[model] = self._describe(exc)
        except Exception:
            return  # call() recorded it

    async def check(self) -> str | None:
        """Call every model once, concurrently; returns the new ``problem``."""
        before = self.problem
        await asyncio.gather(*(self._bounded_call(model) for model in self._checks))
        self._checked_at = time.monotonic()
        after = self.problem
        if after != before:
            if after is None:
                log.info("Claude API check passed again", extra={"claude_api": "ok"})
            else:
                log.error("Claude API check failed: %s", after, extra={"claude_api": after})
        return after

    def current(self) -> str | None:
        """The cached ``problem``; starts a background re-check when it is due (at most one at a time)."""
        interval = self.recheck_ok_s if self.problem is None else self.recheck_failing_s
        due = time.monotonic() - self._checked_at >= interval
        if due and (self._recheck is None or self._recheck.done()):
            self._recheck = asyncio.create_task(self.check(), name="claude-api-recheck")
        return self.problem

    async def close(self) -> None:
        if self._recheck is not None and not self._recheck.done():
            self._recheck.cancel()
            await asyncio.gather(self._recheck, return_exceptions=True)


class BrokerProbe:
    """Asks the broker for metadata, at most once a second, within a short timeout.

    An empty fetch proves nothing (the client returns empty batches while it reconnects), so
    readiness asks the broker an actual question; the cache keeps kubelet probes from adding load.
    """

    def __init__(self, ask: Callable[[], Awaitable[object]], timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.ask = ask
        self.timeout_s = timeout_s
        self._checked_at = -PROBE_CACHE_S
        self._reachable = False

    async def reachable(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at < PROBE_CACHE_S:
            return self._reachable
        try:
            await asyncio.wait_for(self.ask(), self.timeout_s)
            self._reachable = True
        except Exception:  # any failure to answer means not ready; the reason is in the client's logs
            self._reachable = False
        self._checked_at = time.monotonic()
        return self._reachable


def build_app(
    metrics: Metrics,
    state: LoopState,
    loop_task: Callable[[], asyncio.Task[None] | None],
    probe: BrokerProbe,
    claude: ClaudeApiProbe | None = None,
) -> web.Application:
    """``loop_task`` returns the consumer loop's task, None while the service is still starting."""
    opened_at = time.monotonic()

    async def metrics_handler(_request: web.Request) -> web.Response:
        body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        # Answering at all proves the event loop turns; the loop task must not have stopped.
        task = loop_task()
        alive, status = liveness(
            task is not None, task is not None and task.done(), time.monotonic() - opened_at
        )
        return web.json_response({"status": status}, status=200 if alive else 503)

    async def readyz(_request: web.Request) -> web.Response:
        claude_problem = claude.current() if claude is not None else None
        ready, reason = readiness(state, await probe.reachable(), claude_problem)
        metrics.ready.set(1 if ready else 0)
        body: dict[str, object] = {"ready": ready, "reason": reason}
        if claude is not None:
            body["claude_api"] = claude_problem or "ok"
        return web.json_response(body, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def bind_error(
    exc: OSError, host: str, port: int, host_setting: str = "METRICS_HOST", port_setting: str = "METRICS_PORT"
) -> str:
    """One line naming the setting to fix when an HTTP server cannot bind (the router's metrics
    port, the API's, the drafter's). Pure, for tests."""
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        reason = exc.strerror or str(exc)
        return (
            f"{host_setting}={host}: not an address of this machine ({reason}); expected an IP address "
            "or host name of it, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        )
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{port_setting}={port}: the port is already in use on {host}; expected a free port "
            f"({port_setting}=0 picks one)"
        )
    if exc.errno == errno.EACCES:
        return (
            f"{port_setting}={port}: not allowed to listen on it (ports below 1024 need privileges); "
            "expected 1024-65535, or 0 for any free port"
        )
    return f"{host_setting}={host}, {port_setting}={port}: cannot listen there ({exc.strerror or exc})"


async def start_http(
    app: web.Application,
    host: str,
    port: int,
    port_setting: str = "METRICS_PORT",
    host_setting: str = "METRICS_HOST",
) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner and the bound port (port 0 picks a free one).

    A bind failure is the operator's to fix, so it is a ``UserError`` naming the setting.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise UserError(bind_error(exc, host, port, host_setting, port_setting)) from None
    bound = port
    for address in runner.addresses:
        bound = int(address[1])
    return runner, bound
