"""``ticket-tools tune``: per-axis thresholds from a report's calibration section.

Pure tests on hand-made evidence (the threshold search, support, what a threshold set implies per
tier, the taxonomy edit), then the real chain: ``evaluate --json`` on the bundled labeled set,
``tune --write`` on its report, and the written taxonomy loaded back.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.classify.pipeline import PipelineResult
from consumer.errors import UserError
from consumer.taxonomy import load_taxonomy
from producer_tools.cli import main
from producer_tools.evaluation import thresholds as th
from producer_tools.evaluation.runner import outcome_of
from producer_tools.evaluation.summary import calibration_report
from producer_tools.evaluation.terminal import pct
from schemas.events import AxisPrediction, Classification, ErrorKind, TierAttempt

REPO = Path(__file__).resolve().parents[1]
EVAL_LABELED = REPO / "tests" / "data" / "eval_labeled.jsonl"
SHIPPED = resources.files("consumer.data").joinpath("taxonomy.yaml").read_text("utf-8")


def row(tier: str | None, correct: bool = True, **confidence: float) -> th.CalibrationRow:
    return th.CalibrationRow(tier, confidence, dict.fromkeys(confidence, correct))


def team_rows(tier: str = "fast") -> list[th.CalibrationRow]:
    """40 answers at 0.50 … 0.89: the five at 0.55-0.59 are wrong, and one at 0.65.

    Precision at 0.60 is 29/30 (96.7%), at 0.59 it is 29/31 (93.5%): 0.60 is the lowest
    threshold that meets 95%, with 30 tickets at or above it.
    """
    wrong = {55, 56, 57, 58, 59, 65}
    return [row(tier, hundredths not in wrong, team=hundredths / 100) for hundredths in range(50, 90)]


# --- one axis ---------------------------------------------------------------------------------


def test_the_lowest_threshold_that_meets_the_target_is_proposed() -> None:
    proposal = th.propose_threshold(team_rows(), "team", current=0.75, target=0.95, min_support=20)
    assert proposal.proposed == th.Precision(0.60, support=30, right=29)
    assert proposal.changed and proposal.threshold == 0.60
    assert proposal.current == th.Precision(0.75, support=15, right=15)


def test_no_threshold_meets_the_target_so_the_current_one_is_kept() -> None:
    # every ticket above 0.65 is right, but there are only 24 of them
    proposal = th.propose_threshold(team_rows(), "team", current=0.75, target=0.999, min_support=25)
    assert proposal.proposed is None and not proposal.changed
    assert proposal.threshold == 0.75
    assert "none reaches 0.999" in proposal.note


def test_min_support_refuses_a_precision_measured_on_too_few_tickets() -> None:
    assert th.propose_threshold(team_rows(), "team", 0.75, 0.95, min_support=30).threshold == 0.60
    # 0.60 has 30 tickets at or above it; above 0.65 every ticket is right but there are fewer
    # than 31, and below 0.60 the precision falls short: nothing is proposed.
    refused = th.propose_threshold(team_rows(), "team", 0.75, 0.95, min_support=31)
    assert refused.proposed is None and "≥31" in refused.note
    # With little support demanded, the first point where precision is met is still 0.60.
    assert th.propose_threshold(team_rows(), "team", 0.75, 0.95, min_support=1).threshold == 0.60


def test_precision_equal_to_the_target_meets_it_and_equal_confidence_passes() -> None:
    rows = [row("fast", index != 0, team=0.9) for index in range(20)]  # 19/20 = 0.95
    assert th.propose_threshold(rows, "team", 0.99, 0.95, min_support=20).threshold == 0.9
    assert th.precision_at([(0.9, True)], 0.9).support == 1


def test_nothing_below_the_lowest_confidence_seen_is_proposed() -> None:
    rows = [row("fast", True, team=0.805 + index / 1000) for index in range(20)]
    assert th.propose_threshold(rows, "team", 0.9, 0.9, min_support=20).threshold == 0.80
    assert th.grid_from(0.29)[0] == 0.29 and th.grid_from(0.0)[0] == 0.0 and th.grid_from(1.0) == [1.0]


def test_no_target_keeps_the_axis_and_unanswered_tickets_are_not_evidence() -> None:
    rows = [*team_rows(), row(None, False, team=0.0)]
    assert th.propose_threshold(rows, "team", 0.75, None, 20).note == "no target"
    assert th.propose_threshold(rows, "team", 0.75, 0.95, 20).proposed == th.Precision(0.60, 30, 29)


def test_the_local_tier_and_the_claude_tiers_get_their_own_setting() -> None:
    """The local tier's probabilities are held to ``local_threshold``: its evidence tunes that."""
    rows = [*team_rows("local"), *[row("fast", index % 4 != 0, team=0.9) for index in range(40)]]
    current = th.ThresholdSet({"team": 0.75}, {"team": None})
    proposals = th.propose_all(rows, current, {"team": 0.95}, min_support=20)
    assert [(p.setting, p.tiers, p.threshold) for p in proposals] == [
        ("local_threshold", ("local",), 0.60),
        ("threshold", ("fast",), 0.75),  # 75% right at every threshold: kept
    ]
    assert th.settings_to_write(proposals, current) == {("team", "local_threshold"): 0.60}


