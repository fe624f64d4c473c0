"""The report as one self-contained HTML file: inline CSS, pictures as base64 PNGs.

Self-contained so it can be attached to a ticket or a pull request and opened anywhere, with no
server and no network. matplotlib (the ``reports`` extra) is imported here only, with the Agg
backend, so the rest of ``evaluate`` works on a host without it.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

from consumer.errors import UserError
from producer_tools.evaluation.terminal import (
    CONFIRMED_NOTE,
    cost_per_10k,
    evaluated_source,
    join_rows,
    per_label_phrase,
)

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; }
.weak { background: #fde2e2; }
.note { color: #666; font-size: 0.85rem; max-width: 60rem; }
img { max-width: 100%; border: 1px solid #eee; }
details { margin: 0.5rem 0; }
"""


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Sequence[str] = ()) -> str:
    """An HTML table; cells are escaped here so callers pass plain text."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        css = row_classes[index] if index < len(row_classes) and row_classes[index] else ""
        cells = "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
        body.append(f'<tr class="{css}">{cells}</tr>' if css else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UserError(
            "--html needs matplotlib: install the reports extra (pip install 'ticket-router[reports]')"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_data_uri(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def matrix_png(
    labels: Sequence[str],
    matrix: Sequence[Sequence[int]],
    axis_names: tuple[str, str],
    title: str,
    annotate_up_to: int,
    cell_inches: float = 0.22,
) -> str:
    """Heatmap of a square count matrix, coloured by row share so a small row shows as clearly as a
    large one; counts are written in the cells while there are at most ``annotate_up_to`` labels."""
    plt = _pyplot()
    size = max(4.0, min(18.0, cell_inches * len(labels) + 2.5))
    figure, ax = plt.subplots(figsize=(size, size))
    shares = [[cell / (sum(row) or 1) for cell in row] for row in matrix]
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7 if len(labels) > 20 else 9)
    ax.set_yticks(range(len(labels)), labels, fontsize=7 if len(labels) > 20 else 9)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title)
    if len(labels) <= annotate_up_to:
        for i, row in enumerate(matrix):
            for j, cell in enumerate(row):
                if cell:
                    colour = "white" if shares[i][j] > 0.5 else "black"
                    ax.text(j, i, str(cell), ha="center", va="center", fontsize=8, color=colour)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    uri = png_data_uri(figure)
    plt.close(figure)
    return uri


def confusion_png(axis: str, labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> str:
    """The confusion matrix, coloured by the share of the true class (recall) so rare classes show."""
    title = f"{axis}: confusion matrix (colour = share of the true class)"
    return matrix_png(labels, matrix, ("predicted", "true"), title, annotate_up_to=16)


def coverage_png(points: Sequence[Mapping[str, Any]], source: str) -> str:
    """Coverage and accuracy against the confidence threshold, on one 0..1 axis."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(7, 4))
    thresholds = [p["threshold"] for p in points]
    ax.plot(thresholds, [p["coverage"] for p in points], marker="o", label="coverage (share of tickets)")
    for key, name, style in (
        ("accuracy", "accuracy (mean over axes)", "-"),
        ("all_axes_correct", "all axes right", "--"),
    ):
        pairs = [(p["threshold"], p[key]) for p in points if p[key] is not None]
        if pairs:
            ax.plot([t for t, _ in pairs], [v for _, v in pairs], linestyle=style, marker="s", label=name)
    ax.set_xlabel("threshold t (min confidence over axes >= t)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(f"Coverage vs accuracy ({source})")
    uri = png_data_uri(figure)
    plt.close(figure)
    return uri


def _groups_html(title: str, section: Mapping[str, Any]) -> str:
    rows = [[group, str(v["n"]), pct(v["accuracy"])] for group, v in section["groups"].items()]
    gap = section["largest_gap"]
    note = (
        f"Largest gap {pct(gap['gap'])}: {gap['best']} ({pct(gap['best_accuracy'])}) vs "
        f"{gap['worst']} ({pct(gap['worst_accuracy'])}); groups under {section['min_group_size_for_gap']} "
        "tickets are not compared."
        if gap
        else "Fewer than two groups large enough to compare."
    )
    return (
        f"<h3>{html.escape(title)}</h3>{table(['group', 'tickets', 'accuracy'], rows)}"
        f"<p class='note'>{html.escape(note)}</p>"
    )


def _axis_html(axis: str, figures: Mapping[str, Any]) -> str:
    per_class = figures["per_class"]
    rows, classes = [], []
    for label, s in per_class.items():
        rows.append(
            [label, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"])]
        )
        classes.append("weak" if s["support"] and s["f1"] < 0.5 else "")
    summary = (
        f"accuracy {pct(figures['accuracy'])}, macro-F1 {figures['macro_f1']:.3f}, "
        f"majority-class baseline {pct(figures['majority_baseline'])}, chance {pct(figures['chance'])}"
    )
    confusion = figures["confusion"]
    image = confusion_png(axis, confusion["labels"], confusion["matrix"])
    confused = [[c["true"], c["predicted"], str(c["count"])] for c in figures["top_confusions"]]
    return (
        f"<h2>Axis {html.escape(axis)}</h2><p>{html.escape(summary)}</p>"
        f"<details open><summary>Per-class precision / recall (red: F1 below 0.5)</summary>"
        f"{table(['label', 'precision', 'recall', 'F1', 'support'], rows, classes)}</details>"
        f"<img alt='confusion matrix of {html.escape(axis)}' src='{image}'>"
        f"<h3>Most frequent confusions</h3>{table(['true', 'predicted', 'tickets'], confused)}"
    )


def _overview_html(report: Mapping[str, Any]) -> str:
    outcomes, escalation, latency = report["outcomes"], report["escalation"], report["latency_ms"]
    consistency = report["consistency"]
    share = ", ".join(f"{k} {pct(v)}" for k, v in escalation["tier_mix"].items())
    kinds = ", ".join(f"{k} {pct(v)}" for k, v in outcomes["triaged_by_kind"].items()) or "—"
    rows = [
        ["accuracy (mean over axes)", pct(report["accuracy"])],
        ["macro-F1 (mean over axes)", f"{report['macro_f1']:.3f}"],
        ["all axes right", pct(report["all_axes_correct"])],
        ["queue right (all tickets)", pct(report["routing"]["accuracy"])],
        ["queue right (routed tickets)", pct(report["routing"]["routed_accuracy"])],
        ["accuracy of routed tickets", pct(report["routed_accuracy"])],
        [
            "routed",
            f"{pct(outcomes['routed'])} (flagged low confidence {pct(outcomes['routed_low_confidence'])})",
        ],
        ["triaged", f"{pct(outcomes['triaged'])} ({kinds})"],
        ["escalation rate", pct(escalation["rate"])],
        ["decided by (tier mix)", share],
        ["cost per 10k tickets", cost_per_10k(report["cost"])],
        ["latency p50 / p95", f"{latency['p50']:.1f} ms / {latency['p95']:.1f} ms"],
        [f"consistency over {consistency['repeats']} runs", pct(consistency["share"])],
    ]
    return table(["figure", "value"], rows)


def _routing_html(routing: Mapping[str, Any]) -> str:
    """Queue accuracy, where each true queue's tickets went, and how labels and queues disagree."""
    summary = (
        f"Queue right on {pct(routing['accuracy'])} of tickets (a ticket with no answer counts as wrong); "
        f"{pct(routing['routed_accuracy'])} of the tickets the pipeline routed; "
        f"{pct(routing['routed_to_right_queue'])} of all tickets reached the right queue with no human step. "
        f"Sending everything to the largest queue would be right on {pct(routing['majority_baseline'])}. "
        f"Queue right although a label was wrong: {pct(routing['queue_right_some_label_wrong'])}."
    )
    worst = set(routing["worst_queues"])
    rows, classes = [], []
    for queue, figures in routing["per_queue"].items():
        went = ", ".join(f"{m['queue']} ({m['count']})" for m in figures["misrouted_to"])
        rows.append([queue, str(figures["support"]), pct(figures["accuracy"]), went])
        classes.append("weak" if queue in worst else "")
    axes = [
        [axis, pct(f["label_wrong_queue_right"]), pct(f["label_right_queue_wrong"])]
        for axis, f in routing["by_axis"].items()
    ]
    note = (
        "Worst first; red: the worst queues with at least "
        f"{routing['min_queue_size_for_worst']} tickets. The queue comes from the taxonomy's routing rules "
        "applied to the labels, as the service does, so a wrong label on an axis the rules do not read "
        "(or a confusion between two labels routed to one queue) still reaches the right queue."
    )
    return (
        f"<h2>Routing: the right queue</h2><p>{html.escape(summary)}</p>"
        f"{table(['true queue', 'tickets', 'queue right', 'misrouted to'], rows, classes)}"
        f"<p class='note'>{html.escape(note)}</p>"
        f"<h3>Labels and queues disagreeing, per axis (share of all tickets)</h3>"
        f"{table(['axis', 'label wrong, queue right', 'label right, queue wrong'], axes)}"
    )


def _curve_html(curve: Mapping[str, Any]) -> str:
    rows = [
        [
            f"{p['threshold']:.2f}",
            pct(p["coverage"]),
            str(p["n"]),
            pct(p["accuracy"]),
            pct(p["all_axes_correct"]),
        ]
        for p in curve["points"]
    ]
    note = (
        "Read a row as: if the tier may decide alone whenever its least confident axis is at least t, it "
        "takes 'coverage' of the tickets and is right on them with 'accuracy'. Pick the lowest t whose "
        "accuracy meets the precision you need; the rest escalates."
    )
    return (
        f"<h2>Coverage vs accuracy ({html.escape(curve['source'])})</h2>"
        f"<p class='note'>{html.escape(note)}</p>"
        f"<img alt='coverage curve' src='{coverage_png(curve['points'], curve['source'])}'>"
        f"{table(['t', 'coverage', 'tickets', 'accuracy', 'all axes right'], rows)}"
    )


def _cv_html(cv: Mapping[str, Any]) -> str:
    rows = [
        [
            str(f["fold"]),
            str(f["n_train"]),
            str(f["n_test"]),
            pct(f["accuracy"]),
            f"{f['macro_f1']:.3f}",
            f"{f['train_s']:.1f}",
            f"{f['eval_s']:.1f}",
        ]
        for f in cv["per_fold"]
    ]
    title = (
        f"{cv['folds']}-fold stratified cross-validation: "
        f"accuracy {pct(cv['accuracy_mean'])} ± {pct(cv['accuracy_std'])}"
    )
    return f"<h2>{html.escape(title)}</h2>" + table(
        ["fold", "train", "test", "accuracy", "macro-F1", "train s", "eval s"], rows
    )


def _retrieval_html(retrieval: Mapping[str, Any]) -> str:
    k = retrieval["k"]
    rows = [
        [axis, pct(recall), pct(retrieval["recall_at_k_nearest"][axis])]
        for axis, recall in retrieval["recall_at_k"].items()
    ]
    note = (
        f"The share of tickets whose true label is among the labels of the {k} labeled examples "
        f"retrieved for it (from {retrieval['source']}, similarity floor "
        f"{retrieval['min_similarity']:g}, {per_label_phrase(retrieval['per_label'])}, "
        f"{retrieval['mean_retrieved']:.1f} retrieved per ticket on average): the most that examples "
        f"retrieved into a prompt can show the model. Beside it, the same for the plain {k} nearest."
    )
    return (
        f"<h2>Example store: label recall@{k}</h2><p class='note'>{html.escape(note)}</p>"
        f"{table(['axis', f'recall@{k} as retrieved', f'the {k} nearest'], rows)}"
    )


def _corrections_html(report: Mapping[str, Any]) -> str:
    """``evaluate --corrections``: the join of corrections with live decisions, accuracy per tier."""
    rows = [[name, value] for name, value in join_rows(report["corrections"])]
    note = f"The gold labels are the live labels with the correction's on top: {CONFIRMED_NOTE}."
    tiers = (
        _groups_html("Accuracy by the tier that decided", report["by_tier"]) if report.get("by_tier") else ""
    )
    return (
        f"<h2>Corrections joined with the live decisions</h2>{table(['figure', 'value'], rows)}"
        f"<p class='note'>{html.escape(note)}</p>{tiers}"
    )


def render(report: Mapping[str, Any]) -> str:
    run = report["run"]
    title = f"ticket-router evaluation: {evaluated_source(run)}"
    subtitle = (
        f"{report['n']} tickets · taxonomy {run['taxonomy']} · tiers {','.join(run['tiers'])} · "
        f"{run['repeat']} run(s) · {run['wall_s']:.1f} s"
    )
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>",
    ]
    if report.get("corrections"):
        parts.append(_corrections_html(report))
    parts += ["<h2>Overview</h2>", _overview_html(report)]
    if report.get("cv"):
        parts.append(_cv_html(report["cv"]))
    parts.append(_routing_html(report["routing"]))
    parts.append(_groups_html("Accuracy by language", report["by_language"]))
    parts.append(_groups_html("Accuracy by account tier", report["by_account_tier"]))
    parts.append(_curve_html(report["coverage_curve"]))
    if report.get("retrieval"):
        parts.append(_retrieval_html(report["retrieval"]))
    parts.extend(_axis_html(axis, figures) for axis, figures in report["axes"].items())
    parts.append("</body></html>")
    return "".join(parts)
