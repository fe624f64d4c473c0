"""A live scrape of the running router exposes every metric the dashboard and the alerts use.

tests/test_deploy.py checks the names against the registry offline; this runs the service on the
real (embedded) broker with the local tier, feeds it valid and malformed tickets, and reads
/metrics, /healthz and /readyz over HTTP the way Prometheus and the kubelet do.

Labelled series the code can know at start-up (queues and rules from the taxonomy, error kinds,
tiers, models, token kinds, retry reasons, corrections) are exported at zero from the first scrape
(``consumer.metrics.zero_series``), so even the Claude-only families have samples in a local-tier run.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest

from schemas.codec import encode
from schemas.corrections import Correction, CorrectionSource
from tests.kafka_helpers import OutcomeCounter, create_topics, produce, router_settings, running_router
from tests.test_deploy import used_metric_names
from tests.test_end_to_end import ticket_event

pytestmark = pytest.mark.integration

VALID = 30
MAX_EVENT_BYTES = 4_096
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# With one tier (local) nothing escalates, so the escalation family has no label pair to exist under.
NO_SAMPLES_WITH_ONE_TIER = ("ticket_router_escalations",)


def malformed_records() -> list[tuple[bytes, bytes]]:
    too_large = ticket_event(99_001, "x" * (MAX_EVENT_BYTES + 100))
    wrong_channel = ticket_event(99_002, "schema problem")
    wrong_channel["channel"] = "carrier-pigeon"
    return [
        (b"BAD-JSON-1", b'{"ticket_id": "x", "body": ' + bytes([0xFF, 0x01])),
        (b"BAD-JSON-2", b"not json at all"),
        (b"BAD-SCHEMA-1", orjson.dumps(wrong_channel)),
        (b"TOO-LARGE-1", orjson.dumps(too_large)),
    ]


class Scrape:
    """The text exposition format, reduced to what this test asks of it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.types: dict[str, str] = {}
        self.samples: set[str] = set()
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                self.types[name] = kind
            elif line and not line.startswith("#"):
                self.samples.add(line.split("{", 1)[0].split(" ", 1)[0])

    def declares(self, name: str) -> bool:
        """A ``# TYPE`` line for the series' family (counters are declared with ``_total``)."""
        if name in self.types:
            return True
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and self.types.get(name.removesuffix(suffix)) == "histogram":
                return True
        return False

    def has_samples(self, name: str) -> bool:
        return name in self.samples


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def wait_until_ready(session: aiohttp.ClientSession, base: str, timeout_s: float = 30.0) -> None:
    """Poll /readyz like the kubelet does (each call also refreshes ticket_router_ready)."""
    deadline = time.monotonic() + timeout_s
    status, body = await get(session, f"{base}/readyz")
    while status != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        status, body = await get(session, f"{base}/readyz")
    assert status == 200, body


async def scrape_until(
    session: aiohttp.ClientSession, base: str, sampled: set[str], timeout_s: float = 30.0
) -> Scrape:
    """Scrape until every name in ``sampled`` has samples (lag refresh and commits run on timers)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, text = await get(session, f"{base}/metrics")
        assert status == 200
        scrape = Scrape(text)
        missing = {name for name in sampled if not scrape.has_samples(name)}
        if not missing or time.monotonic() > deadline:
            return scrape
        await asyncio.sleep(0.3)


async def correct_one(bootstrap: str, topic: str, counter: OutcomeCounter, learner: Any) -> None:
    """A person moves one routed ticket to another team: the correction metrics and a refit follow."""
    routed = next(o.routed for o in counter.outcomes if o.routed is not None)
    team = routed.classification.axes["team"].label
    fix = Correction(
        ticket_id=routed.ticket.ticket_id,
        event_id=routed.ticket.event_id,
        labels={"team": "security" if team != "security" else "billing"},
        source=CorrectionSource.AGENT,
        actor="agent-1",
        corrected_at=datetime.now(UTC),
    )
    produce(bootstrap, topic, [(fix.ticket_id.encode(), encode(fix))])
    await asyncio.wait_for(learner.wait_until(lambda: learner.retrains >= 1), timeout=120)


API_TOKEN = "ops-token-0123456789abcdef"


async def ask_the_api(session: aiohttp.ClientSession, api: str, ticket: dict[str, Any]) -> None:
    """One dry-run classification and one explanation of an unknown event: the API's counters get
    samples without a ticket being produced."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with session.post(f"{api}/v1/classify", json=ticket, headers=headers) as response:
        assert response.status == 200, await response.text()
    async with session.get(
        f"{api}/v1/explain", params={"event_id": "E-unknown"}, headers=headers
    ) as response:
        assert response.status == 404