def test_a_kept_local_threshold_is_pinned_when_the_threshold_it_followed_moves() -> None:
    rows = [*[row("local", index % 4 != 0, team=0.9) for index in range(40)], *team_rows("fast")]
    current = th.ThresholdSet({"team": 0.75}, {"team": None})
    proposals = th.propose_all(rows, current, {"team": 0.95}, min_support=20)
    assert th.settings_to_write(proposals, current) == {
        ("team", "threshold"): 0.60,
        ("team", "local_threshold"): 0.75,  # the local tier keeps the 0.75 it had
    }


# --- all axes together ------------------------------------------------------------------------


def test_what_a_threshold_set_implies_per_tier_and_overall() -> None:
    rows = [
        row("local", True, team=0.9, urgency=0.9),  # decided, right on both axes
        row("local", True, team=0.7, urgency=0.9),  # team below 0.8: escalates to fast
        th.CalibrationRow("fast", {"team": 0.85, "urgency": 0.95}, {"team": True, "urgency": False}),
        row("fast", True, team=0.5, urgency=0.5),  # below on the last tier: triage
        th.CalibrationRow("fast", {"team": 0.99}, {"team": True}),  # no urgency answer: below
        row(None, False, team=0.0, urgency=0.0),  # no tier answered: triage whatever the thresholds
    ]
    current = th.ThresholdSet({"team": 0.8, "urgency": 0.8}, {"team": None, "urgency": None})
    per_tier, overall = th.implications(rows, current, ["local", "fast"])
    figures = {i.tier: i.as_dict() for i in per_tier}
    assert list(figures) == ["local", "fast", th.NO_ANSWER_TIER]
    assert figures["local"] == {
        "tier": "local",
        "n": 2,
        "coverage": 0.5,
        "accuracy": 1.0,
        "all_axes_correct": 1.0,
        "escalate": 0.5,
        "triage": 0.0,
    }
    assert figures["fast"]["coverage"] == pytest.approx(1 / 3)
    assert figures["fast"]["accuracy"] == 0.5 and figures["fast"]["triage"] == pytest.approx(2 / 3)
    assert figures[th.NO_ANSWER_TIER]["triage"] == 1.0
    assert (overall.n, overall.decided, overall.escalated, overall.triaged) == (6, 2, 1, 3)
    assert overall.accuracy == 0.75 and overall.all_axes_correct == 0.5

    # A local_threshold of 0.6 on team lets the local tier decide its second ticket.
    lowered = current.with_settings({("team", "local_threshold"): 0.6})
    per_tier, overall = th.implications(rows, lowered, ["local", "fast"])
    assert per_tier[0].coverage == 1.0 and per_tier[0].escalated == 0
    assert per_tier[1].coverage == pytest.approx(1 / 3)  # fast is held to threshold, not local_threshold
    assert overall.decided == 3


def test_the_tier_order_comes_from_the_report_or_the_service_order() -> None:
    rows = [row("strong", team=0.9), row("local", team=0.9)]
    assert th.tier_order(["local", "fast", "strong"], rows) == ["local", "fast", "strong"]
    assert th.tier_order(None, rows) == ["local", "strong"]


