"""``ticket-tools evaluate``: the pure metrics on hand-computed examples, then real runs of the
command over the bundled labeled tickets and over BANKING77 with its own taxonomy."""

from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from producer_tools.cli import main
from producer_tools.evaluation import metrics
from producer_tools.evaluation.dataset import normalize_label
from producer_tools.evaluation.metrics import NO_ANSWER

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BANKING77_CSV = SHARED_DATA / "banking77-train.csv"
BANKING77_TAXONOMY = REPO / "taxonomies" / "banking77.yaml"
EVAL_LABELED = REPO / "tests" / "data" / "eval_labeled.jsonl"


# --- pure metrics -----------------------------------------------------------------------------

GOLD = ["a", "a", "b", "c"]
PRED = ["a", "b", "b", "c"]


def test_accuracy_counts_exact_matches() -> None:
    assert metrics.accuracy(GOLD, PRED) == 0.75
    assert metrics.accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        metrics.accuracy(["a"], [])


def test_confusion_rows_are_truth_columns_are_predictions() -> None:
    assert metrics.confusion_matrix(GOLD, PRED, ["a", "b", "c"]) == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_top_confusions_lists_the_largest_off_diagonal_cells() -> None:
    labels = ["a", "b", "c"]
    matrix = [[5, 2, 0], [3, 4, 2], [0, 0, 1]]
    assert metrics.top_confusions(labels, matrix, 2) == [("b", "a", 3), ("a", "b", 2)]
    assert metrics.top_confusions(labels, matrix) == [("b", "a", 3), ("a", "b", 2), ("b", "c", 2)]


def test_precision_recall_f1_support_per_class() -> None:
    stats = metrics.per_class(GOLD, PRED, ["a", "b", "c", "d"])
    # a: 1 of 1 predicted right, 1 of 2 found; b: 1 of 2 predicted right, 1 of 1 found.
    assert (stats["a"].precision, stats["a"].recall, stats["a"].support) == (1.0, 0.5, 2)
    assert (stats["b"].precision, stats["b"].recall, stats["b"].support) == (0.5, 1.0, 1)
    assert stats["a"].f1 == pytest.approx(2 / 3) and stats["b"].f1 == pytest.approx(2 / 3)
    assert stats["c"] == metrics.ClassStats(1.0, 1.0, 1.0, 1)
    assert stats["d"] == metrics.ClassStats(0.0, 0.0, 0.0, 0)  # never seen, never predicted: zeros


def test_macro_f1_averages_classes_seen_and_ignores_missing_answers_as_a_class() -> None:
    assert metrics.macro_f1(GOLD, PRED) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # b got no answer: its recall is 0, but "(no answer)" is not a class of its own.
    assert metrics.macro_f1(["a", "b"], ["a", NO_ANSWER]) == 0.5
    # A class only ever predicted counts with F1 0.
    assert metrics.macro_f1(["a", "a"], ["a", "z"]) == pytest.approx((2 / 3 + 0) / 2)


def test_label_order_keeps_the_taxonomy_order_and_appends_surprises() -> None:
    order = metrics.label_order(["b", "a"], ["x", NO_ANSWER], known=["b", "a", "c"])
    assert order == ["b", "a", "c", "x", NO_ANSWER]


def test_majority_baseline_uses_the_reference_labels_when_given() -> None:
    assert metrics.majority_baseline(["a", "a", "b"]) == pytest.approx(2 / 3)
    assert metrics.majority_baseline(["a", "a", "b"], reference=["b", "b", "a"]) == pytest.approx(1 / 3)


def test_consistency_is_the_share_identical_in_every_run() -> None:
    runs = [[("x", "1"), ("y", "1"), ("z", "1")], [("x", "1"), ("y", "2"), ("z", "1")], [("x", "1")] * 3]
    # ticket 0 always ("x","1"); ticket 1 differs in run 2; ticket 2 differs in run 3.
    assert metrics.consistency(runs) == pytest.approx(1 / 3)
    assert metrics.consistency([["x", "y"], ["x", "y"]]) == 1.0
    assert metrics.consistency([["x"]]) is None


def test_percentile_interpolates_linearly_between_ranks() -> None:
    assert metrics.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert metrics.percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert metrics.percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert metrics.percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert metrics.percentile([7.0], 95) == 7.0


def test_threshold_grid_is_0_30_to_0_95_by_0_05() -> None:
    grid = metrics.threshold_grid()
    assert grid[0] == 0.3 and grid[-1] == 0.95 and len(grid) == 14
    assert grid[5] == 0.55


