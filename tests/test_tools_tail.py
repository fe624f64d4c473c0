"""``ticket-tools tail TOPIC…``: topics named as on the broker, as alert runbooks write them (issue 11)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from confluent_kafka.admin import AdminClient

from consumer.errors import UserError
from producer_tools import cli
from producer_tools.tail import row_for, select_topics
from schemas.codec import encode
from schemas.events import ErrorKind, RoutedTicket
from tests.kafka_helpers import create_topics, produce, unique
from tests.test_tools_cli import REPO, routed, run, triage

RULES = REPO / "deploy" / "k8s" / "prometheus-rules.yaml"
COMMAND = re.compile(r"`(ticket-tools [^`]+)`")


def runbook_commands(path: Path) -> Iterator[tuple[str, str]]:
    """(alert, command) for every ``ticket-tools …`` in backquotes in an alert's annotations."""
    for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        for group in (document or {}).get("spec", {}).get("groups", []):
            for rule in group.get("rules", []):
                for text in rule.get("annotations", {}).values():
                    for command in COMMAND.findall(" ".join(str(text).split())):
                        yield rule.get("alert", "?"), command


def test_positional_topics_are_taken_as_they_are() -> None:
    existing = ["p.billing-normal", "needs-human-triage"]
    assert select_topics(existing, [], False, ["billing-normal"], "p.", None, ["needs-human-triage"]) == [
        "needs-human-triage"
    ]
    assert select_topics(existing, ["billing-normal"], False, [], "p.", None, ["needs-human-triage"]) == [
        "p.billing-normal",
        "needs-human-triage",
    ]
    with pytest.raises(
        UserError, match=r"topic 'billing-normal' does not exist .* --queue takes queue names"
    ):
        select_topics(existing, [], False, ["billing-normal"], "p.", None, ["billing-normal"])


def test_a_triage_record_on_a_named_topic_shows_its_error_kind() -> None:
    record = encode(triage(2, ErrorKind.SCHEMA_INVALID))
    assert row_for("dead-letters", record, "needs-human-triage").labels == "schema_invalid"
    assert row_for("dead-letters", encode(routed(1, "billing-normal")), None).labels == "billing/normal"


def test_the_runbooks_name_ticket_tools_commands_that_parse() -> None:
    commands = list(runbook_commands(RULES))
    assert ("TicketRouterTriageRatioHigh", "ticket-tools tail needs-human-triage") in commands
    parser = cli.build_parser()
    for alert, command in commands:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit:
            pytest.fail(f"{alert}: the runbook's `{command}` is refused by the ticket-tools parser")


@pytest.mark.integration
def test_the_triage_runbook_command_runs(bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    """What the alert tells an operator to type follows the triage topic (for a second here)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if "needs-human-triage" not in admin.list_topics(timeout=10).topics:
        create_topics(bootstrap, ["needs-human-triage"], partitions=1)
    for alert, command in runbook_commands(RULES):
        argv = shlex.split(command)[1:]
        if argv[0] != "tail":
            continue
        status, _, err = run([*argv, "--timeout", "1", "--bootstrap", bootstrap], capsys)
        assert status == 0, f"{alert}: `{command}` failed: {err}"
        assert "following needs-human-triage (1 partitions, new records only)" in err


@pytest.mark.integration
def test_tail_follows_a_topic_named_on_the_command_line(
    bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    queue, dead = unique("p") + ".billing-normal", unique("dead-letters")
    create_topics(bootstrap, [queue, dead], partitions=1)
    produce(bootstrap, queue, [(b"T-0001", encode(routed(1, "billing-normal")))])
    produce(bootstrap, dead, [(b"T-0002", encode(triage(2, ErrorKind.LLM_UNAVAILABLE)))])
    argv = ["tail", queue, "--json", "--from-beginning", "--max", "1", "--timeout", "20"]
    status, out, err = run([*argv, "--bootstrap", bootstrap], capsys)
    assert status == 0, err
    assert RoutedTicket.model_validate_json(out).ticket.ticket_id == "T-0001"
    status, out, err = run(
        ["tail", dead, "--from-beginning", "--max", "1", "--timeout", "20", "--bootstrap", bootstrap], capsys
    )
    assert status == 0, err
    assert out.splitlines()[1].split("\t")[:3] == ["T-0002", dead, "llm_unavailable"]
