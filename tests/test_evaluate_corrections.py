"""``evaluate --corrections``: the production golden set.

The join first, as plain functions over plain data (gold = live labels + the correction, the latest
correction wins, the router's republished copies are one correction, unmatched events are counted,
a queue override is the gold queue), then the command's mistakes, then the whole thing on the real
broker: a router routes tickets, people correct some of them, and the report's accuracies are the
ones worked out by hand from what was corrected.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.routing import route
from consumer.taxonomy import load_taxonomy
from producer_tools.cli import main
from producer_tools.decisions import LiveDecision, decision_of
from producer_tools.evaluation import golden
from producer_tools.evaluation.metrics import NO_ANSWER
from producer_tools.evaluation.summary import TRIAGE_GROUP, summarize
from schemas.codec import encode
from schemas.corrections import Correction, CorrectionSource
from schemas.events import (
    AxisPrediction,
    Classification,
    ErrorKind,
    RoutedTicket,
    SourcePosition,
    TicketEvent,
    TierAttempt,
    TriageRecord,
)
from tests.kafka_helpers import OutcomeCounter, create_topics, produce, router_settings, running_router

TAXONOMY = load_taxonomy()
AXES = TAXONOMY.axis_names
LIVE = {"team": "product", "ticket_type": "general_inquiry", "urgency": "low", "sentiment": "neutral"}
MONDAY = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def ticket(event_id: str, language: str | None = "en", account_tier: str = "pro") -> TicketEvent:
    return TicketEvent.model_validate(
        {
            "event_id": event_id,
            "event_type": "ticket.created",
            "ticket_id": f"T-{event_id}",
            "subject": "Export",
            "body": "How do I export my invoices as CSV?",
            "account_tier": account_tier,
            "customer_id": "C-1",
            "channel": "web",
            "language": language,
            "created_at": "2026-11-30T08:00:00Z",
        }
    )


def decision(
    event_id: str, labels: Mapping[str, str] = LIVE, tier: str = "local", **fields: Any
) -> LiveDecision:
    """A routed decision as ``read_live_decisions`` returns it (queue from the taxonomy's rules)."""
    values: dict[str, Any] = {
        "event_id": event_id,
        "ticket_id": f"T-{event_id}",
        "queue": fields.pop("queue", None) or route(TAXONOMY.routing, dict(labels)).queue,
        "labels": dict(labels),
        "confidences": dict.fromkeys(labels, 0.9),
        "tiers_tried": [tier],
        "model": f"{tier}-model",
        "escalated": False,
        "triaged": False,
        "cost_usd": 0.001,
        "latency_ms": 12.0,
        "ticket": ticket(event_id),
    }
    values.update(fields)
    return LiveDecision(**values)


def triaged(event_id: str, labels: Mapping[str, str] | None = None) -> LiveDecision:
    """A triage record: with a partial answer (low confidence) or none (every tier failed)."""
    return decision(
        event_id,
        labels or {},
        queue="needs-human-triage",
        confidences=dict.fromkeys(labels or {}, 0.4),
        tiers_tried=["local", "fast"],
        triaged=True,
        error_kind="low_confidence" if labels else "llm_unavailable",
        low_confidence=bool(labels),
        cost_usd=0.0,
        latency_ms=0.0,
    )


def correction(event_id: str, at: datetime = MONDAY, **fields: Any) -> Correction:
    values: dict[str, Any] = {
        "ticket_id": f"T-{event_id}",
        "event_id": event_id,
        "labels": {"team": "billing"},
        "source": "agent",
        "actor": "agent-7",
        "corrected_at": at,
    }
    values.update(fields)
    return Correction.model_validate(values)


def only(golden_set: golden.GoldenSet) -> golden.Scored:
    [scored] = golden_set.scored
    return scored


# --- the join, pure ---------------------------------------------------------------------------------


def test_gold_is_the_live_labels_with_the_correction_on_top() -> None:
    found = golden.join([correction("E-1")], {"E-1": decision("E-1")}, TAXONOMY)
    scored = only(found)
    assert scored.item.gold == {**LIVE, "team": "billing"}, "the axes not named are the router's"
    assert scored.outcome.labels == LIVE and scored.outcome.routed
    assert scored.gold_queue == "billing-low" and scored.live_queue == "product-low"
    assert scored.changed and scored.decided_by == "local"
    assert (scored.item.language, scored.item.account_tier) == ("en", "pro")
    assert found.join["named"] == {"team": 1, "ticket_type": 0, "urgency": 0, "sentiment": 0, "queue": 0}


def test_a_correction_that_only_confirms_is_scored_right_and_not_counted_as_a_change() -> None:
    found = golden.join([correction("E-1", labels={"team": "product"})], {"E-1": decision("E-1")}, TAXONOMY)
    assert only(found).item.gold == LIVE and not only(found).changed
    assert (found.join["joined"], found.join["changed"]) == (1, 0)


def test_the_latest_corrected_at_wins_whatever_order_the_records_came_in() -> None:
    later = correction("E-1", at=MONDAY + timedelta(hours=2), labels={"team": "security"})
    earlier = correction("E-1", at=MONDAY, labels={"team": "billing", "urgency": "high"})
    found = golden.join([later, earlier], {"E-1": decision("E-1")}, TAXONOMY)
    assert only(found).item.gold == {**LIVE, "team": "security"}, "not merged with the earlier one"
    assert (found.join["corrections"], found.join["superseded"], found.join["corrected_events"]) == (2, 1, 1)


def test_the_routers_republished_copy_is_the_same_correction() -> None:
    original = correction("E-1")
    copy = original.model_copy(update={"body": "How do I export…", "router_labels": LIVE})
    newer_copy_time = copy.model_copy(update={"corrected_at": MONDAY + timedelta(days=1)})
    found = golden.join([original, copy, newer_copy_time], {"E-1": decision("E-1")}, TAXONOMY)
    figures = found.join
    assert (figures["records_read"], figures["republished_copies"], figures["corrections"]) == (3, 2, 1)
    assert (figures["superseded"], figures["joined"]) == (0, 1)


def test_events_no_longer_on_the_topics_are_unmatched_and_the_rate_is_over_events_read() -> None:
    decisions = {f"E-{n}": decision(f"E-{n}") for n in range(8)} | {"E-t": triaged("E-t", LIVE)}
    corrections = [correction("E-1"), correction("E-2"), correction("E-gone"), correction("E-older")]
    figures = golden.join(corrections, decisions, TAXONOMY, invalid=2).join
    assert (figures["records_read"], figures["invalid"], figures["corrected_events"]) == (6, 2, 4)
    assert (figures["joined"], figures["unmatched"]) == (2, 2)
    assert (figures["events_read"], figures["routed_events"], figures["triaged_events"]) == (9, 8, 1)
    assert figures["correction_rate"] == pytest.approx(2 / 9)
    assert figures["change_rate"] == pytest.approx(2 / 9)


def test_a_queue_override_is_the_gold_queue_and_leaves_the_labels_confirmed() -> None:
    decisions = {"E-1": decision("E-1"), "E-2": decision("E-2")}
    moved = correction("E-1", labels={}, queue="security-high")
    relabelled = correction("E-2", labels={"urgency": "normal"})
    found = golden.join([moved, relabelled], decisions, TAXONOMY)
    assert found.queues == (["security-high", "product-normal"], ["product-low", "product-low"])
    report = summarize(TAXONOMY, found.items, [found.outcomes], None, queues=found.queues)
    assert report["axes"]["team"]["accuracy"] == 1.0 and report["axes"]["urgency"]["accuracy"] == 0.5
    assert report["routing"]["accuracy"] == 0.0
    assert report["routing"]["per_queue"]["security-high"]["misrouted_to"] == [
        {"queue": "product-low", "count": 1}
    ]
    without = summarize(TAXONOMY, found.items, [found.outcomes], None)
    assert without["routing"]["accuracy"] == 0.5, "from the labels alone the override is invisible"


def test_triaged_events_are_scored_on_their_partial_answer_or_as_no_answer() -> None:
    decisions = {"E-low": triaged("E-low", LIVE), "E-none": triaged("E-none"), "E-half": triaged("E-half")}
    full = dict(LIVE, team="billing")
    corrections = [
        correction("E-low", labels={"urgency": "high"}, source="triage"),
        correction("E-none", labels=full, source="triage"),
        correction("E-half", labels={"team": "billing"}, source="triage"),
    ]
    found = golden.join(corrections, decisions, TAXONOMY)
    assert found.join["not_scored"] == {golden.AXIS_WITHOUT_LABEL: 1}, "no label on most axes: unscorable"
    low, none = found.scored
    assert low.outcome.error_kind == "low_confidence" and low.outcome.low_confidence
    assert low.outcome.answer_tier == "fast" and low.decided_by == TRIAGE_GROUP
    assert low.live_queue == "product-low", "a triaged ticket is scored on where its labels would go"
    assert none.outcome.labels == dict.fromkeys(AXES, NO_ANSWER) and none.live_queue == NO_ANSWER
    assert none.item.gold == full


def test_a_triaged_event_without_a_readable_original_still_counts() -> None:
    unreadable = dataclasses.replace(triaged("E-x", LIVE), ticket=None)
    scored = only(golden.join([correction("E-x", language="de")], {"E-x": unreadable}, TAXONOMY))
    assert (scored.item.language, scored.item.account_tier) == ("de", "unknown")


def test_labels_outside_the_taxonomy_are_left_out_not_scored_wrong() -> None:
    found = golden.join([correction("E-1", labels={"team": "legal"})], {"E-1": decision("E-1")}, TAXONOMY)
    assert found.scored == [] and found.join["not_scored"] == {golden.LABEL_OUTSIDE_TAXONOMY: 1}


def test_the_window_is_on_corrected_at_since_included_until_excluded() -> None:
    days = [MONDAY + timedelta(days=n) for n in range(4)]
    decisions = {f"E-{n}": decision(f"E-{n}") for n in range(4)}
    corrections = [correction(f"E-{n}", at=day) for n, day in enumerate(days)]
    found = golden.join(corrections, decisions, TAXONOMY, golden.Window(days[1], days[3]))
    assert [s.item.ticket.event_id for s in found.scored] == ["E-1", "E-2"]
    assert found.join["outside_window"] == 2 and found.join["since"] == days[1].isoformat()


def test_accuracy_per_deciding_tier_and_the_claude_calls_of_live_tickets() -> None:
    usage = {"input_tokens": 900, "output_tokens": 40}
    haiku = TierAttempt(
        tier="fast", model="claude-haiku-5-5", outcome="answered", usage=usage, cost_usd=0.002
    )
    local_low = TierAttempt(tier="local", model="local@1", outcome="low_confidence")
    decisions = {
        "E-1": decision("E-1"),
        "E-2": decision("E-2"),
        "E-3": decision("E-3", tier="fast", tiers_tried=["local", "fast"], tier_attempts=[local_low, haiku]),
    }
    corrections = [correction("E-1"), correction("E-2", labels={"team": "product"}), correction("E-3")]
    found = golden.join(corrections, decisions, TAXONOMY)
    tiers = golden.tier_report(found, AXES)["groups"]
    assert tiers == {"fast": {"n": 1, "accuracy": 0.75}, "local": {"n": 2, "accuracy": 0.875}}
    assert golden.tiers_seen(found.outcomes) == ["local", "fast"]
    assert golden.models_seen(found.outcomes) == {"fast": "claude-haiku-5-5"}
    report = summarize(TAXONOMY, found.items, [found.outcomes], None, queues=found.queues)
    assert report["llm"]["claude-haiku-5-5"]["tokens"]["input"] == 900
    assert report["escalation"]["tier_mix"] == {"local": pytest.approx(2 / 3), "fast": pytest.approx(1 / 3)}


def test_a_triage_record_for_low_confidence_reads_back_as_a_flagged_decision() -> None:
    partial = Classification(axes={axis: AxisPrediction(label=LIVE[axis], confidence=0.4) for axis in AXES})
    record = TriageRecord(
        error_kind=ErrorKind.LOW_CONFIDENCE,
        message="urgency below its threshold",
        original_value=ticket("E-t").model_dump_json(),
        original_encoding="utf-8",
        original_size=1,
        source=SourcePosition(topic="tickets", partition=0, offset=7),
        event_id="E-t",
        ticket_id="T-E-t",
        tiers_tried=["local", "fast"],
        partial_classification=partial,
        router_version="test",
    )
    read = decision_of("needs-human-triage", encode(record), "needs-human-triage")
    assert read is not None and read.triaged and read.low_confidence and read.labels == LIVE
    scored = only(golden.join([correction("E-t")], {"E-t": read}, TAXONOMY))
    assert scored.outcome.error_kind == "low_confidence" and scored.item.language == "en"


def test_records_that_are_not_corrections_are_counted() -> None:
    good = encode(correction("E-1"))
    corrections, invalid = golden.parse_corrections([good, b"{not json", None, orjson.dumps({"x": 1})])
    assert ([c.event_id for c in corrections], invalid) == (["E-1"], 3)


# --- the command's mistakes --------------------------------------------------------------------------


def run_evaluate(*args: str | Path) -> int:
    return main(["evaluate", *(str(a) for a in args)])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--corrections", "labeled.jsonl"],
            "--corrections reads its gold labels from the corrections topic",
        ),
        (
            ["--corrections", "--tiers", "local", "--repeat", "2", "--cv", "3"],
            "do not combine it with --cv, --tiers, --repeat",
        ),
        (["--corrections", "--train", "t.csv"], "do not combine it with --train"),
        ([], "LABELED is required (or --corrections"),
        (["labeled.jsonl", "--since", "2026-11-01"], "--since only apply with --corrections"),
        (
            ["labeled.jsonl", "--corrections-topic", "c", "--bootstrap", "b:1"],
            "--corrections-topic, --bootstrap",
        ),
        (["--corrections", "--since", "last monday"], "--since: expected an ISO 8601 date or time"),
        (["--corrections", "--since", "2026-12-01", "--until", "2026-11-01"], "is not before --until"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert run_evaluate(*args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_time_flags_without_a_zone_are_utc() -> None:
    from producer_tools.evaluate import moment

    assert moment("--since", "2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert moment("--until", "2026-11-01T10:00:00+01:00") == datetime(2026, 11, 1, 9, tzinfo=UTC)


# --- the real broker ---------------------------------------------------------------------------------


def other_label(axis: str, label: str) -> str:
    return next(candidate for candidate in TAXONOMY.axes[axis].labels if candidate != label)


def ticket_record(index: int, text: str) -> tuple[bytes, bytes]:
    event = ticket(f"gold-{index}-{uuid.uuid4().hex[:6]}", language="en" if index % 2 else None)
    event = event.model_copy(update={"subject": text[:40], "body": text})
    return event.ticket_id.encode(), orjson.dumps(event.model_dump(mode="json"))


def person(routed: RoutedTicket, at: datetime = MONDAY, **fields: Any) -> Correction:
    return Correction(
        ticket_id=routed.ticket.ticket_id,
        event_id=routed.ticket.event_id,
        source=CorrectionSource.AGENT,
        actor="agent-1",
        corrected_at=at,
        **fields,
    )


Plan = Callable[[list[RoutedTicket]], list[Correction]]


async def route_and_correct(
    bootstrap: str, settings: Any, texts: list[str], plan: Plan
) -> tuple[list[RoutedTicket], list[Correction], int]:
    """Run the router on 30 tickets, then publish the planned corrections of what it routed while it
    still runs: it republishes those it can join (same correction id, ``router_labels`` set), the
    copies the report must not count twice. Returns the routed tickets, corrections and copies."""
    create_topics(bootstrap, [settings.input_topic], partitions=settings.topic_partitions)
    counter = OutcomeCounter()
    async with running_router(settings, extra_hooks=[counter.hook]) as service:
        learner = service.learner
        assert learner is not None
        await learner.wait_until(learner.replayed.is_set)
        produce(bootstrap, settings.input_topic, [ticket_record(i, texts[i]) for i in range(30)])
        await counter.wait_for(30)
        routed = [outcome.routed for outcome in counter.outcomes if outcome.routed is not None]
        assert len(routed) == 30, "route_flagged: the local tier routes every ticket"
        corrections = plan(routed)
        produce(
            bootstrap, settings.corrections_topic, [(c.ticket_id.encode(), encode(c)) for c in corrections]
        )
        read = len(corrections) * 2 - 1  # every original, and the copies the router reads back
        await learner.wait_until(lambda: sum(learner.outcomes.values()) >= read)
        return routed, corrections, learner.outcomes.get("learned", 0)


@pytest.mark.integration
def test_the_report_of_the_live_router_is_what_the_corrections_say(
    bootstrap: str,
    training_texts: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = router_settings(bootstrap, low_confidence_action="route_flagged", retrain_after=0)
    gold: dict[int, dict[str, str]] = {}
    gold_queue: dict[int, str] = {}

    def plan(routed: list[RoutedTicket]) -> list[Correction]:
        """By hand: 4 team changes, 3 urgency changes (team confirmed), 2 queue overrides, one event
        corrected twice where the later verdict changes team but the record published last does not,
        and one correction of an event the topics do not hold."""
        labels = [{axis: r.classification.axes[axis].label for axis in AXES} for r in routed]
        corrections = []
        for n in range(4):
            team = other_label("team", labels[n]["team"])
            corrections.append(person(routed[n], labels={"team": team}))
            gold[n] = {**labels[n], "team": team}
        for n in range(4, 7):
            urgency = other_label("urgency", labels[n]["urgency"])
            corrections.append(person(routed[n], labels={"team": labels[n]["team"], "urgency": urgency}))
            gold[n] = {**labels[n], "urgency": urgency}
        for n in range(7, 9):
            moved = next(q for q in ("security-high", "general-low") if q != routed[n].queue)
            corrections.append(person(routed[n], queue=moved))
            gold[n], gold_queue[n] = labels[n], moved
        later_team = other_label("team", labels[9]["team"])
        corrections.append(person(routed[9], at=MONDAY + timedelta(hours=3), labels={"team": later_team}))
        corrections.append(person(routed[9], labels={"team": labels[9]["team"]}))
        gold[9] = {**labels[9], "team": later_team}
        gone = person(routed[0], labels={"team": "billing"}).model_copy(update={"event_id": "gone"})
        return [*corrections, gone]

    routed, corrections, learned = asyncio.run(route_and_correct(bootstrap, settings, training_texts, plan))
    assert learned == len(corrections) - 1 == 11, "every correction of a routed event was learned"

    monkeypatch.setenv("QUEUE_TOPIC_PREFIX", settings.queue_topic_prefix)
    monkeypatch.setenv("TRIAGE_TOPIC", settings.triage_topic)
    out_json, out_html = tmp_path / "golden.json", tmp_path / "golden.html"
    status = run_evaluate(
        "--corrections",
        "--corrections-topic",
        settings.corrections_topic,
        "--bootstrap",
        bootstrap,
        "--json",
        out_json,
        "--html",
        out_html,
    )
    assert status == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "Corrections joined with the live decisions" in printed and "taken as confirmed" in printed
    report = orjson.loads(out_json.read_bytes())
    scored = sorted(gold)
    n = len(scored)
    assert report["n"] == n == 10

    join = report["corrections"]
    assert join["records_read"] == len(corrections) + learned, "the router's copies are on the topic"
    assert (join["republished_copies"], join["corrections"], join["superseded"]) == (learned, 12, 1)
    assert (join["corrected_events"], join["joined"], join["unmatched"]) == (11, n, 1)
    assert (join["events_read"], join["routed_events"], join["triaged_events"]) == (30, 30, 0)
    assert join["correction_rate"] == pytest.approx(n / 30)
    assert join["named"] == {"team": 8, "ticket_type": 0, "urgency": 3, "sentiment": 0, "queue": 2}

    def share(right: int) -> float:
        return pytest.approx(right / n)  # type: ignore[no-any-return]

    assert report["axes"]["team"]["accuracy"] == share(n - 5), "4 changed, and the later verdict on #9"
    assert report["axes"]["urgency"]["accuracy"] == share(n - 3)
    assert report["axes"]["ticket_type"]["accuracy"] == report["axes"]["sentiment"]["accuracy"] == 1.0
    assert report["all_axes_correct"] == share(n - 8)
    queue_right = sum(
        gold_queue.get(i, route(TAXONOMY.routing, gold[i]).queue) == routed[i].queue for i in scored
    )
    assert queue_right <= n - 2, "the overrides at least are misrouted"
    assert report["routing"]["accuracy"] == share(queue_right)
    assert report["by_tier"]["groups"] == {"local": {"n": n, "accuracy": pytest.approx(1 - 8 / (4 * n))}}
    languages = report["by_language"]["groups"]
    english = sum(routed[i].ticket.language == "en" for i in scored)
    expected = {group: count for group, count in (("en", english), ("unknown", n - english)) if count}
    assert {group: figures["n"] for group, figures in languages.items()} == expected
    assert report["outcomes"]["routed"] == 1.0 and report["run"]["tiers"] == ["local"]
    flagged = sum(routed[i].low_confidence for i in scored)
    assert report["outcomes"]["routed_low_confidence"] == share(flagged), "as the queue topics say"
    assert report["latency_ms"]["p50"] > 0
    page = out_html.read_text(encoding="utf-8")
    assert (
        "Corrections joined with the live decisions" in page and "Accuracy by the tier that decided" in page
    )


@pytest.mark.integration
def test_a_missing_corrections_topic_is_one_line(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CORRECTIONS_TOPIC", "no-such-corrections-" + uuid.uuid4().hex[:6])
    assert run_evaluate("--corrections", "--bootstrap", bootstrap) == 2
    err = capsys.readouterr().err
    assert "does not exist on the broker (--corrections-topic or CORRECTIONS_TOPIC)" in err
    assert err.count("\n") == 1


@pytest.mark.integration
def test_corrections_of_events_no_topic_holds_end_with_the_join_figures(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = router_settings(bootstrap)
    create_topics(bootstrap, [settings.corrections_topic])
    orphan = correction("E-retention-dropped-it")
    produce(bootstrap, settings.corrections_topic, [(b"T-1", encode(orphan))])
    monkeypatch.setenv("QUEUE_TOPIC_PREFIX", settings.queue_topic_prefix)
    monkeypatch.setenv("TRIAGE_TOPIC", settings.triage_topic)
    monkeypatch.setenv("CORRECTIONS_TOPIC", settings.corrections_topic)
    assert run_evaluate("--corrections", "--bootstrap", bootstrap) == 2
    err = capsys.readouterr().err
    assert "corrected events 1, of them not on the queue or triage topics 1; events on those topics 0" in err
    assert err.count("\n") == 1