async def test_scrape_exposes_every_metric_the_dashboard_and_alerts_use(
    bootstrap: str, training_texts: list[str]
) -> None:
    settings = router_settings(
        bootstrap,
        low_confidence_action="route_flagged",
        max_event_bytes=MAX_EVENT_BYTES,
        retrain_after=1,
        api_port=0,
        api_tokens=f"ops:{API_TOKEN}",
    )
    create_topics(bootstrap, [settings.input_topic], partitions=settings.topic_partitions)
    valid = [ticket_event(i, training_texts[i % len(training_texts)]) for i in range(VALID)]
    records = [(str(e["ticket_id"]).encode(), orjson.dumps(e)) for e in valid] + malformed_records()
    produce(bootstrap, settings.input_topic, records)

    used_by_source = used_metric_names()
    used = set().union(*used_by_source.values())
    sampled = {name for name in used if not name.startswith(NO_SAMPLES_WITH_ONE_TIER)}

    counter = OutcomeCounter()
    async with running_router(settings, extra_hooks=[counter.hook]) as running:
        await counter.wait_for(len(records))
        await correct_one(bootstrap, settings.corrections_topic, counter, running.learner)
        base = f"http://127.0.0.1:{running.http_port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            status, body = await get(session, f"{base}/healthz")
            assert status == 200, body
            await wait_until_ready(session, base)
            await ask_the_api(session, f"http://127.0.0.1:{running.api_port}", valid[0])
            scrape = await scrape_until(session, base, sampled)

    assert sum(o.kind == "routed" for o in counter.outcomes) == VALID
    assert sum(o.kind == "triaged" for o in counter.outcomes) == len(malformed_records())

    for source, names in used_by_source.items():
        undeclared = sorted(name for name in names if not (scrape.declares(name) or scrape.has_samples(name)))
        assert not undeclared, f"{source} uses metrics missing from the scrape: {undeclared}"
    without_samples = sorted(name for name in sampled if not scrape.has_samples(name))
    assert not without_samples, f"no samples after a local-tier run: {without_samples}"
    for name in sorted(used - sampled):
        assert scrape.declares(name), name
    assert "ticket_router_ready 1.0" in scrape.text
    assert 'ticket_router_tickets_triaged_total{error_kind="malformed_json"} 2.0' in scrape.text


async def test_the_first_scrape_already_has_the_series_panels_and_alerts_count(bootstrap: str) -> None:
    """Before any ticket: every counter and histogram the dashboard or the alerts use has samples
    (at zero), so panels show 0 rather than "No data" and an increase() sees the first event."""
    settings = router_settings(bootstrap, api_port=0, api_tokens=f"ops:{API_TOKEN}")
    used = set().union(*used_metric_names().values())
    async with running_router(settings) as running:
        scrape = Scrape(running.metrics.exposition().decode())
    counted = {name for name in used if scrape.types.get(family_of(name)) in ("counter", "histogram")}
    assert len(counted) > 20, sorted(counted)  # the check below is not vacuous
    missing = sorted(
        name
        for name in counted
        if not (name.startswith(NO_SAMPLES_WITH_ONE_TIER) or scrape.has_samples(name))
    )
    assert not missing, f"counted families without a zero series before the first event: {missing}"
    assert 'ticket_router_tickets_routed_total{queue="billing-normal",rule="default"} 0.0' in scrape.text
    assert 'ticket_router_tickets_triaged_total{error_kind="llm_unavailable"} 0.0' in scrape.text
    assert 'ticket_router_llm_cost_usd_total{model="claude-haiku-5-5"} 0.0' in scrape.text


def family_of(name: str) -> str:
    """The ``# TYPE`` name of a sample name (a counter is declared with ``_total``, a histogram
    without its ``_bucket``/``_sum``/``_count``)."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name