# --- the calibration section ------------------------------------------------------------------


def attempt(tier: str, outcome: str) -> TierAttempt:
    return TierAttempt.model_validate({"tier": tier, "model": f"{tier}-model", "outcome": outcome})


def test_the_answering_tier_is_kept_when_a_later_tier_fails() -> None:
    """local was not confident, fast was unavailable: the ticket is triaged with local's answer."""
    answer = Classification(axes={"team": AxisPrediction(label="billing", confidence=0.4)})
    result = PipelineResult(
        classification=answer,
        attempts=[attempt("local", "low_confidence"), attempt("fast", "unavailable")],
        error_kind=ErrorKind.LLM_UNAVAILABLE,
    )
    outcome = outcome_of(result, ["team"], latency_ms=1.0)
    assert outcome.final_tier is None and outcome.answer_tier == "local"
    nothing = outcome_of(
        PipelineResult(None, [attempt("fast", "unavailable")], ErrorKind.LLM_UNAVAILABLE), ["team"], 1.0
    )
    assert nothing.answer_tier is None

    from producer_tools.evaluation.dataset import LabeledTicket
    from schemas.events import TicketEvent

    ticket = TicketEvent.model_validate(
        {
            "event_id": "e",
            "event_type": "ticket.created",
            "ticket_id": "t",
            "body": "b",
            "account_tier": "pro",
            "customer_id": "c",
            "channel": "web",
            "created_at": "2026-01-01T00:00:00Z",
        }
    )
    items = [LabeledTicket(ticket=ticket, gold={"team": "billing"}, language="en", account_tier="pro")] * 2
    section = calibration_report(items, [outcome, nothing], ["team"])
    assert section["tickets"] == [
        {"tier": "local", "confidence": {"team": 0.4}, "correct": {"team": True}},
        {"tier": None, "confidence": {"team": 0.0}, "correct": {"team": False}},
    ]


def test_a_report_without_calibration_or_with_a_bad_row_is_refused() -> None:
    with pytest.raises(UserError, match=r"r\.json: no .calibration. section"):
        th.parse_calibration({"n": 3}, "r.json")
    with pytest.raises(UserError, match=r"calibration.tickets\[1\].confidence"):
        th.parse_calibration(
            {"calibration": {"tickets": [{"tier": "local", "confidence": {}, "correct": {}}, {"tier": "x"}]}},
            "r.json",
        )


# --- the taxonomy edit ------------------------------------------------------------------------


def changed_lines(before: str, after: str) -> list[str]:
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and line[:3] not in ("---", "+++")]


def test_the_edit_changes_only_threshold_lines_and_keeps_comments(tmp_path: Path) -> None:
    settings = {
        ("urgency", "threshold"): 0.86,
        ("team", "local_threshold"): 0.62,
        ("sentiment", "threshold"): 1.0,
    }
    edited = th.set_thresholds(SHIPPED, settings, "taxonomy.yaml")
    assert changed_lines(SHIPPED, edited) == [
        "-    local_threshold: 0.8",
        "+    local_threshold: 0.62",
        "-    threshold: 0.8",
        "+    threshold: 0.86",
        "-    threshold: 0.7",
        "+    threshold: 1.0",
    ]
    comments = [line for line in SHIPPED.splitlines() if line.lstrip().startswith("#")]
    assert comments and comments == [line for line in edited.splitlines() if line.lstrip().startswith("#")]
    path = tmp_path / "tuned.yaml"
    path.write_text(edited, encoding="utf-8")
    tuned, shipped = load_taxonomy(path), load_taxonomy(None)
    assert tuned.thresholds() == shipped.thresholds() | {"urgency": 0.86, "sentiment": 1.0}
    # Each axis's local_threshold is its own line: moving `threshold` leaves it where it was.
    assert tuned.thresholds("local") == shipped.thresholds("local") | {"team": 0.62}
    assert tuned.routing == shipped.routing and tuned.business_rules == shipped.business_rules


