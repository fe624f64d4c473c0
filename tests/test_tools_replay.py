"""``ticket-tools replay``: a summary that adds up, default kinds, ``--create-topic`` (issue 11)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from confluent_kafka.admin import AdminClient
from hypothesis import given
from hypothesis import strategies as st

from consumer.config import settings_from_values
from producer_tools.kafka_io import Connection
from producer_tools.replay import (
    DEFAULT_KINDS,
    Position,
    parse_error_kinds,
    plan_replays,
    replay_partitions,
    summary,
)
from schemas.codec import encode
from schemas.events import ErrorKind
from tests.kafka_helpers import create_topics, produce, unique
from tests.test_tools_cli import NOW, counter_ids, read_topic, run, triage

SUMMARY = re.compile(
    r"read (\d+) triage records: (\d+) (?:replayed|would replay), (\d+) of other kinds(?: \([^)]*\))?, "
    r"(\d+) not replayable(?:, (\d+) past --max)?"
)
GARBAGE = "garbage"
TRUNCATED = "truncated"


def raw_triage(entries: list[str]) -> list[tuple[Position, bytes | None]]:
    """Triage-topic values: an error kind's name, ``garbage`` (not a record) or ``truncated``."""
    values: list[tuple[Position, bytes | None]] = []
    for offset, entry in enumerate(entries):
        if entry == GARBAGE:
            value = b"not a triage record"
        elif entry == TRUNCATED:
            value = encode(triage(offset, ErrorKind.INTERNAL).model_copy(update={"original_truncated": True}))
        else:
            value = encode(triage(offset, ErrorKind(entry)))
        values.append((Position("triage", 0, offset), value))
    return values


def summed(line: str) -> tuple[int, int]:
    """(records read, the sum of the buckets) as the summary line states them."""
    match = SUMMARY.search(line)
    assert match is not None, line
    read, *buckets = (int(group or 0) for group in match.groups())
    return read, sum(buckets)


# ---------------------------------------------------------------------------- pure


def test_max_1_accounts_for_every_record_read() -> None:
    """The reported case: 3 read, 1 replayed, 1 of another kind, and the third is past --max."""
    raws = raw_triage(["schema_invalid", "llm_unavailable", "llm_unavailable"])
    plan = plan_replays(raws, DEFAULT_KINDS, lambda: NOW, counter_ids(), max_replays=1)
    assert (plan.read, len(plan.replays), plan.other_kinds, plan.past_max) == (
        3,
        1,
        Counter({"schema_invalid": 1}),
        1,
    )
    line = summary(plan, Counter({"llm_unavailable": 1}), "replayed", "tickets", DEFAULT_KINDS)
    assert line.startswith(
        "replayed 1 records to 'tickets' (llm_unavailable: 1); read 3 triage records: 1 replayed, "
        "1 of other kinds (schema_invalid: 1), 0 not replayable, 1 past --max; not replayed by default, "
        "since they would be triaged again unchanged: schema_invalid (name a kind with --error-kind to "
        "replay it)"
    )
    assert summed(line) == (3, 3)


@given(
    entries=st.lists(st.sampled_from([*(kind.value for kind in ErrorKind), GARBAGE, TRUNCATED]), max_size=25),
    kinds=st.sets(st.sampled_from(list(ErrorKind)), min_size=1).map(frozenset),
    max_replays=st.one_of(st.none(), st.integers(min_value=1, max_value=6)),
)
def test_the_summary_always_adds_up(
    entries: list[str], kinds: frozenset[ErrorKind], max_replays: int | None
) -> None:
    plan = plan_replays(raw_triage(entries), kinds, lambda: NOW, counter_ids(), max_replays=max_replays)
    assert plan.accounted == plan.read == len(entries)
    assert max_replays is None or len(plan.replays) <= max_replays
    counts = Counter(replay.error_kind.value for replay in plan.replays)
    assert summed(summary(plan, counts, "would replay", "t", kinds)) == (len(entries), len(entries))


