"""Fault injection on the real broker (issue 5, item 6): the service is SIGKILLed under load, its model
API fails a third of the time, its input is hostile, and its broker goes away. In every case each
input ticket_id must reach a queue topic or the triage topic at least once; duplicates are allowed
(at-least-once) and printed. Case b (one of two members SIGKILLed) and case f (SIGTERM under load,
then restart) live in tests/test_delivery.py. Every case is bounded in count and time.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import orjson
import pytest

from consumer.classify.prompt import FENCE_CLOSE, FENCE_OPEN
from consumer.config import Settings
from consumer.kafka.embedded_broker import EmbeddedBroker
from consumer.routing import route
from consumer.taxonomy import load_taxonomy
from producer_tools.fake_api import (
    FakeApiServer,
    FixedLabel,
    KeywordLabels,
    KeywordRule,
    ModelScript,
    Scenario,
    run_in_thread,
)
from schemas.events import ErrorKind
from tests.fault_helpers import (
    INJECTION_MARKER,
    MotoServer,
    PacedProducer,
    RawRecord,
    ServiceProcess,
    hostile_inputs,
    metric_sum,
    output_topics,
    produce_raw,
    read_published,
    service_env,
    wait_until,
)
from tests.kafka_helpers import (
    OutcomeCounter,
    consume_until,
    create_topics,
    produce,
    router_settings,
    running_router,
)
from tests.test_end_to_end import ticket_event

pytestmark = [pytest.mark.integration, pytest.mark.faults]

CONSUMED = "ticket_router_events_consumed_total"

# The models the fast and strong tiers call by default; the fake API scripts exactly those.
FAST_MODEL = str(Settings.model_fields["fast_model"].default)
STRONG_MODEL = str(Settings.model_fields["strong_model"].default)


def both_models(script: ModelScript) -> dict[str, ModelScript]:
    return {FAST_MODEL: script, STRONG_MODEL: script}


def consumed_at_least(service: ServiceProcess, count: int) -> bool:
    return (service.metric(CONSUMED) or 0) >= count


def ticket_records(texts: list[str], count: int, first: int = 0) -> list[RawRecord]:
    events = [ticket_event(i, texts[i % len(texts)]) for i in range(first, first + count)]
    return [RawRecord(str(e["ticket_id"]).encode(), orjson.dumps(e)) for e in events]


# -- a. five SIGKILLs at random moments under load -------------------------------------------------

KILL_SEED = 20261121


@pytest.mark.timeout(150)
def test_a_sigkill_five_times_under_load(bootstrap: str, training_texts: list[str], tmp_path: Path) -> None:
    case_started = time.monotonic()
    rng = random.Random(KILL_SEED)
    settings = router_settings(bootstrap, low_confidence_action="route_flagged")
    create_topics(bootstrap, [settings.input_topic])
    records = ticket_records(training_texts, 2_000)
    keys = {r.key for r in records}
    service = ServiceProcess(service_env(settings), tmp_path / "service.log")
    # ~70 tickets/s for ~29 s, started before the service: every (re)start finds a backlog of the
    # tickets fed while it was down (~5 s of restart = ~350 tickets). Each kill comes at a random
    # point of that catch-up: once the new process has consumed a seeded-random number of records.
    feeder = PacedProducer(bootstrap, settings.input_topic, records, rate_per_s=70)
    kills: list[str] = []
    try:
        feeder.start()
        service.start()
        service.wait_ready()
        for n in range(5):
            target = rng.randint(20, 250)
            # Polled: the other process's progress is only visible on its /metrics.
            reached = wait_until(partial(consumed_at_least, service, target), 30, interval_s=0.01)
            in_flight = service.metric("ticket_router_in_flight") or 0.0
            consumed = service.metric(CONSUMED) or 0.0
            service.kill()
            assert reached, f"kill {n + 1}: fewer than {target} records consumed in 30s"
            kills.append(
                f"kill {n + 1} at {consumed:.0f} consumed by this process (target {target}): "
                f"{feeder.sent} fed so far, {in_flight:.0f} in flight"
            )
            service.start()
            service.wait_ready()
        feeder.join(timeout=60)
        assert not feeder.is_alive() and not feeder.errors, f"feeder: {feeder.errors[:3]}"
        received = consume_until(bootstrap, output_topics(settings), len(keys), timeout_s=60, keys=keys)
        assert service.alive(), f"service died after the last restart: {service.log_tail()}"
        assert service.terminate() == 0
    finally:
        feeder.stop()
        service.kill()
    missing = keys - {r.key for r in received}
    assert not missing, (
        f"{len(missing)} tickets never arrived, e.g. {sorted(missing)[:5]}: {service.log_tail()}"
    )
    published = read_published(bootstrap, settings)
    assert set(published.topics) >= keys
    duplicates = published.duplicates(keys)
    # Proof that the kills landed mid-flow: outcomes published but not yet committed were redelivered
    # to the next process (whose duplicate window starts empty) and published again.
    assert duplicates > 0, f"no kill caught uncommitted work: {kills}"
    print(
        f"\n[a] 5 SIGKILLs (seed {KILL_SEED}), 2000 tickets: all arrived, {duplicates} duplicates, "
        f"{sum(len(v) for v in published.triaged.values())} triaged, {time.monotonic() - case_started:.1f}s"
    )
    for line in kills:
        print(f"[a]   {line}")


# -- c. a flaky model API: 529s, timeouts and malformed answers --------------------------------------


def flaky_script() -> ModelScript:
    return ModelScript(
        confidence=0.95,
        fault_rates={"529": 0.30, "timeout": 0.10},
        malformed_rates={
            "not_json": 0.01,
            "missing_field": 0.01,
            "label_outside_enum": 0.01,
            "confidence_out_of_range": 0.01,
            "wrong_type": 0.01,
        },
        timeout_sleep_s=2.0,  # well above LLM_TIMEOUT_S, so every injected timeout is a client timeout
        retry_after_s=0,
    )


@pytest.mark.timeout(90)
async def test_c_flaky_model_api_loses_nothing(bootstrap: str, training_texts: list[str]) -> None:
    case_started = time.monotonic()
    total = 300
    records = ticket_records(training_texts, total)
    keys = {r.key for r in records}
    server = FakeApiServer(Scenario(seed=5, models=both_models(flaky_script())))
    await server.start("127.0.0.1", 0)
    try:
        settings = router_settings(
            bootstrap,
            tiers="fast,strong",
            anthropic_api_key="sk-ant-fake-faults",
            anthropic_base_url=server.base_url,
            llm_timeout_s=0.5,
            llm_max_attempts=3,
            llm_backoff_initial_s=0.02,
            llm_backoff_max_s=0.1,
            ticket_deadline_s=4.0,
            drain_timeout_s=10.0,
        )
        create_topics(bootstrap, [settings.input_topic])
        counter = OutcomeCounter()
        async with running_router(settings, extra_hooks=[counter.hook]) as running:
            produce(bootstrap, settings.input_topic, [(r.key, r.value or b"") for r in records])
            await counter.wait_for(total, timeout_s=50)
            scrape = running.metrics.exposition().decode()
        api_calls = len(server.requests())
    finally:
        await server.stop()
    received = consume_until(bootstrap, output_topics(settings), total, timeout_s=30, keys=keys)
    missing = keys - {r.key for r in received}
    assert not missing, f"{len(missing)} tickets lost, e.g. {sorted(missing)[:5]}"
    kinds = Counter(str(o.error_kind) if o.kind == "triaged" else o.kind for o in counter.outcomes)
    assert set(kinds) <= {"routed", ErrorKind.LLM_UNAVAILABLE.value, ErrorKind.LLM_INVALID_OUTPUT.value}, (
        kinds
    )
    triage = [orjson.loads(r.value) for r in received if r.topic == settings.triage_topic]
    assert all(t["error_kind"] in ("llm_unavailable", "llm_invalid_output") and t["message"] for t in triage)
    statuses = {
        status: metric_sum(scrape, "ticket_router_llm_requests_total", status=status)
        for status in ("ok", "529", "timeout", "invalid_output")
    }
    assert statuses["529"] > 0 and statuses["timeout"] > 0 and statuses["invalid_output"] > 0, statuses
    seen = {  # statuses that happened (every known status is exported at zero from the start)
        status
        for status, value in re.findall(
            r'ticket_router_llm_requests_total\{[^}]*status="([^"]+)"[^}]*\} (\S+)', scrape
        )
        if float(value) > 0
    }
    assert seen <= set(statuses), f"unexpected API call results {seen - set(statuses)}"
    strong_ok = metric_sum(scrape, "ticket_router_llm_requests_total", model=STRONG_MODEL, status="ok")
    assert strong_ok > 0, "no ticket fell through to a working strong tier"
    assert metric_sum(scrape, "ticket_router_llm_retries_total") > 0
    duplicates = read_published(bootstrap, settings).duplicates(keys)
    elapsed = time.monotonic() - case_started
    assert elapsed < 60, f"case c took {elapsed:.1f}s"
    print(
        f"\n[c] flaky API, {total} tickets: {dict(kinds)}; {api_calls} API calls {statuses} "
        f"({strong_ok:.0f} answered by the strong tier); "
        f"{duplicates} duplicates; {elapsed:.1f}s"
    )


# -- d. hostile inputs -------------------------------------------------------------------------------


def injection_script() -> ModelScript:
    """Labels from the ticket's own words only; no keyword occurs in any injected text."""
    return ModelScript(
        confidence=0.95,
        labels={
            "team": KeywordLabels(
                rules=[
                    KeywordRule(contains="invoice", label="billing"),
                    KeywordRule(contains="export", label="product"),
                    KeywordRule(contains="dark mode", label="product"),
                ],
                default="general",
            ),
            "ticket_type": KeywordLabels(
                rules=[
                    KeywordRule(contains="invoice", label="account_question"),
                    KeywordRule(contains="export", label="bug_report"),
                    KeywordRule(contains="dark mode", label="feature_request"),
                ],
                default="general_inquiry",
            ),
            "urgency": KeywordLabels(rules=[KeywordRule(contains="export", label="normal")], default="low"),
            "sentiment": FixedLabel(label="neutral"),
        },
    )


