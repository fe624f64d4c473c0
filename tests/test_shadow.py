"""Shadow mode: a candidate router that publishes what it would do, and the report that compares it.

Pure first (the name rules, the outcome → ShadowDecision transformation over the real processor,
the labelled metrics, the learner's flag, every figure of the report), then a live router and a
shadow on the real broker with ``ticket-tools shadow-report`` run against both, then the example
Kubernetes overlay as kubectl renders it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import orjson
import pytest
import yaml
from confluent_kafka.admin import AdminClient

import tests.kafka_helpers as kafka_helpers
from consumer.cli import main as router_main
from consumer.config import Settings
from consumer.metrics import Metrics, ShadowMetrics
from consumer.processing import InputRecord, Outcome, ProcessorConfig, RecordProcessor, as_shadow
from consumer.routing import reachable_queues
from consumer.service import RunningService, run_service
from consumer.taxonomy import load_taxonomy
from producer_tools.cli import main as tools_main
from producer_tools.decisions import LiveDecision, read_to_end
from producer_tools.evaluation.shadow import latest_shadow_decisions, shadow_report
from producer_tools.kafka_io import Connection, load_tool_settings
from schemas.codec import decode, encode
from schemas.events import (
    AxisPrediction,
    Classification,
    ErrorKind,
    RoutedTicket,
    SourcePosition,
    TierAttempt,
    TriageRecord,
)
from schemas.shadow import (
    MAX_SHADOW_NAME_LENGTH,
    ShadowDecision,
    shadow_group,
    shadow_name_problem,
    shadow_topic,
)
from tests.kafka_helpers import (
    OutcomeCounter,
    committed_offsets,
    create_topics,
    produce,
    router_settings,
    running_router,
    unique,
)
from tests.test_corrections_learning import DECISION, correction, learner_over
from tests.test_deploy import KUBERNETES_VERSION, kubectl_kustomize
from tests.test_end_to_end import ticket_event
from tests.test_pipeline_decisions import FixedTier

ROOT = Path(__file__).resolve().parent.parent
TAXONOMY = load_taxonomy()
LABELS = {"team": "billing", "ticket_type": "billing_dispute", "urgency": "high", "sentiment": "negative"}
TRIAGE = "needs-human-triage"


# --- the name ------------------------------------------------------------------------------------


def test_a_shadow_name_is_a_valid_part_of_a_topic_name() -> None:
    for good in ("haiku-only", "prompt_v7", "candidate.2", "x" * MAX_SHADOW_NAME_LENGTH):
        assert shadow_name_problem(good) is None, good
    assert shadow_name_problem("") == "the name is empty"
    assert "at most 242" in str(shadow_name_problem("x" * (MAX_SHADOW_NAME_LENGTH + 1)))
    assert shadow_name_problem("haiku only/v2") == (
        "' ' '/' cannot be part of a Kafka topic name (allowed: letters, digits, '.', '_', '-')"
    )
    assert shadow_name_problem("häiku") is not None
    assert len(shadow_topic("x" * MAX_SHADOW_NAME_LENGTH)) == 249
    assert shadow_topic("haiku-only") == "shadow.haiku-only"
    assert shadow_group("ticket-router", "haiku-only") == "ticket-router.shadow.haiku-only"


# --- outcome → ShadowDecision, through the real processor ----------------------------------------


def answer(confidence: float, **labels: str) -> Classification:
    chosen = {**LABELS, **labels}
    return Classification(
        axes={axis: AxisPrediction(label=label, confidence=confidence) for axis, label in chosen.items()}
    )


def processor(tier: Any, shadow: str | None, action: str = "triage") -> RecordProcessor:
    from consumer.classify.pipeline import Pipeline

    config = ProcessorConfig(
        triage_topic=TRIAGE,
        max_event_bytes=65_536,
        queue_topic_prefix="",
        router_version="9.9.9",
        prompt_version="p-1",
        shadow=shadow,
    )
    pipeline = Pipeline([tier], TAXONOMY.thresholds(), low_confidence_action=action)
    return RecordProcessor(config, TAXONOMY, pipeline)


def record(index: int = 1, **fields: Any) -> InputRecord:
    event = {**ticket_event(index, "We were charged twice this month"), **fields}
    return InputRecord("tickets", 2, 40 + index, str(event["ticket_id"]).encode(), orjson.dumps(event))


async def both(tier: Any, item: InputRecord, action: str = "triage") -> tuple[Outcome, Outcome]:
    """The live router's outcome and the shadow's for the same record and configuration."""
    live = await processor(tier, None, action).process(item)
    shadow = await processor(tier, "cand", action).process(item)
    return live, shadow


async def test_a_routed_ticket_becomes_a_shadow_decision_on_the_shadow_topic_only() -> None:
    live, shadow = await both(FixedTier("local", answer(0.97)), record())
    assert live.kind == shadow.kind == "routed" and live.topic == live.queue
    assert shadow.topic == "shadow.cand" and shadow.key == live.key == b"T-00001"
    decision = decode(ShadowDecision, shadow.value or b"")
    routed = shadow.routed
    assert routed is not None and shadow.queue == routed.queue, "hooks still see the routed ticket"
    assert decision.shadow == "cand" and decision.outcome == "routed"
    assert decision.event_id == routed.ticket.event_id and decision.ticket_id == "T-00001"
    assert (decision.queue, decision.rule, decision.classification) == (
        routed.queue,
        routed.rule,
        routed.classification,
    )
    assert (decision.tiers_tried, decision.model_used, decision.escalated) == (
        ["local"],
        "local-model",
        False,
    )
    assert decision.tier_attempts == routed.tier_attempts and decision.latency_ms == routed.latency_ms
    assert (decision.prompt_version, decision.router_version) == ("p-1", "9.9.9")
    assert decision.decided_at == routed.classified_at
    assert decision.source == SourcePosition(topic="tickets", partition=2, offset=41)
    assert decision.error_kind is None and decision.message is None


async def test_a_triaged_ticket_keeps_its_reason_partial_answer_and_cost() -> None:
    live, shadow = await both(FixedTier("local", answer(0.5)), record())
    assert live.topic == TRIAGE and live.kind == shadow.kind == "triaged"
    decision = decode(ShadowDecision, shadow.value or b"")
    assert decision.outcome == "triaged" and decision.error_kind is ErrorKind.LOW_CONFIDENCE
    assert decision.message == (live.triage.message if live.triage else None)
    assert decision.classification == answer(0.5) and decision.queue is None
    assert [a.outcome for a in decision.tier_attempts] == ["low_confidence"]
    assert decision.latency_ms == shadow.latency_ms > 0, "the classification's time, not 0"


async def test_route_flagged_shadows_say_low_confidence() -> None:
    _, shadow = await both(FixedTier("local", answer(0.5)), record(), action="route_flagged")
    decision = decode(ShadowDecision, shadow.value or b"")
    assert decision.outcome == "routed" and decision.low_confidence


async def test_unreadable_input_is_triaged_without_ids_and_skipped_records_publish_nothing() -> None:
    tier = FixedTier("local", answer(0.97))
    bad = InputRecord("tickets", 0, 7, b"K-1", b"not json")
    live, shadow = await both(tier, bad)
    decision = decode(ShadowDecision, shadow.value or b"")
    assert (decision.event_id, decision.ticket_id, decision.error_kind) == (
        None,
        None,
        ErrorKind.MALFORMED_JSON,
    )
    assert shadow.key == live.key == b"K-1" and decision.tier_attempts == []
    _, reply = await both(tier, record(3, author_role="agent"))
    assert reply.kind == "skipped" and (reply.topic, reply.key, reply.value) == (None, None, None)


def test_as_shadow_of_a_skipped_outcome_clears_where_it_would_go() -> None:
    skipped = Outcome("skipped", "somewhere", b"k", b"v", skip_reason="duplicate")
    assert as_shadow(skipped, "x").topic is None


# --- metrics and the learner ---------------------------------------------------------------------


def sample_lines(exposition: bytes) -> list[str]:
    return [line for line in exposition.decode().splitlines() if line and not line.startswith("#")]


def test_every_sample_of_a_shadow_carries_its_name_and_the_live_router_none() -> None:
    shadow, live = ShadowMetrics("haiku-only"), Metrics()
    for metrics in (shadow, live):
        metrics.child(metrics.routed, "billing-high", "billing").inc()
        metrics.info.labels("1.0", "p", "fast").set(1)
        metrics.consumer_lag.labels("tickets", "0").set(3)
    lines = sample_lines(shadow.exposition())
    assert lines and all('shadow="haiku-only"' in line for line in lines)
    assert 'ticket_router_consumer_lag{partition="0",shadow="haiku-only",topic="tickets"} 3.0' in lines
    assert 'ticket_router_ready{shadow="haiku-only"} 0.0' in lines, "unlabelled gauges too"
    assert not any("shadow=" in line for line in sample_lines(live.exposition()))
    labels = {"queue": "billing-high", "rule": "billing"}
    assert shadow.registry.get_sample_value("ticket_router_tickets_routed_total", labels) == 1.0


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.sent.append((topic, value))


@pytest.mark.parametrize("shadow", [False, True])
async def test_a_shadows_learner_learns_but_neither_counts_nor_republishes(shadow: bool) -> None:
    learner = learner_over(0)
    learner.parts.shadow = shadow
    producer = RecordingProducer()
    learner.producer = producer  # type: ignore[assignment]
    learner.parts.decisions.remember("E-1", DECISION)
    assert await learner.apply(encode(correction()), live=True) == "learned"
    assert "correction:E-1" in {example.example_id for example in learner.learned.values()}
    counted = learner.parts.metrics.registry.get_sample_value(
        "ticket_router_corrections_total",
        {"field": "team", "from_label": "product", "to_label": "billing", "source": "agent"},
    )
    assert (counted, len(producer.sent)) == ((None, 0) if shadow else (1.0, 1))


# --- the report's figures ------------------------------------------------------------------------


def live_decision(event: str, queue: str, labels: dict[str, str], **fields: Any) -> LiveDecision:
    values: dict[str, Any] = {
        "event_id": event,
        "ticket_id": f"T-{event}",
        "queue": queue,
        "labels": labels,
        "confidences": dict.fromkeys(labels, 0.9),
        "tiers_tried": ["local"],
        "model": "local@1",
        "escalated": False,
        "triaged": False,
        "cost_usd": 0.0,
        "latency_ms": 10.0,
    }
    values.update(fields)
    return LiveDecision(**values)


def shadow_decision(
    event: str | None, queue: str | None, labels: dict[str, str], **fields: Any
) -> ShadowDecision:
    values: dict[str, Any] = {
        "shadow": "cand",
        "outcome": "routed" if queue else "triaged",
        "ticket_id": f"T-{event}" if event else None,
        "event_id": event,
        "queue": queue,
        "rule": "r" if queue else None,
        "classification": answer(0.8, **labels) if labels is not None else None,
        "tiers_tried": ["fast"],
        "tier_attempts": [TierAttempt(tier="fast", model="haiku", outcome="answered")],
        "cost_usd": 0.002,
        "latency_ms": 100.0,
        "router_version": "1",
        "decided_at": datetime(2026, 12, 1, tzinfo=UTC),
        "source": SourcePosition(topic="tickets", partition=0, offset=0),
    }
    values.update(fields)
    return ShadowDecision(**values)


def hand_made_report() -> dict[str, Any]:
    live = {
        "E1": live_decision("E1", "billing-high", LABELS),
        "E2": live_decision("E2", "billing-high", LABELS, latency_ms=30.0, cost_usd=0.01),
        "E3": live_decision("E3", "product-low", {**LABELS, "urgency": "low"}, escalated=True),
        "E4": live_decision("E4", TRIAGE, {}, triaged=True, error_kind="llm_unavailable"),
        "E6": live_decision("E6", "billing-high", LABELS),  # the shadow never saw it
    }
    low = [TierAttempt(tier="fast", model="haiku", outcome="low_confidence")]
    escalated = [*low, TierAttempt(tier="strong", model="sonnet", outcome="answered")]
    shadow = [
        shadow_decision("E2", "billing-high", {}),  # superseded by its later decision below
        shadow_decision("E1", "billing-high", {}),
        shadow_decision(
            "E2",
            "security-high",
            {"team": "security"},
            escalated=True,
            tiers_tried=["fast", "strong"],
            tier_attempts=escalated,
        ),
        shadow_decision("E3", None, {"urgency": "medium"}, error_kind="low_confidence", tier_attempts=low),
        shadow_decision("E4", "billing-high", {}),
        shadow_decision("E5", "billing-high", {}),  # live's record expired
        shadow_decision(None, None, {}, classification=None, error_kind="malformed_json", tier_attempts=[]),
        None,  # not a ShadowDecision
    ]
    return shadow_report("cand", live, latest_shadow_decisions(shadow), TAXONOMY.axis_names, TRIAGE)


def test_the_join_counts_each_side_and_keeps_the_latest_shadow_decision() -> None:
    report = hand_made_report()
    assert report["join"] == {
        "live_events": 5,
        "shadow_records": 8,
        "shadow_events": 5,
        "joined": 4,
        "live_only": 1,
        "shadow_only": 1,
        "shadow_without_event_id": 1,
        "shadow_unreadable": 1,
    }


def test_agreement_is_per_axis_among_events_both_labelled() -> None:
    agreement = hand_made_report()["agreement"]
    # E1 agrees everywhere; E2 differs on team; E3 differs on urgency; E4 has no live labels.
    assert agreement["axes"]["team"] == {"agreement": 2 / 3, "agree": 2, "compared": 3}
    assert agreement["axes"]["urgency"] == {"agreement": 2 / 3, "agree": 2, "compared": 3}
    assert agreement["axes"]["sentiment"] == {"agreement": 1.0, "agree": 3, "compared": 3}
    assert agreement["all_axes"] == {"agreement": 1 / 3, "agree": 1, "compared": 3}
    assert agreement["queue"] == {"agreement": 1 / 4, "agree": 1, "compared": 4}


def test_the_queue_change_matrix_counts_live_queue_to_shadow_queue() -> None:
    changes = hand_made_report()["queue_changes"]
    assert changes["labels"] == ["billing-high", "product-low", "security-high", TRIAGE]
    assert changes["matrix"] == [[1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]]
    assert (changes["changed"], changes["changed_share"]) == (3, 0.75)
    assert changes["top"][0] == {"live": "billing-high", "shadow": "security-high", "count": 1}


def test_rates_cost_and_latency_are_over_the_joined_events_of_each_side() -> None:
    report = hand_made_report()
    live, shadow = report["live"], report["shadow"]
    assert (live["triage_rate"], shadow["triage_rate"]) == (0.25, 0.25)
    assert (live["escalation_rate"], shadow["escalation_rate"]) == (0.25, 0.25)
    assert live["cost_per_10k_tickets_usd"] == pytest.approx(0.01 / 4 * 10_000)
    assert shadow["cost_per_10k_tickets_usd"] == pytest.approx(0.002 * 10_000)
    assert live["latency_ms"] == {"p50": 10.0, "p95": pytest.approx(28.0), "routed": 3}
    assert shadow["triaged_by_kind"] == {"low_confidence": 0.25}
    assert live["tier_mix"] == {"local": 0.75, "triage": 0.25}
    assert shadow["tier_mix"] == {"fast": 0.5, "strong": 0.25, "triage": 0.25}


def test_disagreements_list_every_axis_that_differs() -> None:
    rows = hand_made_report()["disagreements"]
    assert [(row["event_id"], row["axis"], row["live"], row["shadow"]) for row in rows] == [
        ("E2", "team", "billing", "security"),
        ("E3", "urgency", "low", "medium"),
    ]
    assert rows[0]["live_confidence"] == 0.9 and rows[0]["shadow_confidence"] == 0.8
    assert (rows[0]["live_queue"], rows[0]["shadow_queue"]) == ("billing-high", "security-high")


def test_calibration_rows_are_what_tune_reads() -> None:
    calibration = hand_made_report()["calibration"]
    assert calibration["reference"] == "the live router's labels"
    tickets = calibration["tickets"]
    assert len(tickets) == 3, "E4 is left out: the live router triaged it"
    assert [ticket["tier"] for ticket in tickets] == ["strong", "fast", "fast"], "the tier that answered"
    assert tickets[0]["correct"] == {"team": False, "ticket_type": True, "urgency": True, "sentiment": True}
    assert all(tickets[1]["correct"].values())
    assert tickets[2]["correct"]["urgency"] is False and tickets[2]["confidence"]["urgency"] == 0.8
    assert set(tickets[0]["confidence"]) == set(TAXONOMY.axis_names)


# --- a live router and a shadow on the real broker -------------------------------------------------

SHADOW_THRESHOLD = 0.4
"""The candidate's thresholds on every axis: lower than the live taxonomy's, so it routes some of the
tickets the live router only routes flagged, and triages the rest (LOW_CONFIDENCE_ACTION=triage)."""


@contextlib.asynccontextmanager
async def running_shadow(
    settings: Settings, name: str, counter: OutcomeCounter
) -> AsyncIterator[RunningService]:
    """``running_router`` for ``run_service(..., shadow=name)``: the helper calls the module's
    ``run_service`` when it starts, so the shadow's is swapped in for that call only."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kafka_helpers, "run_service", functools.partial(run_service, shadow=name))
        context = running_router(settings, extra_hooks=[counter.hook])
        service = await context.__aenter__()
    try:
        yield service
    finally:
        await context.__aexit__(None, None, None)