SMALL = """\
name: small
axes:
  team:   # who owns it
    description: Team.
    labels: {a: A, b: B}   # flow labels are fine
  urgency:
      labels:
        high: Now.
        low: Later.
routing:
  - {name: all, when: {}, queue: "{team}"}
"""


def test_a_missing_threshold_is_added_as_a_line_beside_its_neighbours() -> None:
    edited = th.set_thresholds(
        SMALL,
        {("team", "local_threshold"): 0.5, ("team", "threshold"): 0.9, ("urgency", "local_threshold"): 0.66},
        "small.yaml",
    )
    assert changed_lines(SMALL, edited) == [
        "+    threshold: 0.9",
        "+    local_threshold: 0.5",
        "+      local_threshold: 0.66",
    ]
    assert "  team:   # who owns it\n    description: Team.\n    threshold: 0.9\n" in edited


def test_axes_the_edit_cannot_place_safely_are_refused() -> None:
    flow = SMALL.replace(
        "  urgency:\n      labels:\n        high: Now.\n        low: Later.\n",
        "  urgency: {labels: {h: H, l: L}}\n",
    )
    with pytest.raises(UserError, match=r"axes\.urgency is not a block mapping"):
        th.set_thresholds(flow, {("urgency", "threshold"): 0.9}, "flow.yaml")
    aliased = SMALL.replace(
        "    description: Team.\n", "    description: Team.\n    threshold: &t 0.8\n"
    ).replace("  urgency:\n", "  urgency:\n      threshold: *t\n")
    with pytest.raises(UserError, match=r"axes.urgency.threshold is not a plain value"):
        th.set_thresholds(aliased, {("urgency", "threshold"): 0.9}, "alias.yaml")


# --- the command ------------------------------------------------------------------------------


def run_tool(*args: str | Path) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ticket-tools evaluate`` on the bundled set with the local tier (retrieval recall off: it
    does not enter the calibration section and costs seconds)."""
    out = tmp_path_factory.mktemp("tune") / "r.json"
    assert run_tool("evaluate", EVAL_LABELED, "--tiers", "local", "--retrieval-k", "0", "--json", out) == 0
    return out


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def test_evaluate_reports_one_calibration_row_per_ticket_with_the_deciding_tier(evaluated: Path) -> None:
    report = read_json(evaluated)
    tickets = report["calibration"]["tickets"]
    assert len(tickets) == report["n"] == 160
    assert {ticket["tier"] for ticket in tickets} == {"local"}
    for axis, figures in report["axes"].items():
        assert sum(t["correct"][axis] for t in tickets) / len(tickets) == pytest.approx(figures["accuracy"])
    thresholds = load_taxonomy(None).thresholds("local")
    decided = [all(t["confidence"][a] >= v for a, v in thresholds.items()) for t in tickets]
    assert sum(decided) / len(tickets) == pytest.approx(report["outcomes"]["routed"])


def lowest_meeting(points: Sequence[tuple[float, bool]], target: float, support: int) -> float:
    """The search written out the slow way, to check the command's answer."""
    for hundredths in range(101):
        t = hundredths / 100
        above = [right for confidence, right in points if confidence >= t]
        if t <= min(c for c, _ in points) - 0.01:
            continue
        if len(above) >= support and sum(above) / len(above) >= target - 1e-9:
            return t
    raise AssertionError("no threshold meets the target")