def test_only_the_default_kinds_get_the_default_note() -> None:
    plan = plan_replays(
        raw_triage(["malformed_json", "llm_unavailable"]), DEFAULT_KINDS, lambda: NOW, counter_ids()
    )
    assert "by default, since they would be triaged again unchanged: malformed_json (" in summary(
        plan, Counter(), "replayed", "t", DEFAULT_KINDS
    )
    named = parse_error_kinds(["llm_unavailable"])
    plan = plan_replays(raw_triage(["malformed_json", "llm_unavailable"]), named, lambda: NOW, counter_ids())
    assert "by default" not in summary(plan, Counter(), "replayed", "t", named)


def test_a_drafter_failure_is_not_replayed_into_the_input_topic_by_default() -> None:
    plan = plan_replays(
        raw_triage(["draft_failed", "llm_unavailable"]), DEFAULT_KINDS, lambda: NOW, counter_ids()
    )
    assert [replay.error_kind.value for replay in plan.replays] == ["llm_unavailable"]
    assert "draft_failed (" in summary(plan, Counter(), "replayed", "t", DEFAULT_KINDS)


def test_a_created_target_gets_the_flag_else_the_input_topics_else_the_setting() -> None:
    connection = Connection(settings_from_values({"input_topic": "in", "topic_partitions": 6}), "b:1", 1.0)
    assert replay_partitions(connection, {"in": [0, 1]}, 4) == 4
    assert replay_partitions(connection, {"in": [0, 1]}, None) == 2
    assert replay_partitions(connection, {}, None) == 6


# ---------------------------------------------------------------------------- on the broker


def partition_count(bootstrap: str, topic: str) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(metadata.topics[topic].partitions)


@pytest.mark.integration
def test_missing_target_names_create_topic_and_create_topic_makes_it(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    triage_topic, input_topic = unique("triage"), unique("input")
    create_topics(bootstrap, [triage_topic], partitions=1)
    create_topics(bootstrap, [input_topic], partitions=2)
    monkeypatch.setenv("INPUT_TOPIC", input_topic)
    kinds = [ErrorKind.MALFORMED_JSON, ErrorKind.LOW_CONFIDENCE, ErrorKind.LLM_UNAVAILABLE]
    produce(bootstrap, triage_topic, [(None, encode(triage(i, kind))) for i, kind in enumerate(kinds)])
    base = ["replay", "--triage-topic", triage_topic, "--timeout", "20", "--bootstrap", bootstrap]

    retry = unique("tickets-retry")
    status, _, err = run([*base, "--error-kind", "low_confidence", "--topic", retry], capsys)
    assert status == 2 and err.strip().splitlines() == [err.strip()]
    assert f"topic '{retry}' does not exist on the broker (pass --create-topic" in err

    status, _, err = run(
        [*base, "--error-kind", "low_confidence", "--topic", retry, "--create-topic"], capsys
    )
    assert status == 0, err
    assert f"created topic '{retry}' with 2 partitions" in err and partition_count(bootstrap, retry) == 2
    assert "replayed 1 records" in err and len(read_topic(bootstrap, retry, 2, 1)) == 1

    wide = unique("tickets-wide")
    status, _, err = run([*base, "--topic", wide, "--create-topic", "--partitions", "4"], capsys)
    assert status == 0, err
    assert partition_count(bootstrap, wide) == 4
    # no --error-kind: everything but malformed_json, which would only be triaged again
    assert "replayed 2 records" in err and "triaged again unchanged: malformed_json" in err
    assert summed(err) == (3, 3)


@pytest.mark.integration
def test_max_summary_adds_up_on_the_broker(bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    triage_topic = unique("triage-max")
    create_topics(bootstrap, [triage_topic], partitions=1)
    kinds = [ErrorKind.SCHEMA_INVALID, ErrorKind.LLM_UNAVAILABLE, ErrorKind.LLM_UNAVAILABLE]
    produce(bootstrap, triage_topic, [(None, encode(triage(i, kind))) for i, kind in enumerate(kinds)])
    argv = ["replay", "--triage-topic", triage_topic, "--max", "1", "--dry-run", "--timeout", "20"]
    status, out, err = run([*argv, "--bootstrap", bootstrap], capsys)
    assert status == 0, err
    assert out.count("would replay") == 1 and "would replay 1 records" in err
    read, accounted = summed(err)
    assert read == accounted and read >= 2
    assert ("stopped at --max 1 before the end" in err) == (read < 3)  # said only when records were left
