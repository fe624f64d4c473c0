"""One HTTP port for Prometheus and the kubelet: /metrics, /healthz, /readyz."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from consumer.kafka_loop import LoopState
from consumer.metrics import Metrics

BROKER_SILENCE_S = 15.0


def readiness(state: LoopState, now: float, broker_silence_s: float = BROKER_SILENCE_S) -> tuple[bool, str]:
    """Ready = group joined, broker heard from recently, not draining. Pure, for tests."""
    if not state.started:
        return False, "starting"
    if state.draining:
        return False, "draining"
    if not state.joined:
        return False, "not yet joined the consumer group"
    if now - state.last_broker_contact > broker_silence_s:
        return False, f"no broker response for {now - state.last_broker_contact:.0f}s"
    return True, "ready"


def build_app(metrics: Metrics, state: LoopState, loop_alive: Callable[[], bool]) -> web.Application:
    async def metrics_handler(_request: web.Request) -> web.Response:
        body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        # Answering at all proves the event loop turns; the loop task must also still be running.
        if loop_alive():
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "consumer loop stopped"}, status=503)

    async def readyz(_request: web.Request) -> web.Response:
        ready, reason = readiness(state, time.monotonic())
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
