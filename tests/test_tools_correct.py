"""``ticket-tools correct`` (issue 13, item 1): mapping and CSV parsing as pure functions, the
command's one-line refusals, and corrections published to the real broker and read back with an
independent client (confluent-kafka)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from consumer.errors import UserError
from consumer.taxonomy import load_taxonomy
from producer_tools.correct import (
    Columns,
    RowDefaults,
    complete_columns,
    corrections_from_csv,
    describe_counts,
    field_counts,
    parse_columns,
    parse_label_map,
    parse_set,
)
from schemas.corrections import Correction, CorrectionSource
from tests.kafka_helpers import create_topics, unique
from tests.test_tools_cli import REPO, read_topic, run

TAXONOMY = load_taxonomy()
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
DEFAULTS = RowDefaults(CorrectionSource.IMPORT, "importer", NOW)
MAP = "event_id=Event,ticket_id=Ticket,team=Assigned Group,urgency=Prio,subject=Title,body=Description"
EXPORT = (
    "Event,Ticket,Assigned Group,Prio,Title,Description\n"
    'e-1,T-1,Billing Ops,High,Refund,"Charged twice,\nplease refund"\n'
    "e-2,T-2,Security,,Phish,Got a phishing mail\n"
    "e-3,T-3,Tier 2,critical,,\n"
)
LABEL_MAP = ["team:Billing Ops=billing", "team:Tier 2=infrastructure"]


def import_csv(text: str, spec: str = MAP, label_map: list[str] = LABEL_MAP) -> list[Correction]:
    columns = parse_columns([spec], TAXONOMY)
    return corrections_from_csv(
        text, "r.csv", columns, parse_label_map(label_map, TAXONOMY), DEFAULTS, TAXONOMY
    )


# ---------------------------------------------------------------------------- pure: flags and mapping


def test_set_parses_axis_label_pairs() -> None:
    assert parse_set(["team=billing", " urgency = high "]) == {"team": "billing", "urgency": "high"}
    with pytest.raises(UserError, match=r"^--set: expected AXIS=LABEL, got 'team'$"):
        parse_set(["team"])
    with pytest.raises(UserError, match=r"^--set: axis 'team' is set twice$"):
        parse_set(["team=billing", "team=security"])


def test_map_sorts_fields_from_axes() -> None:
    columns = parse_columns([MAP, "labels.sentiment=Mood,actor=Changed By"], TAXONOMY)
    assert columns.fields == {
        "event_id": "Event",
        "ticket_id": "Ticket",
        "subject": "Title",
        "body": "Description",
        "actor": "Changed By",
    }
    assert columns.axes == {"team": "Assigned Group", "urgency": "Prio", "sentiment": "Mood"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tem=Group", "--map: unknown field 'tem' (fields: event_id, ticket_id, queue"),
        ("team", "--map: expected FIELD=COLUMN or AXIS=COLUMN, got 'team'"),
        ("team=A,labels.team=B", "--map: 'team' is mapped twice"),
        ("source=Kind", "--map: unknown field 'source'"),  # the flag says who corrected, not a column
    ],
)
def test_bad_map_is_one_clear_line(spec: str, message: str) -> None:
    with pytest.raises(UserError) as caught:
        parse_columns([spec], TAXONOMY)
    assert str(caught.value).startswith(message)


def test_columns_named_like_a_field_or_axis_need_no_mapping() -> None:
    header = ["event_id", "ticket_id", "team", "Prio"]
    full = complete_columns(parse_columns(["urgency=Prio"], TAXONOMY), header, TAXONOMY)
    assert full == Columns(
        {"event_id": "event_id", "ticket_id": "ticket_id"}, {"team": "team", "urgency": "Prio"}
    )


@pytest.mark.parametrize(
    ("spec", "header", "message"),
    [
        ("team=Group", ["event_id", "ticket_id"], "--map: no column 'Group' in the CSV header"),
        (
            "team=Group",
            ["event_id", "Group"],
            "CSV: no column for 'ticket_id'; map one with --map ticket_id=",
        ),
        ("event_id=E", ["E", "ticket_id", "Note"], "CSV: no column for any axis (team, ticket_type"),
    ],
)
def test_missing_columns_are_named(spec: str, header: list[str], message: str) -> None:
    with pytest.raises(UserError) as caught:
        complete_columns(parse_columns([spec], TAXONOMY), header, TAXONOMY)
    assert str(caught.value).startswith(message)


def test_label_map_translates_help_desk_names_and_checks_the_labels() -> None:
    table = parse_label_map([*LABEL_MAP, "team:A=B group=product"], TAXONOMY)
    assert table == {"team": {"Billing Ops": "billing", "Tier 2": "infrastructure", "A=B group": "product"}}
    with pytest.raises(UserError, match=r"'biling' is not a label of axis 'team' \(allowed: billing, "):
        parse_label_map(["team:Billing Ops=biling"], TAXONOMY)
    with pytest.raises(
        UserError, match=r"unknown axis 'tem' \(axes: team, ticket_type, urgency, sentiment\)"
    ):
        parse_label_map(["tem:Billing Ops=billing"], TAXONOMY)
    with pytest.raises(
        UserError, match=r"^--label-map: expected AXIS:NAME=LABEL, got 'Billing Ops=billing'$"
    ):
        parse_label_map(["Billing Ops=billing"], TAXONOMY)
    with pytest.raises(UserError, match=r"team:Tier 2 maps to both 'infrastructure' and 'product'"):
        parse_label_map([*LABEL_MAP, "team:Tier 2=product"], TAXONOMY)


# ---------------------------------------------------------------------------- pure: CSV rows


def test_rows_become_corrections_of_the_axes_they_fill() -> None:
    corrections = import_csv(EXPORT)
    assert [(c.event_id, c.ticket_id, c.labels) for c in corrections] == [
        ("e-1", "T-1", {"team": "billing", "urgency": "high"}),  # mapped name; "High" lower-cased
        ("e-2", "T-2", {"team": "security"}),  # an empty cell leaves the axis uncorrected
        ("e-3", "T-3", {"team": "infrastructure", "urgency": "critical"}),
    ]
    first = corrections[0]
    assert first.body == "Charged twice,\nplease refund" and first.subject == "Refund"
    assert (first.source, first.actor, first.corrected_at) == (CorrectionSource.IMPORT, "importer", NOW)
    assert corrections[2].body is None and corrections[2].subject == ""
    assert describe_counts(field_counts(corrections), TAXONOMY.axis_names) == "team 3, urgency 2"


def test_time_actor_and_queue_columns_override_the_defaults() -> None:
    text = (
        "Event,Ticket,Queue,When,Who\n"
        "e-1,T-1,urgent-security,2026-11-02T10:00:00+01:00,lead-7\n"
        "e-2,T-2,billing-high,,\n"
    )
    corrections = import_csv(text, "event_id=Event,ticket_id=Ticket,queue=Queue,corrected_at=When,actor=Who")
    assert corrections[0].corrected_at == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    assert (corrections[0].actor, corrections[0].queue, corrections[0].labels) == (
        "lead-7",
        "urgent-security",
        {},
    )
    assert (corrections[1].actor, corrections[1].corrected_at) == ("importer", NOW)
    assert describe_counts(field_counts(corrections), TAXONOMY.axis_names) == "queue 2"


def test_a_queue_cell_must_be_a_queue_of_the_taxonomy() -> None:
    text = "Event,Ticket,Queue\ne-1,T-1,Billing Tier 2\n"
    with pytest.raises(UserError) as caught:
        import_csv(text, "event_id=Event,ticket_id=Ticket,queue=Queue", [])
    assert str(caught.value).startswith(
        "r.csv row 1 (line 2): column 'Queue': 'Billing Tier 2' is not a queue of the taxonomy "
        "(queues: billing-high, billing-low, "
    )


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            "e-9,T-9,Tier 3,high,,",
            "r.csv row 3 (line 5): column 'Assigned Group': 'Tier 3' is not a label of axis 'team' "
            "(allowed: billing, infrastructure, product, security, onboarding, general; "
            "translate help-desk names with --label-map team:NAME=LABEL) (nothing was published)",
        ),
        (
            "e-9,T-9,,,,",
            "r.csv row 3 (line 5): nothing to correct: every label column is empty and there is no "
            "queue (Assigned Group, Prio) (nothing was published)",
        ),
        (
            ",T-9,Security,,,",
            "r.csv row 3 (line 5): column 'Event': missing (nothing was published)",
        ),
    ],
)
def test_a_bad_row_names_row_line_column_and_allowed_values(row: str, message: str) -> None:
    with pytest.raises(UserError) as caught:
        import_csv(EXPORT.replace("e-3,T-3,Tier 2,critical,,", row))
    assert str(caught.value) == message


def test_every_bad_row_is_counted_and_the_first_named() -> None:
    text = EXPORT + "e-4,T-4,Nobody,,,\ne-5,T-5,,yesterday,,\n"
    with pytest.raises(UserError) as caught:
        import_csv(text, label_map=[])
    assert str(caught.value).startswith("r.csv row 1 (line 2): column 'Assigned Group': 'Billing Ops' is not")
    assert str(caught.value).endswith("(and 3 more invalid rows; nothing was published)")


def test_a_time_without_a_zone_names_its_column() -> None:
    text = "Event,Ticket,team,When\ne-1,T-1,billing,2026-11-02 10:00\n"
    with pytest.raises(UserError, match=r"^r.csv row 1 \(line 2\): column 'When': .*timezone"):
        import_csv(text, "event_id=Event,ticket_id=Ticket,corrected_at=When", [])


def test_a_header_alone_corrects_nothing() -> None:
    with pytest.raises(UserError, match=r"^r.csv: no rows after the header: nothing to correct$"):
        import_csv(EXPORT.splitlines()[0] + "\n")


# ---------------------------------------------------------------------------- the command, no broker


def write_export(tmp_path: Path) -> Path:
    path = tmp_path / "reassignments.csv"
    path.write_text(EXPORT, encoding="utf-8")
    return path


def csv_argv(path: Path) -> list[str]:
    label_maps = [arg for spec in LABEL_MAP for arg in ("--label-map", spec)]
    return ["correct", "--csv", str(path), "--map", MAP, *label_maps, "--actor", "importer"]


def test_dry_run_prints_each_correction_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No broker listens on port 1: a dry run that tried to connect would fail.
    status, out, err = run(
        [*csv_argv(write_export(tmp_path)), "--dry-run", "--bootstrap", "127.0.0.1:1"], capsys
    )
    assert status == 0, err
    corrections = [Correction.model_validate_json(line) for line in out.splitlines()]
    assert [c.ticket_id for c in corrections] == ["T-1", "T-2", "T-3"]
    assert all(c.source is CorrectionSource.IMPORT for c in corrections)  # --csv defaults to import
    assert "dry run: 3 corrections (team 3, urgency 2) from" in err
    assert "would be published to 'ticket-corrections'" in err


def test_one_correction_from_flags(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "correct",
        "--event-id",
        "e-7",
        "--ticket-id",
        "T-7",
        "--set",
        "team=billing",
        "--queue",
        "billing-high",
    ]
    status, out, err = run([*argv, "--actor", "agent-42", "--body", "Refund please", "--dry-run"], capsys)
    assert status == 0, err
    (correction,) = [Correction.model_validate_json(line) for line in out.splitlines()]
    assert (correction.event_id, correction.labels, correction.queue) == (
        "e-7",
        {"team": "billing"},
        "billing-high",
    )
    assert (correction.source, correction.actor, correction.body) == (
        CorrectionSource.AGENT,
        "agent-42",
        "Refund please",
    )
    assert "dry run: 1 correction (team 1, queue 1) from the command line" in err


def test_labels_are_checked_against_the_taxonomy_flag_or_taxonomy_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    custom = tmp_path / "banking.yaml"
    custom.write_text(
        "name: banking\naxes:\n  intent:\n    labels: {refund: r, card_lost: c}\n"
        "routing:\n  - {name: all, when: {}, queue: '{intent}'}\n",
        encoding="utf-8",
    )
    argv = [
        "correct",
        "--event-id",
        "e",
        "--ticket-id",
        "t",
        "--set",
        "intent=refund",
        "--actor",
        "a",
        "--dry-run",
    ]
    status, out, err = run([*argv, "--taxonomy", str(custom)], capsys)
    assert status == 0 and Correction.model_validate_json(out).labels == {"intent": "refund"}, err
    status, _, err = run(argv, capsys)  # the shipped taxonomy has no intent axis
    assert status == 2 and "--set: 'intent' is not an axis of taxonomy 'default-support'" in err
    monkeypatch.setenv("TAXONOMY_PATH", str(custom))
    status, _, err = run(argv, capsys)
    assert status == 0, err


FLAGS = ["correct", "--event-id", "e", "--ticket-id", "t", "--actor", "a"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [*FLAGS, "--set", "team=biling"],
            "--set: 'biling' is not a label of axis 'team' (allowed: billing, ",
        ),
        ([*FLAGS, "--queue", "billing-urgent"], "--queue: 'billing-urgent' is not a queue of taxonomy"),
        (FLAGS, "nothing to correct: give --set AXIS=LABEL (repeatable) or --queue QUEUE"),
        (["correct", "--event-id", "e", "--set", "team=billing", "--actor", "a"], "--ticket-id is required"),
        ([*FLAGS[:-2], "--set", "team=billing"], "--actor is required"),
        ([*FLAGS, "--set", "team=billing", "--actor", "x" * 201], "--actor: String should have at most 200"),
        ([*FLAGS, "--map", "team=Group"], "--map only applies to --csv FILE"),
        (
            ["correct", "--csv", "x.csv", "--set", "team=billing"],
            "--set describes one correction; with --csv",
        ),
        (["correct", "--csv", "/no/such.csv", "--map", MAP, "--actor", "a"], "cannot read /no/such.csv"),
        (["correct", "--csv", "x.csv", "--map", MAP], "--actor is required (who made the corrections)"),
        (
            [*FLAGS, "--set", "team=billing", "--taxonomy", "/no/tax.yaml"],
            "--taxonomy: cannot read /no/tax.yaml",
        ),
    ],
)
def test_user_mistakes_are_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run([*argv, "--dry-run"], capsys)
    assert status == 2
    assert err.strip().splitlines() == [err.strip()] and message in err, err


def test_the_installed_command_refuses_a_bad_row_in_one_line(tmp_path: Path) -> None:
    path = write_export(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "producer_tools.cli",
            "correct",
            "--csv",
            str(path),
            "--map",
            MAP,
            "--actor",
            "i",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"ticket-tools: error: {path} row 1 (line 2): column 'Assigned Group': 'Billing Ops' is not a "
        "label of axis 'team' (allowed: billing, infrastructure, product, security, onboarding, general; "
        "translate help-desk names with --label-map team:NAME=LABEL) (and 1 more invalid rows; nothing was "
        "published)"
    ]


# ---------------------------------------------------------------------------- on the broker


@pytest.mark.integration
def test_an_import_is_published_keyed_by_ticket_and_read_back(
    bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = unique("corrections")
    argv = [*csv_argv(write_export(tmp_path)), "--topic", topic, "--bootstrap", bootstrap]
    status, _, err = run(argv, capsys)
    assert status == 2 and f"topic {topic!r} does not exist on the broker (pass --create-topic" in err
    status, _, err = run([*argv, "--create-topic", "--partitions", "2"], capsys)
    assert status == 0, err
    assert f"published 3 corrections (team 3, urgency 2) from {tmp_path}" in err
    records = read_topic(bootstrap, topic, 2, 3)
    assert len(records) == 3 and {msg.partition() for msg in records} <= {0, 1}
    received = {msg.key().decode(): Correction.model_validate_json(msg.value()) for msg in records}
    assert received["T-1"].labels == {"team": "billing", "urgency": "high"}
    assert received["T-3"].labels == {"team": "infrastructure", "urgency": "critical"}
    assert {c.event_id for c in received.values()} == {"e-1", "e-2", "e-3"}
    assert {c.source for c in received.values()} == {CorrectionSource.IMPORT}


@pytest.mark.integration
def test_one_correction_is_published_whole(bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    topic = unique("corrections")
    create_topics(bootstrap, [topic], partitions=1)
    argv = [*FLAGS, "--set", "urgency=critical", "--set", "team=security", "--source", "triage"]
    status, _, err = run(
        [*argv, "--subject", "Leaked key", "--topic", topic, "--bootstrap", bootstrap], capsys
    )
    assert status == 0, err
    assert "published 1 correction (team 1, urgency 1) from the command line" in err
    (record,) = read_topic(bootstrap, topic, 1, 1)
    correction = Correction.model_validate_json(record.value())
    assert record.key() == b"t" and orjson.loads(record.value())["schema_version"] == 1
    assert (correction.labels, correction.source, correction.subject) == (
        {"urgency": "critical", "team": "security"},
        CorrectionSource.TRIAGE,
        "Leaked key",
    )
