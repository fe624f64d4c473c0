"""Issue 2's end-to-end check on the real broker: every ticket routed or triaged exactly once, and
the group's committed offsets account for every record published."""

from __future__ import annotations

import uuid
from collections import Counter

import orjson
import pytest

from consumer.routing import reachable_queues, route
from consumer.taxonomy import load_taxonomy
from schemas.codec import decode
from schemas.events import ErrorKind, RoutedTicket, TriageRecord
from tests.kafka_helpers import (
    OutcomeCounter,
    committed_offsets,
    consume_until,
    create_topics,
    produce,
    router_settings,
    running_router,
)

pytestmark = pytest.mark.integration

VALID = 300
MAX_EVENT_BYTES = 4_096


def ticket_event(index: int, text: str) -> dict[str, object]:
    return {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "event_type": "ticket.created",
        "ticket_id": f"T-{index:05d}",
        "subject": text[:60],
        "body": text,
        "account_tier": ["free", "starter", "pro", "enterprise"][index % 4],
        "author_role": "customer",
        "customer_id": f"C-{index % 37}",
        "channel": ["email", "web", "chat", "phone", "api"][index % 5],
        "created_at": "2026-11-20T09:15:00Z",
        "metadata": {"source": "test"},
    }


def malformed_events() -> list[tuple[bytes, bytes, ErrorKind]]:
    """(key, value, expected error kind): 10 of each kind the loop must catch before classifying."""
    cases: list[tuple[bytes, bytes, ErrorKind]] = []
    for i in range(10):
        cases.append(
            (
                f"BAD-JSON-{i}".encode(),
                b'{"ticket_id": "x", "body": ' + bytes([0xFF, i]),
                ErrorKind.MALFORMED_JSON,
            )
        )
    for i in range(10):
        event = ticket_event(90_000 + i, "schema problem")
        if i % 2:
            del event["account_tier"]
        else:
            event["channel"] = "carrier-pigeon"
        cases.append((f"BAD-SCHEMA-{i}".encode(), orjson.dumps(event), ErrorKind.SCHEMA_INVALID))
    for i in range(10):
        event = ticket_event(95_000 + i, "x" * (MAX_EVENT_BYTES + 100))
        cases.append((f"TOO-LARGE-{i}".encode(), orjson.dumps(event), ErrorKind.TOO_LARGE))
    return cases


async def test_300_valid_and_30_malformed_events_each_land_once(
    bootstrap: str, training_texts: list[str]
) -> None:
    settings = router_settings(
        bootstrap, max_event_bytes=MAX_EVENT_BYTES, low_confidence_action="route_flagged"
    )
    taxonomy = load_taxonomy()
    create_topics(bootstrap, [settings.input_topic], partitions=settings.topic_partitions)
    valid = [ticket_event(i, training_texts[i % len(training_texts)]) for i in range(VALID)]
    bad = malformed_events()
    records = [(str(e["ticket_id"]).encode(), orjson.dumps(e)) for e in valid] + [(k, v) for k, v, _ in bad]
    per_partition = produce(bootstrap, settings.input_topic, records)

    counter = OutcomeCounter()
    async with running_router(settings, extra_hooks=[counter.hook]):
        await counter.wait_for(len(records))

    queue_topics = [settings.queue_topic_prefix + q for q in reachable_queues(taxonomy)]
    routed_records = consume_until(bootstrap, queue_topics, VALID, timeout_s=30)
    triage_records = consume_until(bootstrap, [settings.triage_topic], len(bad), timeout_s=30)

    routed_ids = Counter(r.key for r in routed_records)
    assert len(routed_records) == VALID
    assert set(routed_ids) == {str(e["ticket_id"]).encode() for e in valid}
    assert max(routed_ids.values()) == 1, "a ticket was routed twice"
    for record in routed_records:
        routed = decode(RoutedTicket, record.value)
        labels = {axis: p.label for axis, p in routed.classification.axes.items()}
        assert set(labels) == set(taxonomy.axes)
        assert record.topic == settings.queue_topic_prefix + route(taxonomy.routing, labels).queue
        assert routed.queue == route(taxonomy.routing, labels).queue
        assert routed.tiers_tried == ["local"] and routed.model_used

    expected_kinds = {key: kind for key, _, kind in bad}
    assert len(triage_records) == len(bad)
    for record in triage_records:
        triage = decode(TriageRecord, record.value)
        assert triage.original_key is not None
        assert triage.error_kind is expected_kinds[triage.original_key.encode()], triage.message
        assert triage.source.topic == settings.input_topic

    committed = committed_offsets(
        bootstrap, settings.consumer_group, settings.input_topic, settings.topic_partitions
    )
    assert committed == {p: per_partition.get(p, 0) for p in range(settings.topic_partitions)}