def candidate_files(directory: Path) -> tuple[Path, Path]:
    """A taxonomy with lower thresholds, and a sixth of the training file: another model, whose labels
    differ from the live one's on some tickets (fitted in seconds)."""
    document = yaml.safe_load((ROOT / "consumer" / "data" / "taxonomy.yaml").read_text("utf-8"))
    for axis in document["axes"].values():
        axis["threshold"] = SHADOW_THRESHOLD
    taxonomy = directory / "candidate-taxonomy.yaml"
    taxonomy.write_text(yaml.safe_dump(document), "utf-8")
    lines = (ROOT / "consumer" / "data" / "training.jsonl").read_text("utf-8").splitlines()
    training = directory / "candidate-training.jsonl"
    training.write_text("\n".join(lines[::6]) + "\n", "utf-8")
    return taxonomy, training


def eval_records(count: int) -> list[tuple[bytes, bytes]]:
    """Tickets the models were not trained on (tests/data/eval_labeled.jsonl), so they are unsure."""
    rows = [json.loads(line) for line in (ROOT / "tests" / "data" / "eval_labeled.jsonl").open()][:count]
    events = [
        {**ticket_event(5_000 + i, row["body"]), "subject": row["subject"]} for i, row in enumerate(rows)
    ]
    return [(str(event["ticket_id"]).encode(), orjson.dumps(event)) for event in events]