def test_tune_writes_the_proposed_thresholds_and_prints_the_coverage_they_imply(
    evaluated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TAXONOMY_PATH", raising=False)
    out, proposal_path = tmp_path / "out.yaml", tmp_path / "proposal.json"
    assert run_tool("tune", evaluated, "--target", "team=0.95", "--write", out, "--json", proposal_path) == 0
    printed = capsys.readouterr().out

    tickets = read_json(evaluated)["calibration"]["tickets"]
    expected = lowest_meeting([(t["confidence"]["team"], t["correct"]["team"]) for t in tickets], 0.95, 20)
    proposal = read_json(proposal_path)
    assert proposal["changes"] == {"team": {"local_threshold": expected}}

    tuned, shipped = load_taxonomy(out), load_taxonomy(None)
    assert tuned.thresholds("local") == shipped.thresholds("local") | {"team": expected}
    assert tuned.thresholds() == shipped.thresholds()  # the Claude tiers' thresholds were not measured
    shipped_line = f"    local_threshold: {shipped.axes['team'].local_threshold}"
    assert changed_lines(SHIPPED, out.read_text("utf-8")) == [
        f"-{shipped_line}",
        f"+    local_threshold: {expected}",
    ]
    assert f"+    local_threshold: {expected}" in printed  # the diff comes first

    def coverage(thresholds: dict[str, float]) -> float:
        decided = [all(t["confidence"][a] >= v for a, v in thresholds.items()) for t in tickets]
        return sum(decided) / len(tickets)

    now, then = coverage(shipped.thresholds("local")), coverage(tuned.thresholds("local"))
    assert then > now
    assert proposal["implied"]["proposed"]["overall"]["coverage"] == pytest.approx(then)
    all_row = next(line for line in printed.splitlines() if line.startswith("│ all"))
    assert f"{pct(now)} → {pct(then)}" in all_row

    # The router's own pipeline with the written file decides exactly the tickets tune said it would.
    again = tmp_path / "again.json"
    assert (
        run_tool(
            "evaluate",
            EVAL_LABELED,
            "--tiers",
            "local",
            "--taxonomy",
            out,
            "--retrieval-k",
            "0",
            "--json",
            again,
        )
        == 0
    )
    implied, measured = proposal["implied"]["proposed"]["overall"], read_json(again)
    assert measured["outcomes"]["routed"] == pytest.approx(implied["coverage"])
    assert measured["routed_accuracy"] == pytest.approx(implied["accuracy"])


def test_write_dash_prints_the_file_on_stdout_and_the_rest_on_stderr(
    evaluated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TAXONOMY_PATH", raising=False)
    assert run_tool("tune", evaluated, "--default-target", "0.9", "--write", "-") == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("# The default support taxonomy.")
    assert "--- " in captured.err and "All axes together" in captured.err


def test_tune_refuses_to_overwrite_its_inputs_unless_forced(
    evaluated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taxonomy = tmp_path / "taxonomy.yaml"
    taxonomy.write_text(SHIPPED, encoding="utf-8")
    args = ("tune", evaluated, "--target", "team=0.95", "--taxonomy", taxonomy, "--write", taxonomy)
    assert run_tool(*args) == 2
    assert "--write" in capsys.readouterr().err and taxonomy.read_text("utf-8") == SHIPPED
    assert run_tool(*args, "--force") == 0
    assert load_taxonomy(taxonomy).axes["team"].local_threshold is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "teem=0.9"], "--target 'teem=0.9': unknown axis 'teem' (axes: team, ticket_type"),
        (["--target", "team=0"], "must be a number in (0, 1]"),
        (["--target", "team=1.5"], "must be a number in (0, 1]"),
        (["--target", "team"], "expected AXIS=PRECISION"),
        (["--default-target", "high"], "--default-target: the precision must be a number in (0, 1]"),
        ([], "--target: give at least one"),
        (["--target", "team=0.9", "--min-support", "0"], "--min-support must be at least 1"),
    ],
)
def test_flag_mistakes_are_one_line_and_exit_2(
    evaluated: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert run_tool("tune", evaluated, *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_report_files_are_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        "old.json": (b'{"n": 1, "axes": {}}', "old.json: no 'calibration' section"),
        "broken.json": (b"{not json", "broken.json: not valid JSON"),
        "rows.json": (
            b'{"calibration": {"tickets": [{"tier": 3}]}}',
            "rows.json: calibration.tickets[0].tier",
        ),
        "other.json": (
            b'{"run": {"taxonomy": "banking77"}, "calibration": {"tickets": '
            b'[{"tier": "local", "confidence": {"intent": 0.9}, "correct": {"intent": true}}]}}',
            "measured with taxonomy 'banking77'",
        ),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert run_tool("tune", path, "--target", "team=0.9") == 2, name
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert run_tool("tune", tmp_path / "missing.json", "--target", "team=0.9") == 2
    assert "missing.json: cannot read" in capsys.readouterr().err