FENCE_OPEN_LIKE = re.compile(r"[<＜﹤]\s*ticket\b", re.IGNORECASE)
FENCE_CLOSE_LIKE = re.compile(r"[<＜﹤]\s*/\s*ticket\b", re.IGNORECASE)
TICKET_ID_LINE = re.compile(r"^ticket_id: (\S+)$", re.MULTILINE)


def check_fenced(message: str) -> None:
    """The injected text sits inside the one fence, and nothing in it opens or closes another."""
    assert len(FENCE_OPEN_LIKE.findall(message)) == 1 and message.count(FENCE_OPEN) == 1, message
    assert len(FENCE_CLOSE_LIKE.findall(message)) == 1 and message.count(FENCE_CLOSE) == 1, message
    start, end = message.index(FENCE_OPEN), message.index(FENCE_CLOSE)
    positions = [m.start() for m in re.finditer(re.escape(INJECTION_MARKER), message)]
    assert positions, "the injected text is missing from the request"
    assert all(start < p < end for p in positions), "injected text outside the fence"


@pytest.mark.timeout(120)
def test_d_hostile_inputs(bootstrap: str, tmp_path: Path) -> None:
    case_started = time.monotonic()
    inputs = hostile_inputs()
    assert len(inputs) == 1_000
    keys = {h.record.key for h in inputs}
    expected = {h.record.key: h for h in inputs}
    settings = router_settings(bootstrap)
    create_topics(bootstrap, [settings.input_topic])
    scenario = Scenario(
        seed=3,
        models=both_models(injection_script()),
        ticket_pattern=rf"{FENCE_OPEN}\n(.*)\n{FENCE_CLOSE}",
    )
    with run_in_thread(scenario) as api:
        env = service_env(
            settings,
            TIERS="fast,strong",
            ANTHROPIC_API_KEY="sk-ant-fake-faults",
            ANTHROPIC_BASE_URL=api.base_url,
            LOW_CONFIDENCE_ACTION="triage",
        )
        service = ServiceProcess(env, tmp_path / "service.log")
        try:
            service.start()
            service.wait_ready()
            before = service.memory_kb()
            produce_raw(bootstrap, settings.input_topic, (h.record for h in inputs))
            received = consume_until(bootstrap, output_topics(settings), len(keys), timeout_s=60, keys=keys)
            after = service.memory_kb()
            assert service.alive(), f"service died: {service.log_tail()}"
            assert service.healthz() == 200 and service.readyz() == 200
            assert service.terminate() == 0
        finally:
            service.kill()
        requests = api.requests()
    missing = keys - {r.key for r in received}
    assert not missing, (
        f"{len(missing)} hostile inputs lost, e.g. {sorted(missing)[:5]}: {service.log_tail()}"
    )
    published = read_published(bootstrap, settings)

    taxonomy = load_taxonomy()
    wrong: list[str] = []
    for key, case in expected.items():
        triaged, routed = published.triaged.get(key, []), published.routed.get(key, [])
        if case.expected == "routed":
            if triaged or not routed:
                wrong.append(f"{key!r} {case.category}: triaged {[t.error_kind for t in triaged]}")
            for ticket in routed:
                labels = {axis: p.label for axis, p in ticket.classification.axes.items()}
                if ticket.queue != route(taxonomy.routing, labels).queue:
                    wrong.append(f"{key!r}: queue {ticket.queue} is not what the rules give for {labels}")
                is_critical_security = labels["urgency"] == "critical" and labels["team"] == "security"
                if ticket.queue == "urgent-security" and not is_critical_security:
                    wrong.append(f"{key!r}: urgent-security without critical+security labels")
                if case.expected_queue is not None and ticket.queue != case.expected_queue:
                    wrong.append(f"{key!r}: injection moved it to {ticket.queue}, not {case.expected_queue}")
        else:
            kinds = {str(t.error_kind) for t in triaged}
            if routed or kinds != {case.expected} or not all(t.message for t in triaged):
                wrong.append(f"{key!r} {case.category}: routed {len(routed)}, triaged as {kinds}")
    assert not wrong, f"{len(wrong)} wrong outcomes: {wrong[:10]}"

    injected = {h.record.key.decode() for h in inputs if h.category == "injection"}
    fenced = 0
    for body in requests:
        message = body["messages"][0]["content"]
        ticket_id = TICKET_ID_LINE.search(message)
        if ticket_id is None or ticket_id.group(1) not in injected:
            continue
        check_fenced(message)
        system = orjson.dumps(body.get("system")).decode().lower()
        assert "ignore previous instructions" not in system
        fenced += 1
    assert fenced >= len(injected), f"only {fenced} requests for {len(injected)} injection tickets"

    rss_mb = {name: kb / 1024 for name, kb in after.items()}
    assert rss_mb["VmRSS"] < 500 and rss_mb["VmHWM"] < 500, rss_mb
    categories = Counter(h.category for h in inputs)
    print(
        f"\n[d] 1000 hostile inputs {dict(categories)}: all ended as expected, "
        f"{published.duplicates(keys)} duplicates; RSS {before['VmRSS'] / 1024:.0f} MB before, "
        f"{rss_mb['VmRSS']:.0f} MB after, peak {rss_mb['VmHWM']:.0f} MB; "
        f"{fenced} injection requests fenced; {time.monotonic() - case_started:.1f}s"
    )