def topic_names(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


async def scrape(port: int) -> list[str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        return sample_lines(await response.read())


def expected_figures(
    live_records: list[tuple[str, bytes | None]], shadow_records: list[tuple[str, bytes | None]], triage: str
) -> dict[str, Any]:
    """The report's headline figures, recomputed from both sides' records by plain counting."""
    live: dict[str, tuple[str, dict[str, str]]] = {}
    for topic, value in live_records:
        assert value is not None
        if topic == triage:
            record = decode(TriageRecord, value)
            assert record.event_id is None, "only the malformed record is triaged live"
            continue
        routed = decode(RoutedTicket, value)
        live[routed.ticket.event_id] = (
            routed.queue,
            {a: p.label for a, p in routed.classification.axes.items()},
        )
    shadow: dict[str, tuple[str, dict[str, str]]] = {}
    for _, value in shadow_records:
        decision = decode(ShadowDecision, value or b"")
        if decision.event_id is not None:
            axes = decision.classification.axes if decision.classification else {}
            queue = decision.queue if decision.outcome == "routed" and decision.queue else triage
            shadow[decision.event_id] = (queue, {a: p.label for a, p in axes.items()})
    joined = sorted(live.keys() & shadow.keys())
    agreement = {
        axis: sum(live[e][1][axis] == shadow[e][1][axis] for e in joined) / len(joined)
        for axis in TAXONOMY.axis_names
    }
    cells = Counter((live[e][0], shadow[e][0]) for e in joined)
    triaged = sum(shadow[e][0] == triage for e in joined) / len(joined)
    differing = sum(live[e][1][axis] != shadow[e][1][axis] for e in joined for axis in TAXONOMY.axis_names)
    return {
        "joined": len(joined),
        "agreement": agreement,
        "cells": cells,
        "shadow_triage_rate": triaged,
        "disagreements": differing,
    }


def matrix_cells(changes: dict[str, Any]) -> Counter[tuple[str, str]]:
    labels = changes["labels"]
    return Counter(
        {
            (labels[i], labels[j]): count
            for i, row in enumerate(changes["matrix"])
            for j, count in enumerate(row)
            if count
        }
    )


@pytest.mark.integration
async def test_a_shadow_beside_the_live_router_writes_only_its_own_topic_and_the_report_adds_up(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = unique("cand")
    live_settings = router_settings(bootstrap, low_confidence_action="route_flagged")
    candidate_taxonomy, candidate_training = candidate_files(tmp_path)
    shadow_settings = live_settings.model_copy(
        update={
            "taxonomy_path": candidate_taxonomy,
            "local_training_path": candidate_training,
            "low_confidence_action": "triage",
        }
    )
    create_topics(bootstrap, [live_settings.input_topic], partitions=live_settings.topic_partitions)
    live_topics = [live_settings.queue_topic_prefix + q for q in reachable_queues(TAXONOMY)]
    live_topics.append(live_settings.triage_topic)
    tickets = eval_records(40)
    reply = ticket_event(9_001, "Thanks, we are looking into it")
    extra = [(b"T-09001", orjson.dumps({**reply, "author_role": "agent"})), (b"BAD-1", b"not json")]

    live_counter, shadow_counter = OutcomeCounter(), OutcomeCounter()
    async with running_shadow(shadow_settings, name, shadow_counter) as shadow:
        created = topic_names(bootstrap)
        assert shadow_topic(name) in created
        assert not created & set(live_topics), "a shadow creates no queue or triage topic"
        async with running_router(live_settings, extra_hooks=[live_counter.hook]) as live:
            per_partition = produce(bootstrap, live_settings.input_topic, [*tickets, *extra])
            await live_counter.wait_for(len(tickets) + 2)
            await shadow_counter.wait_for(len(tickets) + 2)
            shadow_lines, live_lines = await scrape(shadow.http_port), await scrape(live.http_port)
    assert all(f'shadow="{name}"' in line for line in shadow_lines), "every shadow sample is labelled"
    assert any(line.startswith("ticket_router_tickets_triaged_total{") for line in shadow_lines)
    assert not any("shadow=" in line for line in live_lines)

    connection = Connection(load_tool_settings({}), bootstrap, 10.0)
    on_live_topics = await read_to_end(connection, live_topics)
    published_live = Counter((o.topic, o.value) for o in live_counter.outcomes if o.topic is not None)
    assert Counter(on_live_topics) == published_live, (
        "the queue and triage topics hold the live router's only"
    )
    on_shadow_topic = await read_to_end(connection, [shadow_topic(name)])
    assert len(on_shadow_topic) == len(tickets) + 1, "one per ticket and the malformed record; no agent reply"
    assert Counter(v for _, v in on_shadow_topic) == Counter(
        o.value for o in shadow_counter.outcomes if o.value
    )
    outcomes = Counter(decode(ShadowDecision, v or b"").outcome for _, v in on_shadow_topic)
    assert outcomes["routed"] and outcomes["triaged"] > 1, "the candidate routes some and triages some"

    for variable, value in (
        ("INPUT_TOPIC", live_settings.input_topic),
        ("TRIAGE_TOPIC", live_settings.triage_topic),
        ("QUEUE_TOPIC_PREFIX", live_settings.queue_topic_prefix),
    ):
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("TAXONOMY_PATH", raising=False)
    out, page = tmp_path / "shadow.json", tmp_path / "shadow.html"
    arguments = ["shadow-report", name, "--bootstrap", bootstrap, "--json", str(out), "--html", str(page)]
    assert await asyncio.to_thread(tools_main, arguments) == 0
    report = orjson.loads(out.read_bytes())
    expected = expected_figures(on_live_topics, on_shadow_topic, live_settings.triage_topic)
    assert report["join"]["joined"] == expected["joined"] == len(tickets)
    assert report["join"]["shadow_without_event_id"] == 1 and report["join"]["live_only"] == 0
    for axis, share in expected["agreement"].items():
        assert report["agreement"]["axes"][axis]["agreement"] == pytest.approx(share), axis
    assert min(expected["agreement"].values()) < 1.0, "the candidate's other model disagrees somewhere"
    assert matrix_cells(report["queue_changes"]) == expected["cells"]
    assert report["shadow"]["triage_rate"] == pytest.approx(expected["shadow_triage_rate"])
    assert report["live"]["triage_rate"] == 0.0
    assert len(report["disagreements"]) == expected["disagreements"]
    assert len(report["calibration"]["tickets"]) == len(tickets)
    assert {ticket["tier"] for ticket in report["calibration"]["tickets"]} == {"local"}
    assert page.read_text("utf-8").count("data:image/png;base64,") == 3
    terminal = capsys.readouterr().out
    assert "Agreement with the live router" in terminal and "Queue changes" in terminal

    # A restarted shadow continues from its committed offsets: only new tickets are classified again.
    group = shadow_group(live_settings.consumer_group, name)
    partitions = live_settings.topic_partitions
    committed = committed_offsets(bootstrap, group, live_settings.input_topic, partitions)
    assert committed == {p: per_partition.get(p, 0) for p in range(partitions)}
    later = eval_records(43)[40:]
    restarted = OutcomeCounter()
    async with running_shadow(shadow_settings, name, restarted):
        produce(bootstrap, live_settings.input_topic, later)
        await restarted.wait_for(len(later))
    assert sorted(o.ticket_id or "" for o in restarted.outcomes) == sorted(k.decode() for k, _ in later)


# --- the example overlay, as kubectl renders it -----------------------------------------------------

OVERLAY = ROOT / "deploy" / "overlays" / "shadow-haiku"


def selector_of(manifest: dict[str, Any]) -> dict[str, str]:
    spec = manifest["spec"]
    selector: dict[str, str] = {
        "Deployment": lambda: spec["selector"]["matchLabels"],
        "Service": lambda: spec["selector"],
        "PodDisruptionBudget": lambda: spec["selector"]["matchLabels"],
        "NetworkPolicy": lambda: spec["podSelector"]["matchLabels"],
        "ServiceMonitor": lambda: spec["selector"]["matchLabels"],
    }[manifest["kind"]]()
    return selector


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its kustomize) is not installed")
def test_the_shadow_overlay_is_a_second_deployment_that_selects_nothing_of_the_live_one() -> None:
    base = {(m["kind"], m["metadata"]["name"]): m for m in kubectl_kustomize(ROOT / "deploy" / "k8s")}
    shadow = kubectl_kustomize(OVERLAY)
    kinds = Counter(m["kind"] for m in shadow)
    assert not kinds.keys() & {"Namespace", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
    assert all(
        m["metadata"]["name"].startswith("ticket-router") and "shadow-haiku" in m["metadata"]["name"]
        for m in shadow
    )
    assert not {(m["kind"], m["metadata"]["name"]) for m in shadow} & base.keys(), (
        "applying it replaces nothing"
    )
    [deployment] = [m for m in shadow if m["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]
    assert pod["spec"]["containers"][0]["args"] == ["--shadow", "haiku-only"]
    assert deployment["spec"]["replicas"] == 1
    [env] = [
        m
        for m in shadow
        if m["kind"] == "ConfigMap" and m["metadata"]["name"].startswith("ticket-router-env")
    ]
    assert (env["data"]["TIERS"], env["data"]["AUTO_OFFSET_RESET"]) == ("fast", "latest")
    base_env = base[("ConfigMap", "ticket-router-env")]["data"]
    assert env["data"].get("CONSUMER_GROUP") == base_env.get("CONSUMER_GROUP"), (
        "the shadow's group is derived"
    )
    live_pod = base[("Deployment", "ticket-router")]["spec"]["template"]["metadata"]["labels"]
    for manifest in shadow:
        if manifest["kind"] in (
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "ServiceMonitor",
        ):
            where = f"{manifest['kind']}/{manifest['metadata']['name']}"
            assert selects(selector_of(manifest), pod["metadata"]["labels"]), where
            assert not selects(selector_of(manifest), live_pod), where
            live_one = base[(manifest["kind"], "ticket-router")]
            assert not selects(selector_of(live_one), pod["metadata"]["labels"]), f"live {manifest['kind']}"
        if not manifest["apiVersion"].startswith(("monitoring.coreos.com/", "keda.sh/")):
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    [policy] = [m for m in shadow if m["kind"] == "NetworkPolicy"]
    dns = policy["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"]
    assert dns == {"k8s-app": "kube-dns"}, "the DNS rule still selects kube-dns"


# --- command-line mistakes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["consume", "--shadow", "haiku only"], "--shadow 'haiku only': ' ' cannot be part of a Kafka topic"),
        (["consume", "--shadow", ""], "--shadow '': the name is empty"),
    ],
)
def test_a_bad_shadow_name_stops_the_router_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert router_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_shadow_without_a_broker_address_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert router_main(["consume", "--shadow", "haiku-only"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--shadow needs KAFKA_BOOTSTRAP_SERVERS" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["shadow-report", "a/b"], "NAME 'a/b': '/' cannot be part of a Kafka topic name"),
        (["shadow-report", "ok", "--show", "-1"], "--show must be 0 or more"),
    ],
)
def test_report_mistakes_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tools_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.integration
def test_a_report_on_a_shadow_that_never_ran_names_the_topic(
    bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tools_main(["shadow-report", "never-ran-here", "--bootstrap", bootstrap]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "topic 'shadow.never-ran-here' does not exist" in err
