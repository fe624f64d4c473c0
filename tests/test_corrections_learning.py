"""What a correction teaches: the pure joins first, then the learner over the real example store and
local tier (no broker: the records are handed to it), then the whole service on the real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
import pytest

from consumer.classify.claude import load_examples
from consumer.classify.local import LabeledText, LocalModel, LocalTier, fit_local_model, read_training_jsonl
from consumer.learn.corrections import (
    KEPT_BODY_CHARS,
    Change,
    Decision,
    RecentDecisions,
    changes,
    learned_example,
    packed,
    triaged_decision,
    unpacked,
    with_router_text,
)
from consumer.learn.learner import CorrectionLearner, LearnerParts
from consumer.learn.retriever import build_retriever
from consumer.metrics import Metrics
from consumer.routing import reachable_queues
from consumer.taxonomy import load_taxonomy
from producer_tools.fake_api import Scenario, run_in_thread
from schemas.codec import decode, encode
from schemas.corrections import Correction, CorrectionSource
from tests.kafka_helpers import (
    OutcomeCounter,
    consume_until,
    create_topics,
    produce,
    router_settings,
    running_router,
)
from tests.test_retriever import event as ticket

TAXONOMY = load_taxonomy()
ROUTER_LABELS = {
    "team": "product",
    "ticket_type": "general_inquiry",
    "urgency": "low",
    "sentiment": "neutral",
}
DECISION = Decision(
    "T-1", "Export", "How do I export my invoices as CSV?", "en", ROUTER_LABELS, "product-low", "m"
)


def correction(event_id: str = "E-1", **fields: object) -> Correction:
    values: dict[str, object] = {
        "ticket_id": "T-1",
        "event_id": event_id,
        "labels": {"team": "billing"},
        "source": "agent",
        "actor": "agent-7",
        "corrected_at": datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
    }
    values.update(fields)
    return Correction.model_validate(values)


# --- pure --------------------------------------------------------------------------------------------


def test_recent_decisions_forget_the_oldest_first() -> None:
    decisions = RecentDecisions(2)
    for event_id in ("a", "b", "c"):
        decisions.remember(event_id, DECISION)
    assert (decisions.get("a"), len(decisions)) == (None, 2)
    assert decisions.get("c") == DECISION
    RecentDecisions(0).remember("a", DECISION)  # size 0 remembers nothing and does not fail


def test_a_remembered_decision_comes_back_whole() -> None:
    """Kept packed, handed back equal: every field, floats exactly, unicode and empty values."""
    full = Decision(
        ticket_id="T-ü",
        subject="Zahlung «doppelt»",
        body="Line one\nline two \u2028 \U0001f600",
        language="de",
        labels=ROUTER_LABELS,
        queue="billing-high",
        model="claude-haiku-5-5",
        confidences={"team": 0.1 + 0.2, "urgency": 1.0, "sentiment": 0.0},
        rule="team_urgency",
        reason="",
        tiers=("local", "fast"),
        low_confidence=True,
    )
    decisions = RecentDecisions(5)
    for event_id, decision in (("full", full), ("short", DECISION)):
        decisions.remember(event_id, decision)
    assert decisions.get("full") == full and decisions.get("short") == DECISION
    assert unpacked(packed(full)).confidences["team"] == 0.1 + 0.2


def test_a_remembered_body_is_cut_so_the_memory_stays_bounded() -> None:
    long = ticket("E-long", "Huge", "x" * (KEPT_BODY_CHARS + 500))
    decision = triaged_decision(long, None, "needs-human-triage")
    assert len(decision.body) == KEPT_BODY_CHARS and decision.labels == {}


def test_only_changed_fields_count_as_corrections() -> None:
    fixed = correction(labels={"team": "billing", "urgency": "low"}, queue="billing-low")
    assert changes(fixed, DECISION) == [
        Change("team", "product", "billing"),
        Change("queue", "product-low", "billing-low"),
    ], "urgency=low only confirms the router"


def test_a_correction_teaches_the_routed_text_with_the_router_labels_it_left_alone() -> None:
    learned = learned_example(correction(), DECISION, TAXONOMY)
    assert learned.example is not None
    assert learned.example.example_id == "correction:E-1"
    assert learned.example.body == DECISION.body and learned.example.language == "en"
    assert dict(learned.example.labels) == {**ROUTER_LABELS, "team": "billing"}


def test_a_correction_with_its_own_text_needs_no_decision_but_every_axis() -> None:
    partial = correction(body="Charged twice this month", subject="Refund")
    assert learned_example(partial, None, TAXONOMY).reason == "incomplete"
    complete = correction(body="Charged twice this month", labels={**ROUTER_LABELS, "team": "billing"})
    example = learned_example(complete, None, TAXONOMY).example
    assert example is not None and example.body == "Charged twice this month"


def test_what_cannot_be_learned_says_why() -> None:
    assert learned_example(correction(), None, TAXONOMY).reason == "no_text"
    wrong = learned_example(correction(labels={"team": "sales"}), DECISION, TAXONOMY)
    assert (wrong.example, wrong.reason, wrong.unknown) == (None, "unknown_label", ["team=sales"])


def test_the_republished_copy_is_learned_alike_without_the_decision() -> None:
    copy = with_router_text(correction(), DECISION)
    assert copy.body == DECISION.body and copy.subject == DECISION.subject
    assert copy.router_labels == ROUTER_LABELS and copy.labels == {"team": "billing"}
    assert learned_example(copy, None, TAXONOMY) == learned_example(correction(), DECISION, TAXONOMY)


# --- the learner over the real store and local tier (records handed in, no broker) ------------------


def small_training_set() -> list[LabeledText]:
    """Every 8th bundled ticket (521, every label of every axis): what a refit does is the same on
    any data, and a fit of the whole file takes 25 s of CPU."""
    return read_training_jsonl()[::8]


def learner_over(
    retrain_after: int,
    refit: object = None,
    local: LocalTier | None = None,
    with_store: bool = True,
    base_training: Sequence[LabeledText] | None = None,
) -> CorrectionLearner:
    retriever = build_retriever(load_examples(), TAXONOMY, 5, 0.1) if with_store else None
    parts = LearnerParts(
        topic="corrections",
        taxonomy=TAXONOMY,
        decisions=RecentDecisions(100),
        store=retriever.store if retriever is not None else None,
        local=local,
        base_training=list(base_training) if base_training is not None else read_training_jsonl(),
        refit=refit,  # type: ignore[arg-type]
        retrain_after=retrain_after,
        metrics=Metrics(),
    )
    learner = CorrectionLearner(parts, producer=None)
    learner.replayed.set()
    return learner


async def test_a_correction_changes_the_next_similar_tickets_retrieved_examples() -> None:
    retriever = build_retriever(load_examples(), TAXONOMY, 5, 0.1)
    assert retriever is not None
    learner = learner_over(0)
    learner.parts.store = retriever.store
    text = "Our Grafana plugin for the quarterly zorblax widget shows a blank panel since Tuesday"
    before = [example.example_id for example, _ in retriever(ticket("E-before", "Zorblax", text))]
    fixed = correction(
        event_id="E-zorb", body=text, subject="Zorblax", labels={**ROUTER_LABELS, "team": "product"}
    )
    assert await learner.apply(encode(fixed), live=True) == "learned"
    after = retriever(ticket("E-after", "Zorblax panel", text + " again"))
    assert after[0][0].example_id == "correction:E-zorb" and after[0][1] > 0.9
    assert "correction:E-zorb" not in before
    assert dict(after[0][0].labels) == fixed.labels


async def test_a_second_correction_of_a_ticket_replaces_the_first_in_the_store() -> None:
    learner = learner_over(0)
    store = learner.parts.store
    assert store is not None
    size = len(store)
    text = "Please move our workspace to the EU data centre before the audit"
    for team in ("security", "infrastructure"):
        fixed = correction(event_id="E-eu", body=text, labels={**ROUTER_LABELS, "team": team})
        fixed = fixed.model_copy(update={"correction_id": str(uuid.uuid4())})
        assert await learner.apply(encode(fixed), live=True) == "learned"
    assert len(store) == size + 1
    [(best, _)] = [(n.example, n.similarity) for n in store.nearest(text, k=1)]
    assert best.labels["team"] == "infrastructure"


async def test_invalid_and_duplicate_records_are_counted_not_learned() -> None:
    learner = learner_over(0)
    assert await learner.apply(b"{not json", live=True) == "invalid"
    assert await learner.apply(orjson.dumps({"event_id": "E"}), live=True) == "invalid"
    fixed = correction(event_id="E-dup", body="Cannot log in", labels=ROUTER_LABELS)
    assert await learner.apply(encode(fixed), live=True) == "learned"
    assert await learner.apply(encode(fixed), live=True) == "duplicate"
    assert len(learner.learned) == 1


async def test_corrections_metrics_count_changes_on_the_routing_replica_only() -> None:
    learner = learner_over(0)
    learner.parts.decisions.remember("E-1", DECISION)
    assert await learner.apply(encode(correction()), live=True) == "learned"
    copy = with_router_text(correction(), DECISION).model_copy(update={"correction_id": "other"})
    assert await learner.apply(encode(copy), live=True) == "learned", "the copy teaches a replica"
    sample = learner.parts.metrics.registry.get_sample_value(
        "ticket_router_corrections_total",
        {"field": "team", "from_label": "product", "to_label": "billing", "source": "agent"},
    )
    assert sample == 1.0, "the republished copy is not counted again"


async def test_retrain_after_n_labels_swaps_a_new_model_version_in() -> None:
    fits: list[int] = []

    def refit(examples: Sequence[LabeledText]) -> LocalModel:
        fits.append(len(examples))
        return fit_local_model(TAXONOMY, examples)

    base = small_training_set()
    local = LocalTier(fit_local_model(TAXONOMY, base))
    first = local.model
    learner = learner_over(2, refit=refit, local=local, with_store=False, base_training=base)
    texts = ["Invoice PDF shows the wrong VAT number", "The VAT id on our invoices is outdated"]
    for number, text in enumerate(texts):
        labels = {**ROUTER_LABELS, "team": "billing", "ticket_type": "billing_dispute"}
        fixed = correction(event_id=f"E-vat-{number}", body=text, labels=labels)
        await learner.apply(encode(fixed), live=True)
    await learner.idle()
    assert fits == [len(base) + 2] and learner.retrains == 1
    assert local.model != first and local.model.startswith(first.split("@")[0] + "@")
    answer = await local.classify(ticket("E-next", "VAT", "Our invoice has the wrong VAT number"))
    assert answer.attempt.model == local.model
    await local.close()


# --- the service on the real broker -------------------------------------------------------------------


def ticket_record(index: int, text: str) -> tuple[bytes, bytes]:
    event = ticket(f"learn-{index}-{uuid.uuid4().hex[:6]}", text[:50], text).model_dump(mode="json")
    return event["ticket_id"].encode(), orjson.dumps(event)


@pytest.mark.integration
async def test_corrections_teach_a_running_router_and_survive_a_restart(
    bootstrap: str, training_texts: list[str]
) -> None:
    """Text-less corrections of routed tickets: learned, republished with their text, a refit swapped
    in while tickets flow (none lost or doubled), and a second router learns them from the topic."""
    settings = router_settings(bootstrap, retrain_after=3, low_confidence_action="route_flagged")
    create_topics(bootstrap, [settings.input_topic], partitions=settings.topic_partitions)
    queues = [settings.queue_topic_prefix + queue for queue in reachable_queues(TAXONOMY)]
    first_batch = [ticket_record(i, training_texts[i]) for i in range(3)]
    load = [ticket_record(100 + i, training_texts[i % len(training_texts)]) for i in range(150)]

    counter = OutcomeCounter()
    async with running_router(settings, extra_hooks=[counter.hook]) as service:
        learner = service.learner
        assert learner is not None
        await learner.wait_until(learner.replayed.is_set)
        produce(bootstrap, settings.input_topic, first_batch)
        await counter.wait_for(3)
        routed = [outcome.routed for outcome in counter.outcomes if outcome.routed is not None]
        assert len(routed) == 3
        old_model = routed[0].model_used
        fixes = [
            Correction(
                ticket_id=r.ticket.ticket_id,
                event_id=r.ticket.event_id,
                labels={"team": "security", "urgency": "critical"},
                source=CorrectionSource.AGENT,
                actor="agent-1",
                corrected_at=datetime.now(UTC),
            )
            for r in routed
        ]
        produce(bootstrap, settings.corrections_topic, [(f.ticket_id.encode(), encode(f)) for f in fixes])
        produce(bootstrap, settings.input_topic, load)  # tickets flow while the refit runs
        await learner.wait_until(lambda: learner.retrains >= 1)
        await counter.wait_for(3 + len(load))
        late = ticket_record(999, training_texts[5])
        produce(bootstrap, settings.input_topic, [late])
        await counter.wait_for(4 + len(load))
        newest = counter.outcomes[-1].routed
        assert newest is not None and newest.model_used != old_model
        assert newest.model_used.split("@")[0] == old_model.split("@")[0]
        changed = service.metrics.registry.get_sample_value(
            "ticket_router_corrections_total",
            {"field": "team", "from_label": routed[0].classification.axes["team"].label,
             "to_label": "security", "source": "agent"},
        )  # fmt: skip
        assert changed is not None and changed >= 1

    delivered = consume_until(bootstrap, queues, 4 + len(load), timeout_s=30)
    keys = Counter(record.key for record in delivered)
    assert len(delivered) == 4 + len(load) and max(keys.values()) == 1, "a ticket lost or routed twice"
    on_topic = consume_until(bootstrap, [settings.corrections_topic], 6, timeout_s=30)
    copies = [decode(Correction, record.value) for record in on_topic]
    assert sum(copy.body is not None and bool(copy.router_labels) for copy in copies) == 3

    restarted = settings.model_copy(update={"consumer_group": settings.consumer_group + "-2"})
    async with running_router(restarted) as service:
        learner = service.learner
        assert learner is not None
        await asyncio.wait_for(learner.wait_until(lambda: learner.retrains >= 1), timeout=120)
        assert {example.example_id for example in learner.learned.values()} == {
            f"correction:{r.ticket.event_id}" for r in routed
        }
        assert all(example.labels["team"] == "security" for example in learner.learned.values())
        # The originals name events this router never routed: unusable before their copy is read,
        # duplicates after (the test's producer and the router's partition keys differently).
        assert learner.outcomes.get("no_text", 0) + learner.outcomes.get("duplicate", 0) == 3


def test_the_model_version_is_the_fits_key() -> None:
    """The version is the fit's key: the same data gives the same name, other data another."""
    base = small_training_set()
    one = LocalTier(fit_local_model(TAXONOMY, base)).model
    again = LocalTier(fit_local_model(TAXONOMY, list(base))).model
    other = LocalTier(fit_local_model(TAXONOMY, base[:-1])).model
    assert one == again != other and "@" in one