# -- e. the broker away for 10 s, back on the same port with durable storage -------------------------

BROKER_DOWN_S = 10.0


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.mark.timeout(150)
def test_e_broker_restart_on_the_same_port(
    moto: MotoServer, training_texts: list[str], tmp_path: Path
) -> None:
    case_started = time.monotonic()
    broker = EmbeddedBroker(storage_engine="s3://tansu/", extra_env=moto.aws_env())
    broker.start()
    port = broker.port
    before, during, after = (
        ticket_records(training_texts, 300),
        ticket_records(training_texts, 300, first=300),
        ticket_records(training_texts, 300, first=600),
    )
    keys = {r.key for r in before + during + after}
    try:
        settings = router_settings(broker.bootstrap_servers)
        create_topics(broker.bootstrap_servers, [settings.input_topic])
        service = ServiceProcess(service_env(settings), tmp_path / "service.log")
        try:
            service.start()
            service.wait_ready()
            produce_raw(broker.bootstrap_servers, settings.input_topic, before)
            first = {r.key for r in before}
            consume_until(broker.bootstrap_servers, output_topics(settings), 300, timeout_s=60, keys=first)
            # The outage starts (SIGKILL, so nothing is flushed or handed over) as soon as the service
            # is working on the second batch. Polled: its progress is only visible over HTTP.
            produce_raw(broker.bootstrap_servers, settings.input_topic, during)
            assert wait_until(partial(consumed_at_least, service, 301), timeout_s=30, interval_s=0.01)
            broker.kill()
            consumed_at_stop = service.metric(CONSUMED) or 0.0
            broker.stop()  # the process is gone already; this removes its working directory
            down_at = time.monotonic()
            # Polled: the service's readiness is only visible over HTTP; the wait itself is the fault.
            readyz_while_down: list[int | None] = []
            while time.monotonic() - down_at < BROKER_DOWN_S:
                assert service.alive(), f"service crashed while the broker was down: {service.log_tail()}"
                readyz_while_down.append(service.readyz())
                time.sleep(0.25)
            broker.port = port
            broker.start(attempts=1)
            assert broker.port == port
            up_at = time.monotonic()
            ready_again = wait_until(lambda: service.readyz() == 200, timeout_s=60, interval_s=0.1)
            ready_after_s = time.monotonic() - up_at
            produce_raw(broker.bootstrap_servers, settings.input_topic, after)
            received = consume_until(
                broker.bootstrap_servers, output_topics(settings), 900, timeout_s=90, keys=keys
            )
            assert service.alive(), f"service crashed after the broker came back: {service.log_tail()}"
            assert service.terminate() == 0
        finally:
            service.kill()
        published = read_published(broker.bootstrap_servers, settings)
    finally:
        broker.stop()
    missing = keys - {r.key for r in received}
    assert not missing, f"{len(missing)} tickets lost, e.g. {sorted(missing)[:5]}: {service.log_tail()}"
    assert ready_again, f"/readyz not 200 within 60s of the broker's return: {service.log_tail()}"
    went_unready = any(status != 200 for status in readyz_while_down)
    print(
        f"\n[e] broker down {BROKER_DOWN_S:.0f}s on port {port} ({consumed_at_stop:.0f} of 600 consumed when "
        f"it was killed): 900 tickets all arrived, "
        f"{published.duplicates(keys)} duplicates; /readyz while down: {Counter(readyz_while_down)}; "
        f"ready {ready_after_s:.1f}s after restart; {time.monotonic() - case_started:.1f}s"
    )
    assert went_unready, f"/readyz stayed 200 for the whole {BROKER_DOWN_S:.0f}s outage: {readyz_while_down}"
