"""Label recall@k in ``ticket-tools evaluate``: the arithmetic by hand, then real runs of the command."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.classify.prompt import Example
from consumer.learn.store import Neighbour
from producer_tools.evaluation.retrieval import (
    Retrieved,
    fold_sides,
    label_recall,
    labels_on,
    recall_report,
)
from tests.test_evaluate import (
    BANKING77_TAXONOMY,
    banking77_rows,
    labeled,
    read_report,
    run_evaluate,
    stratified_split,
    write_csv,
)

# --- pure -----------------------------------------------------------------------------------------


def test_label_recall_counts_queries_whose_label_was_retrieved() -> None:
    gold = ["refund", "card_arrival", "pin_blocked", "refund"]
    retrieved = [
        ["refund", "refund"],  # hit
        ["card_linking", "card_arrival"],  # hit in second place
        [],  # nothing above the floor: a miss
        ["card_arrival"],  # miss
    ]
    assert label_recall(gold, retrieved) == 0.5
    assert label_recall([], []) == 0.0
    with pytest.raises(ValueError):
        label_recall(["refund"], [])


def neighbour(labels: dict[str, str], similarity: float = 0.5) -> Neighbour:
    return Neighbour(Example("ex", "", "text", labels), similarity)


def test_recall_report_per_axis_as_retrieved_and_nearest() -> None:
    retrieved = Retrieved(
        gold=[{"team": "billing", "urgency": "high"}, {"team": "bug", "urgency": "low"}],
        configured=[
            [neighbour({"team": "billing", "urgency": "low"}), neighbour({"team": "bug", "urgency": "high"})],
            [neighbour({"team": "bug", "urgency": "low"})],
        ],
        nearest=[
            [
                neighbour({"team": "billing", "urgency": "low"}),
                neighbour({"team": "billing", "urgency": "low"}),
            ],
            [neighbour({"team": "bug", "urgency": "low"})],
        ],
        per_label=1,
        store_name="store",
        store_sizes=[10],
        seconds=0.1,
        labeled_axes=frozenset({"team", "urgency"}),
    )
    report = recall_report(retrieved, ["team", "urgency", "intent"], 2, 0.1, "train.csv")
    assert report["recall_at_k"] == {"team": 1.0, "urgency": 1.0, "intent": None}
    assert report["recall_at_k_nearest"] == {"team": 1.0, "urgency": 0.5, "intent": None}
    assert report["mean_retrieved"] == 1.5 and report["per_label"] == 1
    assert (report["k"], report["min_similarity"], report["source"]) == (2, 0.1, "train.csv")


def test_an_example_without_the_axis_shows_no_label_on_it() -> None:
    assert labels_on("urgency", [neighbour({"team": "bug"}), neighbour({"urgency": "low"})]) == ["low"]


def test_folds_never_retrieve_the_ticket_itself() -> None:
    items = [labeled({"team": "billing"}, number) for number in range(6)]
    sides = fold_sides(items, [[0, 3], [1, 4], [2, 5]])
    queried = []
    for side in sides:
        stored = {example.example_id for example in side.examples}
        asked = {item.ticket.ticket_id for item in side.queries}
        assert not stored & asked and len(stored) == 4
        queried += sorted(asked)
    assert sorted(queried) == [f"t-{number}" for number in range(6)]


# --- the command ----------------------------------------------------------------------------------


def test_evaluate_reports_recall_at_k_from_the_training_side(tmp_path: Path) -> None:
    """BANKING77, a small stratified slice: --train with other rows, then --train with the very
    texts being scored (every ticket's twin is in the store: recall 1.0)."""
    train_rows, test_rows = stratified_split(banking77_rows(), train_per_class=8, test_per_class=2)
    train_csv = write_csv(tmp_path / "train.csv", train_rows)
    test_csv = write_csv(tmp_path / "test.csv", test_rows)
    columns = ("--text-column", "text", "--label-column", "category", "--tiers", "local")
    common = ("--taxonomy", BANKING77_TAXONOMY, *columns)

    out = tmp_path / "out.json"
    assert run_evaluate(test_csv, "--train", train_csv, *common, "--retrieval-k", "3", "--json", out) == 0
    retrieval = read_report(out)["retrieval"]
    assert retrieval["k"] == 3 and retrieval["min_similarity"] > 0
    assert retrieval["source"] == str(train_csv) and retrieval["store_sizes"] == [len(train_rows)]
    assert retrieval["per_label"] == 1  # RETRIEVED_PER_LABEL's default
    for key in ("recall_at_k", "recall_at_k_nearest"):
        assert set(retrieval[key]) == {"intent"}
        assert 0.0 <= retrieval[key]["intent"] <= 1.0
    assert retrieval["recall_at_k"]["intent"] > 0.5  # far above chance (3 of 77 labels)

    twins = write_csv(tmp_path / "twins.csv", test_rows)
    assert run_evaluate(test_csv, "--train", twins, *common, "--json", out) == 0
    retrieval = read_report(out)["retrieval"]
    assert retrieval["k"] == 5 and retrieval["recall_at_k"] == {"intent": 1.0}


def test_cross_validated_recall_and_the_terminal_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, _ = stratified_split(banking77_rows(), train_per_class=6, test_per_class=0)
    labeled = write_csv(tmp_path / "labeled.csv", rows)
    out, page = tmp_path / "out.json", tmp_path / "out.html"
    status = run_evaluate(
        labeled, "--cv", "3", "--taxonomy", BANKING77_TAXONOMY, "--text-column", "text",
        "--label-column", "category", "--tiers", "local", "--json", out, "--html", page,
    )  # fmt: skip
    assert status == 0
    retrieval = read_report(out)["retrieval"]
    assert retrieval["source"] == "the other 2 folds"
    assert sum(retrieval["store_sizes"]) == 2 * len(rows)  # each row is in the store of the 2 other folds
    assert 0.0 < retrieval["recall_at_k_nearest"]["intent"] <= retrieval["recall_at_k"]["intent"] <= 1.0
    assert "label recall@5" in capsys.readouterr().out
    assert "Example store: label recall@5" in page.read_text("utf-8")


def test_retrieval_k_0_turns_the_report_off_and_negative_is_a_mistake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, _ = stratified_split(banking77_rows(), train_per_class=2, test_per_class=0)
    labeled = write_csv(tmp_path / "labeled.csv", rows)
    out = tmp_path / "out.json"
    args = ("--taxonomy", BANKING77_TAXONOMY, "--text-column", "text", "--label-column", "category")
    assert (
        run_evaluate(
            labeled, *args, "--train", labeled, "--tiers", "local", "--retrieval-k", "0", "--json", out
        )
        == 0
    )
    assert "retrieval" not in read_report(out)
    capsys.readouterr()
    assert run_evaluate(labeled, *args, "--tiers", "local", "--retrieval-k", "-1") == 2
    err = capsys.readouterr().err
    assert "--retrieval-k" in err and err.count("\n") == 1
