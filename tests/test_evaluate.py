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


def test_banking77_custom_taxonomy_end_to_end(tmp_path: Path) -> None:
    """The issue's contract: fit the local tier on TRAIN with the banking77 taxonomy, score TEST."""
    train_rows, test_rows = stratified_split(banking77_rows(), train_per_class=26, test_per_class=7)
    train_csv, test_csv = (
        write_csv(tmp_path / "train.csv", train_rows),
        write_csv(tmp_path / "test.csv", test_rows),
    )
    out = tmp_path / "out.json"
    status = run_evaluate(
        test_csv,
        "--train",
        train_csv,
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