def user_text(body: dict[str, object]) -> str:
    """The user turn of one Messages API request, as the fake API received it."""
    messages = body["messages"]
    assert isinstance(messages, list)
    content = messages[-1]["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


@pytest.mark.integration
async def test_a_correction_on_kafka_shows_in_the_next_similar_tickets_claude_prompt(bootstrap: str) -> None:
    """Real broker, real SDK, fake Messages API: a person corrects a ticket with an unusual word; the
    next ticket like it is sent to Claude with the corrected one among its similar examples."""
    rare = "Quxolotl gateway keeps rejecting our webhook signatures after the certificate rotation"
    with run_in_thread(Scenario()) as api:
        settings = router_settings(
            bootstrap,
            tiers="fast",
            anthropic_api_key="sk-ant-api03-test-key-0123456789",
            anthropic_base_url=api.base_url,
            llm_timeout_s=5.0,
            low_confidence_action="route_flagged",
        )
        create_topics(bootstrap, [settings.input_topic], partitions=settings.topic_partitions)
        counter = OutcomeCounter()
        async with running_router(settings, extra_hooks=[counter.hook]) as service:
            learner = service.learner
            assert learner is not None
            await learner.wait_until(learner.replayed.is_set)
            produce(bootstrap, settings.input_topic, [ticket_record(1, rare)])
            await counter.wait_for(1)
            first = counter.outcomes[0].routed
            assert first is not None
            before = user_text(api.requests()[-1])
            fix = Correction(
                ticket_id=first.ticket.ticket_id,
                event_id=first.ticket.event_id,
                labels={"team": "security", "ticket_type": "security_incident", "urgency": "high"},
                source=CorrectionSource.TRIAGE,
                actor="lead-7",
                corrected_at=datetime.now(UTC),
            )
            produce(bootstrap, settings.corrections_topic, [(fix.ticket_id.encode(), encode(fix))])
            await learner.wait_until(lambda: len(learner.learned) == 1)
            produce(bootstrap, settings.input_topic, [ticket_record(2, rare.replace("keeps", "still keeps"))])
            await counter.wait_for(2)
            after = user_text(api.requests()[-1])
    assert f"correction:{first.ticket.event_id}" not in before
    examples = after.split("<similar_examples>")[1].split("</similar_examples>")[0]
    learned = examples.split(f"<example id='correction:{first.ticket.event_id}'")[1].split("</example>")[0]
    assert "Quxolotl gateway keeps rejecting" in learned
    assert "team=security, ticket_type=security_incident, urgency=high" in learned
