"""``ticket-tools backfill`` end to end: the real SDK against the fake's Message Batches endpoints.

The issue's "done when": a 20,000-ticket file backfills in two batches, survives a kill in the
middle (the CLI is a subprocess, killed once the state file shows a submitted batch) and a restart
that submits nothing twice (the fake records every batch created), and reports the 50% saving.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.routing import reachable_queues
from consumer.taxonomy import load_taxonomy
from producer_tools.backfill_plan import index_of
from producer_tools.backfill_state import load_state
from producer_tools.cli import main
from producer_tools.fake_api import Scenario, ThreadedFakeApi, run_in_thread
from schemas.events import RoutedTicket, TriageRecord
from tests.kafka_helpers import consume_until, create_topics, produce, router_settings

FAST = "claude-haiku-5-5"
STRONG = "claude-sonnet-5-5"
STATE_WAIT_S = 120.0


def ticket_line(index: int, author_role: str = "customer") -> bytes:
    """One TicketEvent as a JSONL line (built as a dict: 20,000 of them must be quick to write)."""
    return orjson.dumps(
        {
            "event_id": f"E-{index}",
            "event_type": "ticket.created",
            "ticket_id": f"T-{index}",
            "subject": "Invoice question",
            "body": f"Hello, ticket number {index}: I was charged twice for my subscription this month.",
            "account_tier": "pro",
            "customer_id": "C-1",
            "channel": "web",
            "created_at": "2026-11-30T09:00:00Z",
            "author_role": author_role,
        }
    )


def write_tickets(path: Path, count: int) -> Path:
    path.write_bytes(b"\n".join(ticket_line(index) for index in range(count)) + b"\n")
    return path


def environment(api: ThreadedFakeApi) -> dict[str, str]:
    """The CLI's settings: the fake API, and no retrieved examples (their per-ticket encoding would
    dominate a 20,000-ticket test; the request is otherwise the live one)."""
    return {
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": api.base_url,
        "RETRIEVED_EXAMPLES": "0",
        "TIERS": "fast,strong",
        "NON_ENGLISH_TO_STRONG": "false",
    }


@pytest.fixture
def api() -> Iterator[ThreadedFakeApi]:
    with run_in_thread(Scenario()) as fake:
        yield fake


def scenario(
    fast: dict[str, Any] | None = None, strong: dict[str, Any] | None = None, **batches: Any
) -> Scenario:
    return Scenario.model_validate({"models": {FAST: fast or {}, STRONG: strong or {}}, "batches": batches})


def lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()] if path.exists() else []


def backfill(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "producer_tools.cli", "backfill", *args]
    return subprocess.Popen(
        command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_a_submitted_batch(state: Path, process: subprocess.Popen[str]) -> None:
    """Returns once the state file names a batch: the event the kill must follow."""
    deadline = time.monotonic() + STATE_WAIT_S
    while time.monotonic() < deadline:
        saved = load_state(state) if state.exists() else None
        if saved is not None and saved.batches:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("no batch was submitted in time")


def test_twenty_thousand_tickets_in_two_batches_survive_a_kill_and_report_the_saving(
    tmp_path: Path, api: ThreadedFakeApi
) -> None:
    api.set_scenario(scenario(processing_delay_s=3.0))
    source = write_tickets(tmp_path / "backlog.jsonl", 20_000)
    out, state = tmp_path / "routed.jsonl", tmp_path / "state.json"
    args = [
        str(source),
        "--out",
        str(out),
        "--state",
        str(state),
        "--batch-size",
        "10000",
        "--poll-interval",
        "0.2",
    ]
    first = backfill(args, environment(api))
    wait_for_a_submitted_batch(state, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    submitted_before_kill = [c["id"] for c in api.batch_creations()]
    assert 1 <= len(submitted_before_kill) <= 2

    second = backfill(args, environment(api))
    _, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr

    creations = api.batch_creations()
    assert [c["request_count"] for c in creations] == [10_000, 10_000]  # nothing was submitted twice
    assert creations[: len(submitted_before_kill)] == [
        c for c in creations if c["id"] in submitted_before_kill
    ]
    custom_ids = [custom_id for c in creations for custom_id in c["custom_ids"]]
    assert sorted(index_of(custom_id) for custom_id in custom_ids) == list(range(20_000))
    routed = [RoutedTicket.model_validate_json(line) for line in lines(out)]
    assert sorted(int(r.ticket.ticket_id[2:]) for r in routed) == list(range(20_000))
    assert {r.model_used for r in routed} == {FAST}
    assert "20000 tickets, 2 batches (fast#1: 2)" in stderr
    assert "(saved $" in stderr and ", 50%)" in stderr


def test_escalations_retries_and_triage_give_every_ticket_one_outcome(
    tmp_path: Path, api: ThreadedFakeApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api.set_scenario(
        scenario(
            fast={"low_confidence_rate": 0.3},
            strong={
                "low_confidence_rate": 0.1,
                "refusal_rate": 0.1,
            },  # the same texts' hash: a subset of fast's
            error_rate=0.2,
            expire_rate=0.1,
        )
    )
    count = 300
    source = tmp_path / "backlog.jsonl"
    source.write_bytes(
        b"\n".join([*(ticket_line(index) for index in range(count - 1)), ticket_line(count - 1, "agent")])
        + b"\n"
    )
    for name, value in environment(api).items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "routed.jsonl"
    status = main(["backfill", str(source), "--out", str(out), "--poll-interval", "0.05"])
    assert status == 0, capsys.readouterr().err

    routed = [RoutedTicket.model_validate_json(line) for line in lines(out)]
    triaged = [
        TriageRecord.model_validate_json(line) for line in lines(tmp_path / "routed.jsonl.triage.jsonl")
    ]
    routed_ids = {r.ticket.ticket_id for r in routed}
    triaged_ids = {t.ticket_id for t in triaged}
    assert len(routed) == len(routed_ids) and len(triaged) == len(triaged_ids)
    assert not routed_ids & triaged_ids
    assert routed_ids | triaged_ids == {
        f"T-{index}" for index in range(count - 1)
    }  # the agent reply is skipped
    assert any(r.escalated and r.tiers_tried == ["fast", "strong"] and r.model_used == STRONG for r in routed)
    kinds = {t.error_kind.value for t in triaged}
    assert kinds <= {"low_confidence", "llm_unavailable", "llm_invalid_output"} and "low_confidence" in kinds
    assert all(t.message and t.tiers_tried for t in triaged)
    retried = [r for r in routed if r.tier_attempts[0].attempts == 2]
    assert retried and all(r.tiers_tried[0] == "fast" for r in retried)  # a retry is not an escalation
    assert all(len(set(r.tiers_tried)) == len(r.tiers_tried) for r in routed)
    saved = load_state(Path(f"{out}.state.json"))
    assert saved is not None
    assert {(b.tier, b.attempt) for b in saved.batches} >= {("fast", 1), ("fast", 2), ("strong", 1)}
    assert sum(1 for outcome in saved.outcomes.values() if outcome == "skipped") == 1
    err = capsys.readouterr().err
    assert f"{count} tickets" in err and ", 50%)" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give either a SOURCE file or --topic T"),
        (["x.jsonl", "--batch-size", "0"], "--batch-size must be between 1 and 100000"),
        (["x.jsonl", "--from-offset", "3"], "select records of --topic"),
    ],
)
def test_user_mistakes_are_one_line_and_status_two(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backfill", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_state_file_of_another_backfill_is_refused(
    tmp_path: Path, api: ThreadedFakeApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in environment(api).items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "routed.jsonl"
    assert (
        main(
            [
                "backfill",
                str(write_tickets(tmp_path / "a.jsonl", 3)),
                "--out",
                str(out),
                "--poll-interval",
                "0.05",
            ]
        )
        == 0
    )
    capsys.readouterr()
    other = write_tickets(tmp_path / "b.jsonl", 4)
    assert main(["backfill", str(other), "--out", str(out)]) == 2
    assert "belongs to another backfill" in capsys.readouterr().err


@pytest.mark.integration
def test_a_topic_range_is_backfilled_and_published_to_the_queue_topics(
    tmp_path: Path,
    api: ThreadedFakeApi,
    bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--topic T --from-offset/--to-offset`` reads a range of every partition; ``--publish``
    sends each outcome to its queue topic (checked with the independent client)."""
    settings = router_settings(bootstrap)
    create_topics(bootstrap, [settings.input_topic], partitions=1)
    produce(bootstrap, settings.input_topic, [(f"T-{n}".encode(), ticket_line(n)) for n in range(30)])
    for name, value in {
        **environment(api),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "QUEUE_TOPIC_PREFIX": settings.queue_topic_prefix,
        "TRIAGE_TOPIC": settings.triage_topic,
    }.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "q.jsonl"
    argv = ["backfill", "--topic", settings.input_topic, "--from-offset", "5", "--to-offset", "25"]
    status = main([*argv, "--publish", "--out", str(out), "--poll-interval", "0.05"])
    assert status == 0, capsys.readouterr().err

    topics = [settings.queue_topic_prefix + queue for queue in reachable_queues(load_taxonomy())]
    expected = {f"T-{n}".encode() for n in range(5, 25)}
    received = consume_until(bootstrap, [*topics, settings.triage_topic], len(expected), 60.0, expected)
    assert {record.key for record in received} == expected  # offsets 5..24, nothing outside the range
    on_queues = [(RoutedTicket.model_validate_json(r.value), r.topic) for r in received if r.topic in topics]
    assert on_queues, "nothing was routed"
    for routed, topic in on_queues:
        assert topic == settings.queue_topic_prefix + routed.queue
        assert routed.source.topic == settings.input_topic and 5 <= routed.source.offset < 25
    assert "20 tickets" in capsys.readouterr().err
