"""The shipped dashboard and alert rules, evaluated by a real Prometheus (Debian's ``prometheus``)
scraping a running router and a running drafter over HTTP.

The scrape targets carry the labels the Prometheus Operator adds in a cluster (``namespace``,
``pod``, ``container``), so the queries run exactly as shipped, with Grafana's variables set as a
user would set them. Every panel query must return data, and every alert expression must be
accepted and select series that exist: a renamed metric, a misspelt label or a query Prometheus
rejects fails here, not on an operator's screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from producer_tools.fake_api.scenario import Scenario
from producer_tools.fake_api.threaded import run_in_thread
from tests.kafka_helpers import OutcomeCounter, create_topics, produce, router_settings, running_router
from tests.test_deploy import alert_rules, dashboard, dashboard_exprs, template_queries
from tests.test_draft_service import running_drafter
from tests.test_end_to_end import ticket_event

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus")
NAMESPACE = "ticket-router"
TICKETS = 24
GRAFANA_VARIABLES = {"$namespace": NAMESPACE, "$pod": ".*", "$__rate_interval": "15s"}
SELECTOR = re.compile(r"ticket_router_[a-z_]+(?:\{[^}]*\})?")
READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape_config(targets: dict[str, tuple[int, dict[str, str]]]) -> dict[str, Any]:
    """One job per target, labelled as the Prometheus Operator labels a pod's endpoint."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [
                    {"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": NAMESPACE, **labels}}
                ],
            }
            for job, (port, labels) in targets.items()
        ],
    }


@contextlib.contextmanager
def running_prometheus(directory: Path, targets: dict[str, tuple[int, dict[str, str]]]) -> Iterator[str]:
    """Prometheus on loopback scraping ``targets`` every second; stopped (by its PID) on exit."""
    assert PROMETHEUS is not None, "prometheus (Debian package prometheus) is installed by `make test`"
    config = directory / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(targets)), "utf-8")
    port = free_port()
    log = directory / "prometheus.log"
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process, log)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_until_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until /-/ready answers 200 (TSDB opened, config loaded); its log if it exits instead."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        assert process.poll() is None, f"prometheus exited: {log.read_text('utf-8', 'replace')[-2000:]}"
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, "prometheus never became ready"
        time.sleep(0.2)


async def query(http: aiohttp.ClientSession, base: str, expr: str) -> list[Any]:
    """The instant query's result; a query Prometheus rejects fails with its error."""
    async with http.get(f"{base}/api/v1/query", params={"query": expr}) as response:
        body = orjson.loads(await response.read())
    assert body.get("status") == "success", f"{expr}\n→ {body.get('errorType')}: {body.get('error')}"
    result: list[Any] = body["data"]["result"]
    return result


async def until(check: Any, what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll ``check()`` (an awaitable predicate over Prometheus' own answers) until true."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"Prometheus never showed {what}"
        await asyncio.sleep(0.5)


LABEL_VALUES = re.compile(r"^label_values\((.*),\s*(\w+)\)$", re.DOTALL)


def as_shipped(expr: str) -> str:
    """A dashboard query with Grafana's variables set (this namespace, every pod), and a template
    variable's ``label_values(selector, label)`` as the PromQL Grafana runs for it."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    found = LABEL_VALUES.match(expr.strip())
    return f"count by ({found.group(2)}) ({found.group(1)})" if found else expr


@contextlib.asynccontextmanager
async def router_and_drafter(bootstrap: str) -> AsyncIterator[tuple[int, int, OutcomeCounter]]:
    """A router (local tier, API on) and a drafter (Claude through the fake), on one broker; yields
    their metrics ports once the router has routed every ticket."""
    counter = OutcomeCounter()
    with run_in_thread(Scenario()) as api:
        settings = router_settings(
            bootstrap,
            low_confidence_action="route_flagged",
            api_port=0,
            api_tokens="ops:ops-token-0123456789abcdef",
            anthropic_api_key="sk-ant-fake-prometheus",
            anthropic_base_url=api.base_url,
            tiers="local,fast",  # two tiers: the escalation series exist
            drafts_topic=f"drafts-{time.monotonic_ns()}",
            draft_metrics_port=0,
        )
        create_topics(bootstrap, [settings.input_topic])
        async with (
            running_router(settings, extra_hooks=[counter.hook]) as router,
            running_drafter(settings, OutcomeCounter()) as drafter,
        ):
            events = [
                ticket_event(n, f"Invoice {n} was charged twice; please refund one.") for n in range(TICKETS)
            ]
            produce(
                bootstrap,
                settings.input_topic,
                [(str(e["ticket_id"]).encode(), orjson.dumps(e)) for e in events],
            )
            produce(bootstrap, settings.input_topic, [(b"T-bad", b"{not json")])
            await counter.wait_for(TICKETS + 1)
            yield router.http_port, drafter.http_port, counter


async def test_every_panel_and_alert_query_runs_on_a_real_prometheus(bootstrap: str, tmp_path: Path) -> None:
    async with router_and_drafter(bootstrap) as (router_port, drafter_port, _counter):
        targets = {
            "ticket-router": (router_port, {"pod": "ticket-router-0", "container": "ticket-router"}),
            "drafter": (drafter_port, {"pod": "ticket-router-drafter-0", "container": "drafter"}),
        }
        with running_prometheus(tmp_path, targets) as base:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

                async def enough_scrapes() -> bool:
                    counts = await query(http, base, "count_over_time(up[1m]) >= 6 and up == 1")
                    return len(counts) == len(targets)

                await until(enough_scrapes, "six good scrapes of each target")
                panels = [as_shipped(expr) for expr in [*dashboard_exprs(dashboard()), *template_queries()]]
                empty = [expr for expr in panels if not await query(http, base, expr)]
                alerts = {rule["alert"]: rule["expr"] for rule in alert_rules()}
                unselected = {
                    f"{name}: {selector}"
                    for name, expr in alerts.items()
                    if await query(http, base, expr) is not None  # accepted by Prometheus
                    for selector in SELECTOR.findall(expr)
                    if not await query(http, base, f"count({selector})")
                }

    assert len(panels) > 40 and len(alerts) >= 8
    assert not empty, "panel queries without data:\n" + "\n".join(empty)
    assert not unselected, "alert selectors matching no series:\n" + "\n".join(sorted(unselected))
