"""``ticket-tools publish``: whole events in a dry run, JSON arrays, held-out samples, Ctrl-C (issue 11)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from consumer.errors import UserError
from producer_tools.publish import records_from_json_document
from producer_tools.samples import bundled_texts, generate_samples, held_out_texts
from schemas.codec import encode
from schemas.events import TicketEvent
from tests.kafka_helpers import create_topics, unique
from tests.test_tools_cli import NOW, REPO, run, ticket

SAMPLES_PATH = REPO / "consumer" / "data" / "samples.jsonl"
LONG_BODY = "The export to CSV stops at row 5000 and the file is cut mid-line. " * 6


# ---------------------------------------------------------------------------- --dry-run


def test_dry_run_prints_every_event_whole_as_json_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "export.csv"
    rows = [f'HD-{i},Export cut,"{LONG_BODY}{i}"' for i in range(12)]
    path.write_text("Id,Title,Description\n" + "\n".join(rows) + "\n", encoding="utf-8")
    status, out, err = run(
        ["publish", str(path), "--map", "ticket_id=Id,subject=Title,body=Description", "--dry-run"], capsys
    )
    assert status == 0, err
    events = [TicketEvent.model_validate_json(line) for line in out.splitlines()]
    assert [event.ticket_id for event in events] == [f"HD-{i}" for i in range(12)]  # all, not the first 10
    assert all(event.body == f"{LONG_BODY}{i}" for i, event in enumerate(events))  # not cut at 100
    assert "dry run: 12 records from" in err and "would be published to 'tickets'" in err


# ---------------------------------------------------------------------------- JSON arrays


def test_a_json_array_is_one_record_per_item() -> None:
    events = [ticket(1), ticket(2)]
    raw = b"[\n  " + b",\n  ".join(encode(event) for event in events) + b"\n]\n"
    records = records_from_json_document(raw, "t.json", validate=True)
    assert [(r.line, r.unit, r.key) for r in records] == [(1, "item", b"T-0001"), (2, "item", b"T-0002")]
    assert [TicketEvent.model_validate_json(r.value) for r in records] == events


def test_a_json_array_names_the_bad_item_and_publishes_nothing() -> None:
    raw = orjson.dumps([orjson.loads(encode(ticket(1))), {"ticket_id": "x"}, 3])
    with pytest.raises(
        UserError, match=r"t.json item 2: not a valid TicketEvent: .*and 1 more invalid items"
    ):
        records_from_json_document(raw, "t.json", validate=True)
    unchecked = records_from_json_document(raw, "t.json", validate=False)
    assert [r.key for r in unchecked] == [b"T-0001", b"x", None]


def test_a_json_file_may_also_hold_one_event_or_json_lines() -> None:
    one = records_from_json_document(encode(ticket(1)), "one.json", validate=True)
    lines = records_from_json_document(encode(ticket(1)) + b"\n" + encode(ticket(2)), "l.json", True)
    assert [r.key for r in one] == [b"T-0001"]
    assert [(r.line, r.unit) for r in lines] == [(1, "line"), (2, "line")]
    with pytest.raises(UserError, match="expected a JSON array of TicketEvents, found a str"):
        records_from_json_document(b'"tickets"', "s.json", validate=True)


def test_publish_reads_a_json_array_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tickets.json"
    path.write_bytes(
        orjson.dumps([orjson.loads(encode(ticket(i))) for i in range(3)], option=orjson.OPT_INDENT_2)
    )
    status, out, err = run(["publish", str(path), "--dry-run", "--topic", "t"], capsys)
    assert status == 0, err
    assert [TicketEvent.model_validate_json(line).ticket_id for line in out.splitlines()] == [
        "T-0000",
        "T-0001",
        "T-0002",
    ]


# ---------------------------------------------------------------------------- --sample texts


def test_samples_use_texts_the_local_tier_was_not_trained_on() -> None:
    trained = {text.body for text in bundled_texts()}
    held_out = held_out_texts()
    assert len(held_out) >= 30 and not {text.body for text in held_out} & trained
    samples = generate_samples(300, seed=5, now=NOW)
    assert not {event.body for event in samples} & trained
    assert {event.body for event in samples if not event.subject.startswith("Re: ")} <= {
        text.body for text in held_out
    }


def test_samples_take_only_new_tickets_from_the_demo_events() -> None:
    """A follow-up ("RE: …, thanks for the detail") is not a ticket text of its own."""
    rows = [orjson.loads(line) for line in SAMPLES_PATH.read_bytes().splitlines() if line.strip()]
    created = {row["ticket_id"] for row in rows if row["event_type"] == "ticket.created"}
    assert len(created) < len(rows)
    assert sorted(text.source_id for text in held_out_texts()) == sorted(created)


# ---------------------------------------------------------------------------- Ctrl-C


def wait_for_records(bootstrap: str, topic: str, count: int, timeout_s: float = 30.0) -> None:
    """Block until ``count`` records of ``topic`` are readable: the publisher is mid-way."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("probe")})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < count and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                seen += 1
    finally:
        consumer.close()
    assert seen >= count, f"only {seen} records appeared in {topic}"


def read_to_end(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every record of a one-partition topic, up to the high watermark (partition EOF), no guessing."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique("reader"), "enable.partition.eof": True}
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            if msg.error() is not None and msg.error().code() == KafkaError._PARTITION_EOF:
                return records
            if msg.error() is None:
                records.append(msg)
    finally:
        consumer.close()
    raise AssertionError(f"no end of {topic} within {timeout_s}s")


@pytest.mark.integration
def test_ctrl_c_stops_flushes_and_reports_what_was_acknowledged(bootstrap: str) -> None:
    topic = unique("pub-sigint")
    create_topics(bootstrap, [topic], partitions=1)
    argv = ["publish", "--sample", "200", "--rate", "20", "--topic", topic, "--bootstrap", bootstrap]
    publisher = subprocess.Popen(
        [sys.executable, "-m", "producer_tools.cli", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_records(bootstrap, topic, 3)
        publisher.send_signal(signal.SIGINT)
        out, err = publisher.communicate(timeout=30)
    finally:
        publisher.kill()
    assert publisher.returncode == 130, err
    assert "Traceback" not in err
    summary = re.search(r"interrupted: published (\d+) of 200 records \(acknowledged by the broker\)", err)
    assert summary is not None, err
    acknowledged = int(summary.group(1))
    assert 3 <= acknowledged < 200
    assert f"{200 - acknowledged} not published" in err
    assert len(read_to_end(bootstrap, topic)) == acknowledged
    assert "total" in out  # the per-partition table is printed as after a full run
