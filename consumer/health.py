"""One HTTP port for Prometheus and the kubelet: /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from consumer.kafka_loop import LoopState
from consumer.metrics import Metrics

PROBE_TIMEOUT_S = 2.0
PROBE_CACHE_S = 1.0


def readiness(state: LoopState, broker_reachable: bool) -> tuple[bool, str]:
    """Ready = consuming, group joined, broker answering, not draining. Pure, for tests."""
    if not state.started:
        return False, "starting"
    if state.draining:
        return False, "draining"
    if not state.joined:
        return False, "not yet joined the consumer group"
    if not broker_reachable:
        return False, "broker not answering metadata requests"
    return True, "ready"


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
    metrics: Metrics, state: LoopState, loop_alive: Callable[[], bool], probe: BrokerProbe
) -> web.Application:
    async def metrics_handler(_request: web.Request) -> web.Response:
        body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        # Answering at all proves the event loop turns; the loop task must also still be running.
        if loop_alive():
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "consumer loop stopped"}, status=503)

    async def readyz(_request: web.Request) -> web.Response:
        ready, reason = readiness(state, await probe.reachable())
        metrics.ready.set(1 if ready else 0)
        return web.json_response({"ready": ready, "reason": reason}, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner and the bound port (port 0 picks a free one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:
        bound = int(address[1])
    return runner, bound
