"""``ticket-tools publish``, ``tail`` and ``replay``: pure logic unit-tested, commands run on the real broker.

Published records are checked with confluent-kafka, an independent client, so a bug shared by the
tools' aiokafka code and their own reading code cannot hide itself.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition as AioTopicPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from consumer.errors import UserError
from producer_tools import cli
from producer_tools.publish import (
    CsvDefaults,
    TokenBucket,
    complete_mapping,
    event_from_row,
    parse_mapping,
    records_from_csv,
    records_from_jsonl,
)
from producer_tools.replay import (
    HEADER_AT,
    HEADER_FROM,
    HEADER_KIND,
    HEADER_ORIGINAL,
    HEADER_ORIGINAL_EVENT_ID,
    NotReplayable,
    Position,
    build_replay,
    parse_error_kinds,
    plan_replays,
    with_fresh_event_id,
)
from producer_tools.samples import generate_samples, parse_sample_texts
from producer_tools.tail import NewRecordsGate, row_for, select_topics
from schemas.codec import bytes_for_record, encode
from schemas.events import (
    AccountTier,
    AxisPrediction,
    Channel,
    Classification,
    ErrorKind,
    EventType,
    RoutedTicket,
    SourcePosition,
    TicketEvent,
    TokenUsage,
    TriageRecord,
)
from tests.kafka_helpers import consume_until, create_topics, produce, unique

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------- builders


def ticket(index: int, **changes: object) -> TicketEvent:
    fields: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "event_type": EventType.CREATED,
        "ticket_id": f"T-{index:04d}",
        "subject": f"subject {index}",
        "body": f"body of ticket {index}",
        "account_tier": AccountTier.PRO,
        "customer_id": f"C-{index}",
        "channel": Channel.WEB,
        "created_at": NOW,
    }
    fields.update(changes)
    return TicketEvent.model_validate(fields)


def routed(index: int, queue: str) -> RoutedTicket:
    return RoutedTicket(
        ticket=ticket(index),
        classification=Classification(
            axes={
                "team": AxisPrediction(label="billing", confidence=0.91),
                "urgency": AxisPrediction(label="normal", confidence=0.62),
            }
        ),
        queue=queue,
        rule="default",
        model_used="local-tfidf-logreg",
        tiers_tried=["local"],
        escalated=False,
        reclassification=False,
        latency_ms=4.0,
        usage=TokenUsage(),
        cost_usd=0.0,
        prompt_version="p1",
        router_version="test",
        source=SourcePosition(topic="tickets", partition=0, offset=index),
    )


def triage(
    index: int, kind: ErrorKind, original: bytes | None = None, key: str | None = None
) -> TriageRecord:
    raw = original if original is not None else encode(ticket(index))
    text, encoding = bytes_for_record(raw)
    return TriageRecord(
        error_kind=kind,
        message=f"test {kind.value}",
        original_value=text,
        original_encoding=encoding,
        original_size=len(raw),
        original_key=key if key is not None else f"T-{index:04d}",
        source=SourcePosition(topic="tickets", partition=1, offset=100 + index),
        ticket_id=f"T-{index:04d}",
        router_version="test",
    )


def counter_ids() -> Callable[[], str]:
    count = iter(range(1, 1_000_000))
    return lambda: f"00000000-0000-4000-8000-{next(count):012d}"


# ---------------------------------------------------------------------------- publish: pure


def test_mapping_parses_fields_columns_and_metadata() -> None:
    mapping = parse_mapping(["subject=Title,body=Description", "ticket_id=Id", "metadata.url=Link"])
    assert mapping == {"subject": "Title", "body": "Description", "ticket_id": "Id", "metadata.url": "Link"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("subjekt=Title", "unknown field 'subjekt' (fields: schema_version, event_id"),
        ("subject", "expected FIELD=COLUMN, got 'subject'"),
        ("subject=", "expected FIELD=COLUMN"),
        ("body=A,body=B", "field 'body' is mapped twice"),
    ],
)
def test_bad_mapping_is_one_clear_line(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        parse_mapping([spec])


def test_mapping_needs_existing_columns_and_a_body() -> None:
    with pytest.raises(UserError, match=r"no column body=Desc in the CSV header \(columns: Title, Text\)"):
        complete_mapping({"body": "Desc"}, ["Title", "Text"])
    with pytest.raises(UserError, match="required field 'body'"):
        complete_mapping({"subject": "Title"}, ["Title", "Text"])
    assert complete_mapping({"body": "Text"}, ["Text", "channel"]) == {"body": "Text", "channel": "channel"}


def test_row_gets_generated_and_default_values() -> None:
    event = event_from_row(
        {"Title": "Hi", "Text": "It broke", "Tier": "Enterprise", "Link": "", "Url": "https://x"},
        {
            "subject": "Title",
            "body": "Text",
            "account_tier": "Tier",
            "metadata.url": "Url",
            "ticket_id": "Link",
        },
        CsvDefaults(channel="chat"),
        NOW,
        counter_ids(),
    )
    valid = TicketEvent.model_validate(event)
    assert valid.event_id == "00000000-0000-4000-8000-000000000001"
    assert valid.ticket_id == "T-000000000000"  # from the second generated uuid
    assert valid.account_tier is AccountTier.ENTERPRISE  # cells are lower-cased for enum fields
    assert valid.channel is Channel.CHAT
    assert valid.created_at == NOW
    assert valid.metadata == {"url": "https://x"}


def test_csv_validation_names_the_physical_line() -> None:
    text = 'Title,Text,Tier\nok,"two\nlines",pro\nbad,body,platinum\n'
    with pytest.raises(UserError, match=r"t.csv:4: not a valid TicketEvent: account_tier"):
        records_from_csv(
            text,
            "t.csv",
            {"subject": "Title", "body": "Text", "account_tier": "Tier"},
            CsvDefaults(),
            True,
            NOW,
        )
    records = records_from_csv(text, "t.csv", {"body": "Text"}, CsvDefaults(), False, NOW)
    assert [record.line for record in records] == [2, 4]


def test_jsonl_refuses_the_file_naming_the_first_bad_line() -> None:
    good = encode(ticket(1))
    raw = b"\n".join([good, b"", b'{"ticket_id": "T-2"}', b"not json"])
    with pytest.raises(UserError, match=r"f.jsonl:3: not a valid TicketEvent: .* \(and 1 more invalid lines"):
        records_from_jsonl(raw, "f.jsonl", validate=True)
    unchecked = records_from_jsonl(raw, "f.jsonl", validate=False)
    assert [(r.line, r.key) for r in unchecked] == [(1, b"T-0001"), (3, b"T-2"), (4, None)]
    assert unchecked[0].value == good  # bytes are sent as they are in the file


def test_token_bucket_paces_without_drift() -> None:
    bucket = TokenBucket(rate=40, now=0.0)
    waits = [bucket.reserve(0.0) for _ in range(20)]
    assert waits[0] == 0.0
    assert waits[-1] == pytest.approx(19 / 40)
    late = TokenBucket(rate=10, now=0.0)
    assert late.reserve(5.0) == 0.0  # idle time refills at most one burst
    assert late.reserve(5.0) == pytest.approx(0.1)


def test_samples_are_deterministic_varied_and_valid() -> None:
    first = generate_samples(200, seed=7, now=NOW)
    assert first == generate_samples(200, seed=7, now=NOW)
    assert first != generate_samples(200, seed=8, now=NOW)
    assert len({event.event_id for event in first}) == 200
    assert {event.account_tier for event in first} == set(AccountTier)
    follow_ups = [event for event in first if event.event_type is EventType.MESSAGE_ADDED]
    created = {event.ticket_id for event in first if event.event_type is EventType.CREATED}
    assert follow_ups and all(event.ticket_id in created for event in follow_ups)
    assert all(NOW - timedelta(hours=6) <= event.created_at <= NOW for event in first)


def test_sample_texts_skip_unusable_rows() -> None:
    raw = b'{"id": "a", "body": "x", "channel": "fax"}\nnot json\n{"subject": "no body"}\n'
    (text,) = parse_sample_texts(raw)
    event = generate_samples(1, seed=1, now=NOW, texts=[text])[0]
    assert event.body == "x" and event.channel in set(Channel)


# ---------------------------------------------------------------------------- tail: pure


def test_new_records_gate_starts_at_the_first_high_watermark() -> None:
    a, b = AioTopicPartition("q", 0), AioTopicPartition("q", 1)
    gate = NewRecordsGate([a, b])
    assert gate.observe(a, 5) and not gate.ready
    assert not gate.keep(b, 0)  # nothing is shown before a partition's start is known
    assert not gate.observe(a, 9)  # the first high watermark stays the start
    assert gate.observe(b, 0) and gate.ready
    assert [gate.keep(a, offset) for offset in (4, 5, 6)] == [False, True, True]


def test_select_topics_names_what_is_missing() -> None:
    existing = ["p.billing-normal", "p.urgent-security", "triage"]
    reachable = ["billing-normal", "billing-low", "urgent-security"]
    assert select_topics(existing, [], True, reachable, "p.", "triage") == [
        "p.billing-normal",
        "p.urgent-security",
        "triage",
    ]
    with pytest.raises(UserError, match=r"no queue topic 'p.billling-normal' .* p.billing-normal, p.urgent"):
        select_topics(existing, ["billling-normal"], False, reachable, "p.", None)
    with pytest.raises(UserError, match="nothing to follow"):
        select_topics(existing, [], False, reachable, "p.", None)


def test_rows_show_routing_and_triage_records() -> None:
    row = row_for("p.billing-normal", encode(routed(1, "billing-normal")), "triage")
    assert (row.ticket_id, row.labels, row.confidence, row.account_tier, row.tiers) == (
        "T-0001",
        "billing/normal",
        "0.62 urgency",
        "pro",
        "local",
    )
    assert (
        row_for("triage", encode(triage(2, ErrorKind.LLM_UNAVAILABLE)), "triage").labels == "llm_unavailable"
    )
    assert row_for("p.x", b"garbage", "triage").labels == "(not a RoutedTicket)"


# ---------------------------------------------------------------------------- replay: pure


def test_error_kinds_are_validated_and_default_to_those_that_can_succeed() -> None:
    unchanged_fails = {
        ErrorKind.MALFORMED_JSON,
        ErrorKind.SCHEMA_INVALID,
        ErrorKind.TOO_LARGE,
        ErrorKind.DRAFT_FAILED,
    }
    assert parse_error_kinds([]) == frozenset(ErrorKind) - unchanged_fails
    assert parse_error_kinds(["all"]) == frozenset(ErrorKind)
    assert parse_error_kinds(["schema_invalid"]) == {ErrorKind.SCHEMA_INVALID}  # named: replayed
    assert parse_error_kinds(["llm_unavailable", "internal,low_confidence"]) == {
        ErrorKind.LLM_UNAVAILABLE,
        ErrorKind.INTERNAL,
        ErrorKind.LOW_CONFIDENCE,
    }
    with pytest.raises(UserError, match=r"unknown kind 'llm_down' \(allowed: malformed_json, schema_invalid"):
        parse_error_kinds(["llm_down"])


def test_fresh_event_id_only_for_json_objects_with_one() -> None:
    value, old = with_fresh_event_id(b'{"event_id": "e1", "ticket_id": "T"}', "new")
    assert orjson.loads(value) == {"event_id": "new", "ticket_id": "T"} and old == "e1"
    for untouched in (b'{"ticket_id": "T"}', b"[1, 2]", b"\xff\xfe not json"):
        assert with_fresh_event_id(untouched, "new") == (untouched, None)


def test_replay_record_keeps_key_and_bytes_and_records_its_origin() -> None:
    record = triage(3, ErrorKind.LOW_CONFIDENCE)
    replay = build_replay(record, Position("triage", 2, 17), NOW, "fresh-id")
    headers = dict(replay.headers)
    assert replay.key == b"T-0003"
    assert orjson.loads(replay.value)["event_id"] == "fresh-id"
    assert replay.old_event_id == orjson.loads(record.original_value)["event_id"]
    assert headers[HEADER_FROM] == b"triage/2/17"
    assert headers[HEADER_KIND] == b"low_confidence"
    assert headers[HEADER_AT] == NOW.isoformat().encode()
    assert headers[HEADER_ORIGINAL] == b"tickets/1/103"
    assert headers[HEADER_ORIGINAL_EVENT_ID] == replay.old_event_id.encode()
    binary = build_replay(triage(4, ErrorKind.MALFORMED_JSON, b"\xff\x00"), Position("t", 0, 0), NOW, "x")
    assert binary.value == b"\xff\x00" and binary.new_event_id is None
    with pytest.raises(NotReplayable, match="truncated"):
        build_replay(record.model_copy(update={"original_truncated": True}), Position("t", 0, 1), NOW, "x")


def test_plan_filters_by_kind_and_counts_what_it_skips() -> None:
    raws: list[tuple[Position, bytes | None]] = [
        (Position("t", 0, 0), encode(triage(1, ErrorKind.LLM_UNAVAILABLE))),
        (Position("t", 0, 1), encode(triage(2, ErrorKind.SCHEMA_INVALID))),
        (Position("t", 0, 2), b"not a triage record"),
        (
            Position("t", 0, 3),
            encode(triage(3, ErrorKind.LLM_UNAVAILABLE).model_copy(update={"original_truncated": True})),
        ),
    ]
    plan = plan_replays(raws, frozenset({ErrorKind.LLM_UNAVAILABLE}), lambda: NOW, counter_ids())
    assert [str(r.triage) for r in plan.replays] == ["t/0/0"]
    assert (plan.read, plan.filtered_out, len(plan.not_replayable)) == (4, 1, 1)
    assert plan.undecodable == ["t/0/2: not a TriageRecord"]


# ---------------------------------------------------------------------------- on the broker


def read_topic(
    bootstrap: str, topic: str, partitions: int, expected: int, timeout_s: float = 15.0
) -> list[Any]:
    """Every record of ``topic`` from offset 0 by manual assignment (no group join to wait for)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique("reader"), "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    received: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(received) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                received.append(msg)
    finally:
        consumer.close()
    return received


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.integration
def test_publish_jsonl_keys_by_ticket_id(
    bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = unique("pub-jsonl")
    create_topics(bootstrap, [topic])
    events = [ticket(i) for i in range(12)]
    path = tmp_path / "tickets.jsonl"
    path.write_bytes(b"\n".join(encode(event) for event in events) + b"\n")
    status, out, err = run(["publish", str(path), "--topic", topic, "--bootstrap", bootstrap], capsys)
    assert status == 0, err
    assert "total" in out and "12" in out  # the per-partition table
    records = read_topic(bootstrap, topic, 3, 12)
    assert sorted(msg.key() for msg in records) == sorted(e.ticket_id.encode() for e in events)
    for msg in records:
        assert TicketEvent.model_validate_json(msg.value()).ticket_id == msg.key().decode()


@pytest.mark.integration
def test_publish_csv_with_mapping(bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    topic = unique("pub-csv")
    create_topics(bootstrap, [topic])
    path = tmp_path / "export.csv"
    path.write_text(
        "Id,Title,Description,Plan\n"
        'HD-1,Refund please,"Charged twice,\nplease refund",Starter\n'
        "HD-2,Login broken,SSO fails since 9am,enterprise\n"
        ",No id,Generated id expected,\n",
        encoding="utf-8",
    )
    argv = ["publish", str(path), "--map", "ticket_id=Id,subject=Title,body=Description,account_tier=Plan"]
    status, _, err = run([*argv, "--channel", "chat", "--topic", topic, "--bootstrap", bootstrap], capsys)
    assert status == 0, err
    events = {
        msg.key().decode(): TicketEvent.model_validate_json(msg.value())
        for msg in read_topic(bootstrap, topic, 3, 3)
    }
    assert events["HD-1"].body == "Charged twice,\nplease refund"
    assert events["HD-1"].account_tier is AccountTier.STARTER and events["HD-2"].channel is Channel.CHAT
    (generated,) = [event for key, event in events.items() if not key.startswith("HD-")]
    assert generated.subject == "No id" and generated.account_tier is AccountTier.PRO


@pytest.mark.integration
def test_publish_50_samples(bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    topic = unique("pub-sample")
    create_topics(bootstrap, [topic])
    status, _, err = run(
        ["publish", "--sample", "50", "--seed", "3", "--topic", topic, "--bootstrap", bootstrap], capsys
    )
    assert status == 0, err
    received = consume_until(bootstrap, [topic], 50, timeout_s=20)
    assert len(received) == 50
    for record in received:
        event = TicketEvent.model_validate_json(record.value)
        assert record.key == event.ticket_id.encode()


@pytest.mark.integration
def test_publish_rate_paces(bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    topic = unique("pub-rate")
    create_topics(bootstrap, [topic])
    started = time.monotonic()
    status, _, err = run(
        ["publish", "--sample", "20", "--rate", "40", "--topic", topic, "--bootstrap", bootstrap], capsys
    )
    assert status == 0, err
    assert time.monotonic() - started >= 0.4


@pytest.mark.integration
def test_publish_refuses_invalid_file_and_missing_topic(
    bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(encode(ticket(1)) + b'\n{"ticket_id": "x"}\n')
    status, _, err = run(["publish", str(path), "--bootstrap", bootstrap], capsys)
    assert status == 2 and f"{path}:2: not a valid TicketEvent" in err
    status, _, err = run(
        ["publish", "--sample", "1", "--topic", unique("absent"), "--bootstrap", bootstrap], capsys
    )
    assert status == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


@pytest.mark.integration
def test_tail_json_from_beginning(bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"{unique('tail')}."
    topics = [prefix + "billing-normal", prefix + "urgent-security"]
    create_topics(bootstrap, topics)
    produce(
        bootstrap, topics[0], [(f"T-{i:04d}".encode(), encode(routed(i, "billing-normal"))) for i in range(4)]
    )
    produce(bootstrap, topics[1], [(b"T-0009", encode(routed(9, "urgent-security")))])
    argv = [
        "tail",
        "--all",
        "--prefix",
        prefix,
        "--json",
        "--from-beginning",
        "--max",
        "5",
        "--timeout",
        "20",
    ]
    status, out, err = run([*argv, "--bootstrap", bootstrap], capsys)
    assert status == 0, err
    tickets = [RoutedTicket.model_validate_json(line) for line in out.splitlines()]
    assert sorted(t.ticket.ticket_id for t in tickets) == ["T-0000", "T-0001", "T-0002", "T-0003", "T-0009"]


@pytest.mark.integration
def test_tail_without_from_beginning_shows_only_new_records(bootstrap: str) -> None:
    prefix = f"{unique('tailnew')}."
    topic = prefix + "billing-normal"
    create_topics(bootstrap, [topic])
    # Several records per partition in one batch: Tansu's "latest" offset would replay some of them.
    produce(bootstrap, topic, [(f"OLD-{i}".encode(), encode(routed(i, "billing-normal"))) for i in range(12)])
    argv = ["--queue", "billing-normal", "--prefix", prefix, "--json", "--max", "3", "--timeout", "20"]
    tail = subprocess.Popen(
        [sys.executable, "-m", "producer_tools.cli", "tail", *argv, "--bootstrap", bootstrap],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert tail.stderr is not None
        ready = tail.stderr.readline().decode()
        assert "following" in ready and "new records only" in ready
        produce(
            bootstrap,
            topic,
            [(f"NEW-{i}".encode(), encode(routed(100 + i, "billing-normal"))) for i in range(3)],
        )
        out, _ = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert tail.returncode == 0
    ids = sorted(RoutedTicket.model_validate_json(line).ticket.ticket_id for line in out.splitlines())
    assert ids == ["T-0100", "T-0101", "T-0102"]


@pytest.mark.integration
def test_replay_filters_refreshes_event_id_and_sets_headers(
    bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    triage_topic, target, dry_target = unique("triage"), unique("replayed"), unique("dry")
    create_topics(bootstrap, [triage_topic, target])
    create_topics(bootstrap, [dry_target], partitions=1)
    kinds = [ErrorKind.LLM_UNAVAILABLE] * 3 + [ErrorKind.SCHEMA_INVALID] * 2 + [ErrorKind.LOW_CONFIDENCE]
    records = [triage(i, kind) for i, kind in enumerate(kinds)]
    produce(
        bootstrap,
        triage_topic,
        [(r.original_key.encode() if r.original_key else None, encode(r)) for r in records],
    )
    base = ["replay", "--triage-topic", triage_topic, "--error-kind", "llm_unavailable"]
    base += ["--error-kind", "low_confidence", "--timeout", "20", "--bootstrap", bootstrap]

    status, out, err = run([*base, "--topic", dry_target, "--dry-run"], capsys)
    assert status == 0, err
    assert out.count("would replay") == 4 and "would replay 4 records" in err
    produce(bootstrap, dry_target, [(b"sentinel", b"{}")])
    (first,) = read_topic(bootstrap, dry_target, 1, 1)
    assert first.key() == b"sentinel"  # the dry run published nothing

    status, _, err = run([*base, "--topic", target], capsys)
    assert status == 0, err
    assert "replayed 4 records" in err and "llm_unavailable: 3" in err
    originals = {r.ticket_id: r for r in records}
    replayed = read_topic(bootstrap, target, 3, 4)
    assert len(replayed) == 4
    for msg in replayed:
        event = TicketEvent.model_validate_json(msg.value())
        original = TicketEvent.model_validate_json(originals[event.ticket_id].original_value)
        headers = dict(msg.headers())
        assert msg.key() == event.ticket_id.encode()
        assert event.event_id != original.event_id
        assert event.model_copy(update={"event_id": original.event_id}) == original
        assert headers[HEADER_KIND].decode() == originals[event.ticket_id].error_kind.value
        assert headers[HEADER_FROM].decode().startswith(f"{triage_topic}/")
        assert headers[HEADER_ORIGINAL_EVENT_ID].decode() == original.event_id
        assert datetime.fromisoformat(headers[HEADER_AT].decode()).tzinfo is not None


@pytest.mark.integration
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "--error-kind", "llm_down"], "unknown kind 'llm_down' (allowed: malformed_json"),
        (["publish", "/no/such/file.jsonl"], "cannot read /no/such/file.jsonl: No such file or directory"),
        (["publish", "x.csv", "--map", "subjct=Title"], "--map: unknown field 'subjct'"),
        (["tail", "--queue", "no-such-queue"], "no queue topic 'no-such-queue'"),
    ],
)
def test_user_mistakes_are_one_line_exit_2(
    bootstrap: str, tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "x.csv" in argv:
        (tmp_path / "x.csv").write_text("Title,Text\na,b\n", encoding="utf-8")
        argv = [str(tmp_path / "x.csv") if arg == "x.csv" else arg for arg in argv]
    status, _, err = run([*argv, "--bootstrap", bootstrap], capsys)
    assert status == 2
    assert err.strip().splitlines() == [err.strip()] and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["publish", "--sample", "1", "--bootstrap", "127.0.0.1:1"],
        ["replay", "--error-kind", "nonsense", "--bootstrap", "127.0.0.1:1"],
    ],
)
def test_cli_process_prints_one_line_and_exits_2(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "producer_tools.cli", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ticket-tools: error: "), done.stderr
    assert "Traceback" not in done.stderr
    if "publish" in argv:
        assert "cannot reach Kafka at 127.0.0.1:1" in lines[0]