def test_coverage_curve_counts_tickets_at_or_above_the_threshold() -> None:
    min_confidence = [0.9, 0.6, 0.4]
    correct = [[True, True], [True, False], [False, False]]
    points = metrics.coverage_curve(min_confidence, correct, [0.3, 0.6, 0.8, 0.95])
    assert [(p.n, p.coverage) for p in points] == [
        (3, 1.0),
        (2, pytest.approx(2 / 3)),
        (1, pytest.approx(1 / 3)),
        (0, 0.0),
    ]
    assert [p.accuracy for p in points] == [0.5, 0.75, 1.0, None]
    assert [p.all_axes_correct for p in points] == [pytest.approx(1 / 3), 0.5, 1.0, None]


def test_largest_gap_names_best_and_worst_groups_big_enough_to_compare() -> None:
    by_group = metrics.accuracy_by_group(["en", "en", "de", "de", "fr"], [1.0, 0.5, 0.25, 0.25, 1.0])
    assert by_group["en"] == metrics.GroupAccuracy(2, 0.75)
    assert by_group["fr"] == metrics.GroupAccuracy(1, 1.0)
    gap = metrics.largest_gap(by_group, min_n=2)
    assert gap is not None and (gap.best, gap.worst, gap.gap) == ("en", "de", 0.5)
    gap_all = metrics.largest_gap(by_group, min_n=1)
    assert gap_all is not None and gap_all.best == "fr"
    assert metrics.largest_gap(by_group, min_n=3) is None


def test_mean_and_population_std() -> None:
    mean, std = metrics.mean_and_std([0.8, 0.9])
    assert mean == pytest.approx(0.85) and std == pytest.approx(0.05)


def test_csv_labels_that_are_not_valid_taxonomy_labels_are_normalized() -> None:
    assert normalize_label("Refund_not_showing_up") == "refund_not_showing_up"
    assert normalize_label("reverted_card_payment?") == "reverted_card_payment"


# --- the command --------------------------------------------------------------------------------


def run_evaluate(*args: str | Path) -> int:
    return main(["evaluate", *(str(a) for a in args)])


def read_report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = orjson.loads(path.read_bytes())
    return report


def test_bundled_eval_set_with_the_local_tier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json, out_html = tmp_path / "out.json", tmp_path / "out.html"
    status = run_evaluate(
        EVAL_LABELED, "--tiers", "local", "--repeat", "2", "--json", out_json, "--html", out_html
    )
    assert status == 0
    assert "Accuracy per axis" in capsys.readouterr().out

    report = read_report(out_json)
    for key in (
        "accuracy",
        "macro_f1",
        "axes",
        "consistency",
        "by_language",
        "by_account_tier",
        "outcomes",
        "escalation",
        "cost",
        "latency_ms",
        "coverage_curve",
        "run",
    ):
        assert key in report, key
    assert isinstance(report["accuracy"], float) and 0.0 <= report["accuracy"] <= 1.0
    assert set(report["axes"]) == {"team", "ticket_type", "urgency", "sentiment"}
    for figures in report["axes"].values():
        assert {"accuracy", "macro_f1", "per_class", "confusion"} <= set(figures)
        assert sum(map(sum, figures["confusion"]["matrix"])) == report["n"]

    rows = [orjson.loads(line) for line in EVAL_LABELED.read_bytes().splitlines() if line.strip()]
    team_gold = [row["labels"]["team"] for row in rows]
    majority = Counter(team_gold).most_common(1)[0][1] / len(team_gold)
    assert report["axes"]["team"]["accuracy"] > majority
    assert report["consistency"]["share"] == 1.0  # the local tier is deterministic
    assert len(report["coverage_curve"]["points"]) == 14
    assert report["cost"]["per_10k_tickets_usd"] == 0.0  # the local tier is free
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"]

    page = out_html.read_text("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("data:image/png;base64,") == 1 + len(report["axes"])  # coverage + one heatmap per axis
    assert "http://" not in page and "https://" not in page and "<link" not in page  # self-contained


def banking77_rows() -> list[dict[str, str]]:
    if not BANKING77_CSV.is_file():
        pytest.fail(
            f"BANKING77 data not found at {BANKING77_CSV}: the test expects the shared/ directory beside the "
            "repository (shared/data/banking77-train.csv), as in CI"
        )
    with BANKING77_CSV.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def stratified_split(
    rows: list[dict[str, str]], train_per_class: int, test_per_class: int, seed: int = 7
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    by_class: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_class[row["category"]].append(row)
    rng = random.Random(seed)
    train, test = [], []
    for category in sorted(by_class):
        members = by_class[category]
        rng.shuffle(members)
        train += members[:train_per_class]
        test += members[train_per_class : train_per_class + test_per_class]
    return train, test


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows({"text": row["text"], "category": row["category"]} for row in rows)
    return path


def evaluate_banking77_split(
    tmp_path: Path, train_rows: list[dict[str, str]], test_rows: list[dict[str, str]]
) -> dict[str, Any]:
    """``evaluate TEST --train TRAIN`` on BANKING77 with its taxonomy and the local tier; the report."""
    out = tmp_path / "out.json"
    status = run_evaluate(
        write_csv(tmp_path / "test.csv", test_rows),
        "--train",
        write_csv(tmp_path / "train.csv", train_rows),
        "--taxonomy",
        BANKING77_TAXONOMY,
        "--text-column",
        "text",
        "--label-column",
        "category",
        "--tiers",
        "local",
        "--json",
        out,
    )
    assert status == 0
    return read_report(out)


def test_banking77_custom_taxonomy_end_to_end(tmp_path: Path) -> None:
    """The issue's contract: fit the local tier on TRAIN with the banking77 taxonomy, score TEST."""
    train_rows, test_rows = stratified_split(banking77_rows(), train_per_class=26, test_per_class=7)
    report = evaluate_banking77_split(tmp_path, train_rows, test_rows)

    classes = {row["category"] for row in train_rows}
    chance = 1 / len(classes)
    train_majority = Counter(row["category"] for row in train_rows).most_common(1)[0][0]
    baseline = sum(row["category"] == train_majority for row in test_rows) / len(test_rows)
    assert len(classes) == 77
    assert report["n"] == len(test_rows) and report["run"]["n_train"] == len(train_rows)
    assert report["accuracy"] == report["axes"]["intent"]["accuracy"]  # one axis: the mean is that axis
    assert report["accuracy"] > 20 * max(chance, baseline), (report["accuracy"], chance, baseline)


def test_cross_validation_predicts_every_row_once(tmp_path: Path) -> None:
    """--cv on a small stratified slice of BANKING77 (10 intents), so it stays quick."""
    rows = banking77_rows()
    intents = sorted({row["category"] for row in rows})[:10]
    subset, _ = stratified_split([row for row in rows if row["category"] in intents], 24, 0)
    labeled = write_csv(tmp_path / "subset.csv", subset)
    out = tmp_path / "cv.json"
    status = run_evaluate(
        labeled,
        "--cv",
        "3",
        "--taxonomy",
        BANKING77_TAXONOMY,
        "--text-column",
        "text",
        "--label-column",
        "category",
        "--tiers",
        "local",
        "--json",
        out,
    )
    assert status == 0
    report = read_report(out)
    cv = report["cv"]
    assert cv["folds"] == 3 and len(cv["per_fold"]) == 3
    assert sum(fold["n_test"] for fold in cv["per_fold"]) == len(subset) == report["n"]
    assert all(fold["n_train"] + fold["n_test"] == len(subset) for fold in cv["per_fold"])
    assert report["accuracy"] == pytest.approx(sum(f["accuracy"] for f in cv["per_fold"]) / 3)
    assert cv["accuracy_mean"] > 2 / len(intents)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text-column", "text", "--label-column", "category"], "taxonomy has 4 axes"),
        (["--repeat", "0"], "--repeat must be at least 1"),
        (["--cv", "3", "--train", "x.csv"], "do not combine"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    labeled = write_csv(tmp_path / "l.csv", [{"text": "hello", "category": "billing"}])
    assert run_evaluate(labeled, "--tiers", "local", *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_label_outside_the_taxonomy_names_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labeled = write_csv(
        tmp_path / "l.csv",
        [
            {"text": "where is my card", "category": "card_arrival"},
            {"text": "hi", "category": "no_such_intent"},
        ],
    )
    status = run_evaluate(
        labeled,
        "--taxonomy",
        BANKING77_TAXONOMY,
        "--text-column",
        "text",
        "--label-column",
        "category",
        "--tiers",
        "local",
    )
    assert status == 2
    assert f"{labeled}:3: intent label 'no_such_intent' is not in the taxonomy" in capsys.readouterr().err


# --- the Claude tiers against the fake Messages API -------------------------------------------


@pytest.mark.parametrize(
    ("fast_model", "strong_model"),
    [(None, None), ("claude-haiku-4-5", "claude-sonnet-4-6")],
    ids=["today's defaults", "pinned older models"],
)
def test_claude_tiers_report_models_cache_reads_and_cost(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fast_model: str | None,
    strong_model: str | None,
) -> None:
    """The issue's check: with the defaults, Haiku 5.5 is the fast model, no answer is invalid, every
    call after each model's first reads the cache, and a cost per 10k tickets is printed."""
    from producer_tools.fake_api import ModelScript, Scenario, run_in_thread

    expected_fast = fast_model or "claude-haiku-5-5"
    expected_strong = strong_model or "claude-sonnet-5-5"
    scenario = Scenario(
        models={expected_fast: ModelScript(low_confidence_rate=0.15), expected_strong: ModelScript()}
    )
    with run_in_thread(scenario) as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-evaluate-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        if fast_model is not None and strong_model is not None:
            monkeypatch.setenv("FAST_MODEL", fast_model)
            monkeypatch.setenv("STRONG_MODEL", strong_model)
        out_json = tmp_path / "claude.json"
        assert run_evaluate(EVAL_LABELED, "--tiers", "fast,strong", "--json", out_json) == 0
    printed = capsys.readouterr().out
    report = read_report(out_json)
    assert report["run"]["models"] == {"fast": expected_fast, "strong": expected_strong}
    assert "Claude calls per model" in printed and "cost per 10k tickets" in printed
    assert expected_fast in printed and expected_strong in printed
    assert report["cost"]["per_10k_tickets_usd"] > 0
    assert report["outcomes"]["triaged_by_kind"].get("llm_invalid_output", 0) == 0
    llm = report["llm"]
    assert set(llm) == {expected_fast, expected_strong}
    for model, row in llm.items():
        assert row["invalid_outputs"] == 0 and row["unavailable"] == 0, model
        assert row["writing_cache"] == 1, f"{model}: only the first call writes the prompt"
        assert row["reading_cache"] == row["tickets"] - 1, f"{model}: every later call reads it"
        assert row["tokens"]["cache_read"] > row["tokens"]["input"]
    assert llm[expected_fast]["tier"] == "fast" and llm[expected_strong]["tier"] == "strong"


def test_a_run_where_nothing_was_classified_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreachable API used to give exit 0 and a report of 0% accuracy."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-evaluate-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LLM_MAX_ATTEMPTS", "1")
    out_json = tmp_path / "down.json"
    assert run_evaluate(EVAL_LABELED, "--tiers", "fast,strong", "--json", out_json) == 1
    assert read_report(out_json)["outcomes"]["triaged_by_kind"] == {"llm_unavailable": 1.0}
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "ticket-tools evaluate: error: no ticket was classified (llm_unavailable 100%)"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--tiers", "local,turbo"), "--tiers: unknown tier 'turbo' (allowed: local, fast, strong)"),
        (("--taxonomy", "/nope/taxonomy.yaml"), "--taxonomy: cannot read /nope/taxonomy.yaml: No such file"),
    ],
)
def test_a_bad_flag_value_is_blamed_on_the_flag(
    capsys: pytest.CaptureFixture[str], args: tuple[str, str], expected: str
) -> None:
    assert run_evaluate(EVAL_LABELED, *args) == 2
    assert capsys.readouterr().err.strip().startswith("ticket-tools: error: " + expected)


# --- routing accuracy: the queue the labels route to ------------------------------------------


def test_per_queue_is_worst_first_and_lists_where_misrouted_tickets_went() -> None:
    gold = ["q1", "q1", "q1", "q1", "q2", "q2", "q3"]
    pred = ["q1", "q2", "q2", NO_ANSWER, "q2", "q1", "q3"]
    stats = metrics.per_queue(gold, pred, top=2)
    assert list(stats) == ["q1", "q2", "q3"]  # 25%, then 50%, then 100%
    assert stats["q1"] == metrics.QueueStats(4, 0.25, (("q2", 2), (NO_ANSWER, 1)))
    assert stats["q2"] == metrics.QueueStats(2, 0.5, (("q1", 1),))
    assert stats["q3"] == metrics.QueueStats(1, 1.0, ())
    assert metrics.per_queue(["a", "a", "b"], ["a", "b", "a"], top=1)["a"].misrouted_to == (("b", 1),)
    # Equal accuracy: the bigger queue is the bigger problem and comes first.
    assert list(metrics.per_queue(["s", "b", "b"], ["x", "x", "x"])) == ["b", "s"]


def test_disagreement_counts_each_side_right_alone() -> None:
    queue_right = [True, True, False, False]
    label_right = [True, False, True, False]
    assert metrics.disagreement(queue_right, label_right) == (0.25, 0.25)
    assert metrics.disagreement([], []) == (0.0, 0.0)


def labeled(gold: dict[str, str], number: int = 0) -> Any:
    from producer_tools.evaluation.dataset import LabeledTicket
    from schemas.events import TicketEvent

    ticket = TicketEvent.model_validate(
        {
            "event_id": f"routing-{number}",
            "event_type": "ticket.created",
            "ticket_id": f"t-{number}",
            "subject": "s",
            "body": "b",
            "account_tier": "pro",
            "customer_id": "c",
            "channel": "web",
            "created_at": "2025-01-01T00:00:00Z",
        }
    )
    return LabeledTicket(ticket=ticket, gold=gold, language="en", account_tier="pro")


def outcome(labels: dict[str, str], error_kind: str | None = None) -> Any:
    from producer_tools.evaluation.runner import TicketOutcome

    return TicketOutcome(
        labels=labels,
        confidences=dict.fromkeys(labels, 0.9),
        error_kind=error_kind,
        low_confidence=error_kind == "low_confidence",
        tiers_tried=["local"],
        final_tier=None if error_kind else "local",
        cost_usd=0.0,
        latency_ms=1.0,
    )


def ticket_labels(team: str, ticket_type: str, urgency: str, sentiment: str) -> dict[str, str]:
    return {"team": team, "ticket_type": ticket_type, "urgency": urgency, "sentiment": sentiment}


def test_routing_report_on_the_default_taxonomy() -> None:
    """Four tickets: a right queue despite two wrong labels, no answer at all, a right team and
    urgency in the wrong queue (sentiment decides `priority-*`), and a triaged ticket right on all."""
    from consumer.taxonomy import load_taxonomy
    from producer_tools.evaluation.summary import routing_report

    taxonomy = load_taxonomy(None)
    billing = ticket_labels("billing", "billing_dispute", "normal", "neutral")  # billing-normal
    angry = ticket_labels("product", "bug_report", "high", "angry")  # priority-product
    items = [labeled(billing, 0), labeled(billing, 1), labeled(angry, 2), labeled(billing, 3)]
    outcomes = [
        outcome(ticket_labels("billing", "account_question", "normal", "frustrated")),
        outcome(dict.fromkeys(taxonomy.axis_names, NO_ANSWER), "llm_unavailable"),
        outcome(ticket_labels("product", "bug_report", "high", "frustrated")),  # product-high
        outcome(billing, "low_confidence"),
    ]
    routing = routing_report(taxonomy, items, outcomes)

    assert routing["accuracy"] == 0.5  # tickets 0 and 3; no answer counts as wrong
    assert routing["routed_accuracy"] == 0.5  # routed: 0 (right) and 2 (wrong)
    assert routing["routed_to_right_queue"] == 0.25
    assert routing["queue_right_some_label_wrong"] == 0.25  # ticket 0
    assert routing["by_axis"]["sentiment"] == {
        "label_wrong_queue_right": 0.25,
        "label_right_queue_wrong": 0.0,
    }
    assert routing["by_axis"]["team"] == {"label_wrong_queue_right": 0.0, "label_right_queue_wrong": 0.25}
    assert routing["per_queue"] == {
        "priority-product": {
            "support": 1,
            "accuracy": 0.0,
            "misrouted_to": [{"queue": "product-high", "count": 1}],
        },
        "billing-normal": {
            "support": 3,
            "accuracy": pytest.approx(2 / 3),
            "misrouted_to": [{"queue": NO_ANSWER, "count": 1}],
        },
    }
    assert routing["majority_baseline"] == 0.75
    assert routing["worst_queues"] == []  # both queues are under the 5-ticket floor


def test_routing_report_on_banking77_groups_intents_into_queues() -> None:
    """One axis: confusing two intents of one queue costs the intent, not the queue."""
    from consumer.taxonomy import load_taxonomy
    from producer_tools.evaluation.summary import routing_report

    taxonomy = load_taxonomy(BANKING77_TAXONOMY)
    gold = ["request_refund"] * 5 + ["card_arrival"] * 5
    predicted = ["refund_not_showing_up", "request_refund", "request_refund", "card_arrival", "card_arrival"]
    predicted += ["card_arrival"] * 5
    items = [labeled({"intent": g}, n) for n, g in enumerate(gold)]
    outcomes = [outcome({"intent": p}) for p in predicted]
    routing = routing_report(taxonomy, items, outcomes)

    assert routing["accuracy"] == 0.8  # the intent accuracy is 0.7
    assert routing["by_axis"]["intent"] == {"label_wrong_queue_right": 0.1, "label_right_queue_wrong": 0.0}
    assert routing["per_queue"]["banking-disputes"]["accuracy"] == 0.6
    assert routing["per_queue"]["banking-disputes"]["misrouted_to"] == [
        {"queue": "banking-cards", "count": 2}
    ]
    assert routing["worst_queues"] == ["banking-disputes"]
    assert list(routing["per_queue"]) == ["banking-disputes", "banking-cards"]


def test_routing_accuracy_end_to_end_matches_the_per_ticket_queues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real command on the bundled set; the per-ticket outcomes it scored are captured on the
    way into the summary and routed again here with the service's routing function."""
    import producer_tools.evaluate as evaluate_module
    from consumer.routing import route
    from consumer.taxonomy import load_taxonomy

    seen: list[tuple[Any, Any]] = []
    real_summarize = evaluate_module.summarize

    def spy(taxonomy: Any, items: Any, runs: Any, local: Any, prices: Any = None) -> dict[str, Any]:
        seen.append((items, runs[0]))
        return real_summarize(taxonomy, items, runs, local, prices)

    monkeypatch.setattr(evaluate_module, "summarize", spy)
    out_json, out_html = tmp_path / "out.json", tmp_path / "out.html"
    assert run_evaluate(EVAL_LABELED, "--tiers", "local", "--json", out_json, "--html", out_html) == 0
    printed = capsys.readouterr().out
    routing = read_report(out_json)["routing"]

    rules = load_taxonomy(None).routing
    rows = [orjson.loads(line) for line in EVAL_LABELED.read_bytes().splitlines() if line.strip()]
    gold_queues = [route(rules, row["labels"]).queue for row in rows]
    ((items, outcomes),) = seen
    assert [route(rules, item.gold).queue for item in items] == gold_queues
    predicted = [
        NO_ANSWER if NO_ANSWER in o.labels.values() else route(rules, o.labels).queue for o in outcomes
    ]
    right = [g == p for g, p in zip(gold_queues, predicted, strict=True)]
    routed_right = [ok for ok, o in zip(right, outcomes, strict=True) if o.routed]
    assert routing["accuracy"] == pytest.approx(sum(right) / len(rows))
    assert routing["routed_accuracy"] == pytest.approx(sum(routed_right) / len(routed_right))
    assert {q: f["support"] for q, f in routing["per_queue"].items()} == Counter(gold_queues)
    for queue, figures in routing["per_queue"].items():
        mine = [ok for ok, g in zip(right, gold_queues, strict=True) if g == queue]
        assert figures["accuracy"] == pytest.approx(sum(mine) / len(mine)), queue
    assert 0.0 < routing["accuracy"] < 1.0

    assert "queue right" in printed and f"{routing['accuracy'] * 100:.1f}%" in printed
    for queue in routing["worst_queues"]:
        assert queue in printed
    assert "Routing: the right queue" in out_html.read_text("utf-8")


def test_banking77_routing_accuracy_is_intent_accuracy_plus_same_queue_confusions(tmp_path: Path) -> None:
    """A small BANKING77 run: queue right = intent right, or a wrong intent of the same queue."""
    train_rows, test_rows = stratified_split(banking77_rows(), train_per_class=12, test_per_class=3)
    report = evaluate_banking77_split(tmp_path, train_rows, test_rows)
    routing = report["routing"]
    intent = routing["by_axis"]["intent"]
    assert intent["label_right_queue_wrong"] == 0.0  # one axis: a right intent is a right queue
    expected = report["axes"]["intent"]["accuracy"] + intent["label_wrong_queue_right"]
    assert routing["accuracy"] == pytest.approx(expected)
    assert intent["label_wrong_queue_right"] > 0  # 77 intents in 8 queues: some confusions stay inside
    assert set(routing["per_queue"]) <= {
        "banking-fraud",
        "banking-disputes",
        "banking-cards",
        "banking-transfers",
        "banking-top-up",
        "banking-cash-and-exchange",
        "banking-account",
        "banking-general",
    }
    assert sum(f["support"] for f in routing["per_queue"].values()) == report["n"]
