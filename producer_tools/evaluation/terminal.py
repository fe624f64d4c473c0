"""The report as rich tables on the terminal: the figures a reader acts on, not every class.

Per-class tables for 77 intents would bury the headline, so the terminal shows the weakest
classes per axis and leaves the full tables to ``--json`` and ``--html``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

WEAKEST_SHOWN = 3
PIPED_WIDTH = 120
"""Width when stdout is not a terminal (CI logs, files): rich's default of 80 wraps every row."""


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def cost_per_10k(cost: Mapping[str, Any]) -> str:
    """Cost per 10k tickets, and with retrieval on, what it would be without the retrieved examples:
    the figure that says whether retrieval's accuracy is worth its uncached input."""
    text = f"${cost['per_10k_tickets_usd']:.2f}"
    retrieved = cost.get("retrieved_tokens_per_ticket", 0)
    if not retrieved:
        return text
    without = cost["per_10k_tickets_without_retrieval_usd"]
    per_ticket = f"{retrieved:,.0f} retrieved-example tokens per ticket"
    return f"{text} (without retrieved examples: ${without:.2f}; {per_ticket})"


def weakest_classes(per_class: Mapping[str, Mapping[str, Any]], count: int = WEAKEST_SHOWN) -> str:
    """The ``count`` classes with the lowest F1 among those present in the gold labels."""
    present = [(stats["f1"], label) for label, stats in per_class.items() if stats["support"] > 0]
    return ", ".join(f"{label} ({f1:.2f})" for f1, label in sorted(present)[:count])


def axes_table(report: Mapping[str, Any]) -> Table:
    table = Table(title="Accuracy per axis")
    for column in ("axis", "accuracy", "macro-F1", "majority", "chance", "weakest classes (F1)"):
        table.add_column(column, justify="left" if column in ("axis", "weakest classes (F1)") else "right")
    for axis, figures in report["axes"].items():
        table.add_row(
            axis,
            pct(figures["accuracy"]),
            f"{figures['macro_f1']:.3f}",
            pct(figures["majority_baseline"]),
            pct(figures["chance"]),
            weakest_classes(figures["per_class"]),
        )
    table.add_row(
        "[bold]mean[/bold]",
        f"[bold]{pct(report['accuracy'])}[/bold]",
        f"{report['macro_f1']:.3f}",
        "",
        "",
        "",
    )
    return table


def _shares(shares: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {pct(share)}" for name, share in shares.items()) or "—"


def _gap(section: Mapping[str, Any]) -> str:
    groups = ", ".join(f"{g} {pct(v['accuracy'])} (n={v['n']})" for g, v in section["groups"].items())
    gap = section["largest_gap"]
    if gap is None:
        return groups
    best = f"{gap['best']} {pct(gap['best_accuracy'])}"
    worst = f"{gap['worst']} {pct(gap['worst_accuracy'])}"
    return f"{groups}\nlargest gap {pct(gap['gap'])}: {best} vs {worst}"


def queue_headline(routing: Mapping[str, Any]) -> str:
    """Queue accuracy over all tickets, then over the routed ones, then the one-queue baseline."""
    return (
        f"{pct(routing['accuracy'])} (of routed tickets {pct(routing['routed_accuracy'])}; "
        f"all sent to the largest queue {pct(routing['majority_baseline'])})"
    )


def label_wrong_queue_right(routing: Mapping[str, Any]) -> str:
    """The share whose queue was right despite a wrong label, and which axes those labels were on."""
    axes = sorted(
        ((figures["label_wrong_queue_right"], axis) for axis, figures in routing["by_axis"].items()),
        reverse=True,
    )
    detail = ", ".join(f"{axis} {pct(share)}" for share, axis in axes if share > 0)
    return f"{pct(routing['queue_right_some_label_wrong'])}" + (f" ({detail})" if detail else "")


def worst_queues_table(routing: Mapping[str, Any]) -> Table | None:
    """The queues that lost the largest share of their tickets, and where those tickets went."""
    if not routing["worst_queues"]:
        return None
    table = Table(
        title="Worst queues (true queue)",
        caption=f"queues under {routing['min_queue_size_for_worst']} tickets left out; "
        "every queue: --json, routing.per_queue",
    )
    for column in ("queue", "tickets", "queue right", "misrouted to"):
        table.add_column(column, justify="right" if column in ("tickets", "queue right") else "left")
    for queue in routing["worst_queues"]:
        figures = routing["per_queue"][queue]
        went = ", ".join(f"{m['queue']} ({m['count']})" for m in figures["misrouted_to"])
        table.add_row(queue, str(figures["support"]), pct(figures["accuracy"]), went)
    return table


def pipeline_table(report: Mapping[str, Any]) -> Table:
    table = Table(title="Pipeline", show_header=False)
    table.add_column("figure")
    table.add_column("value")
    outcomes, escalation = report["outcomes"], report["escalation"]
    latency, consistency = report["latency_ms"], report["consistency"]
    rows = [
        ("tickets", str(report["n"])),
        ("all axes right", pct(report["all_axes_correct"])),
        ("queue right", queue_headline(report["routing"])),
        ("queue right, a label wrong", label_wrong_queue_right(report["routing"])),
        ("accuracy of routed tickets", pct(report["routed_accuracy"])),
        (
            "routed",
            f"{pct(outcomes['routed'])} (flagged low confidence {pct(outcomes['routed_low_confidence'])})",
        ),
        ("triaged", f"{pct(outcomes['triaged'])} {_shares(outcomes['triaged_by_kind'])}"),
        ("escalation rate", pct(escalation["rate"])),
        ("decided by (tier mix)", _shares(escalation["tier_mix"])),
        ("cost per 10k tickets", cost_per_10k(report["cost"])),
        ("latency p50 / p95", f"{latency['p50']:.1f} ms / {latency['p95']:.1f} ms"),
        (
            f"consistency over {consistency['repeats']} runs",
            pct(consistency["share"]) if consistency["share"] is not None else "— (use --repeat K)",
        ),
        ("by language", _gap(report["by_language"])),
        ("by account tier", _gap(report["by_account_tier"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def llm_table(report: Mapping[str, Any]) -> Table | None:
    """Claude calls per model: what was billed, whether answers were usable, whether the cache hit.

    Token columns: input (uncached), cached (cache reads), written (cache writes), output, and
    thinking (part of output).
    """
    llm = report.get("llm") or {}
    if not llm:
        return None
    table = Table(title="Claude calls per model (all repeats; tokens)")
    columns = ("model", "tier", "tickets", "invalid", "cache hits", "input", "cached", "written")
    for column in (*columns, "output", "thinking", "USD"):
        text = column in ("model", "tier")
        table.add_column(column, justify="left" if text else "right", no_wrap=text)
    for model, row in llm.items():
        tokens = row["tokens"]
        table.add_row(
            model,
            row["tier"],
            str(row["tickets"]),
            str(row["invalid_outputs"]),
            f"{row['reading_cache']}/{row['tickets']}",
            *(f"{tokens[kind]:,}" for kind in ("input", "cache_read", "cache_write", "output", "thinking")),
            f"{row['cost_usd']:.4f}",
        )
    return table


def curve_table(report: Mapping[str, Any]) -> Table:
    curve = report["coverage_curve"]
    table = Table(title=f"Coverage vs accuracy ({curve['source']})", caption="t: least confident axis >= t")
    for column in ("t", "coverage", "tickets", "accuracy", "all axes right"):
        table.add_column(column, justify="right")
    for point in curve["points"]:
        table.add_row(
            f"{point['threshold']:.2f}",
            pct(point["coverage"]),
            str(point["n"]),
            pct(point["accuracy"]),
            pct(point["all_axes_correct"]),
        )
    return table


def cv_table(cv: Mapping[str, Any]) -> Table:
    table = Table(
        title=f"{cv['folds']}-fold cross-validation: accuracy "
        f"{pct(cv['accuracy_mean'])} ± {pct(cv['accuracy_std'])}"
    )
    for column in ("fold", "train", "test", "accuracy", "macro-F1", "train s", "eval s"):
        table.add_column(column, justify="right")
    for fold in cv["per_fold"]:
        table.add_row(
            str(fold["fold"]),
            str(fold["n_train"]),
            str(fold["n_test"]),
            pct(fold["accuracy"]),
            f"{fold['macro_f1']:.3f}",
            f"{fold['train_s']:.1f}",
            f"{fold['eval_s']:.1f}",
        )
    return table


def per_label_phrase(per_label: int) -> str:
    """How the router caps examples sharing one label combination (``RETRIEVED_PER_LABEL``)."""
    return "no per-label limit" if per_label == 0 else f"at most {per_label} per label combination"


def retrieval_table(retrieval: Mapping[str, Any]) -> Table:
    """Label recall@k per axis: how often the k retrieved examples show the ticket's true label."""
    k = retrieval["k"]
    table = Table(
        title=f"Example store: label recall@{k} (examples from {retrieval['source']})",
        caption=f"similarity floor {retrieval['min_similarity']:g}, "
        f"{retrieval['mean_retrieved']:.1f} examples retrieved per ticket on average",
    )
    table.add_column("axis")
    table.add_column(f"recall@{k} as retrieved ({per_label_phrase(retrieval['per_label'])})", justify="right")
    table.add_column(f"the {k} nearest", justify="right")
    for axis, recall in retrieval["recall_at_k"].items():
        table.add_row(axis, pct(recall), pct(retrieval["recall_at_k_nearest"][axis]))
    return table


def evaluated_source(run: Mapping[str, Any]) -> str:
    """What was scored: the labeled file, or the live decisions named by a corrections topic."""
    return run.get("labeled_file") or f"the live router's decisions, corrected on {run['corrections_topic']}"


def join_rows(join: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The join of corrections with live decisions, in the order a reader checks it (shared by the
    terminal and the HTML page so both say the same)."""
    named = ", ".join(f"{field} {count}" for field, count in join["named"].items())
    not_scored = ", ".join(f"{why} {n}" for why, n in join["not_scored"].items()) or "0"
    window = ", ".join(f"{name} {join[name]}" for name in ("since", "until") if join.get(name) is not None)
    return [
        (
            "corrections read",
            f"{join['records_read']} records on {join['topic']} ({join['invalid']} not a correction, "
            f"{join['republished_copies']} repeating an id: the router's republished copies)",
        ),
        ("distinct corrections", str(join["corrections"])),
        ("outside the window", f"{join['outside_window']} ({window or 'no --since/--until'})"),
        ("replaced by a later correction of the event", str(join["superseded"])),
        ("corrected events", str(join["corrected_events"])),
        ("joined with a live decision (scored)", str(join["joined"])),
        ("unmatched (no longer on the queue or triage topics)", str(join["unmatched"])),
        ("not scored", not_scored),
        (
            "events on the queue and triage topics",
            f"{join['events_read']} (routed {join['routed_events']}, triaged {join['triaged_events']})",
        ),
        ("correction rate (scored / events)", pct(join["correction_rate"])),
        ("changed by the correction", f"{join['changed']} ({pct(join['change_rate'])} of events)"),
        ("fields a person named", named),
    ]


CONFIRMED_NOTE = (
    "an axis a correction does not name keeps the router's label, taken as confirmed: "
    "accuracy is an upper bound on the axes people rarely correct"
)


def corrections_table(report: Mapping[str, Any]) -> Table | None:
    """``evaluate --corrections``: how the corrections met the live decisions, and accuracy per
    tier that decided."""
    join = report.get("corrections")
    if not join:
        return None
    table = Table(
        title="Corrections joined with the live decisions", show_header=False, caption=CONFIRMED_NOTE
    )
    table.add_column("figure")
    table.add_column("value")
    for name, value in join_rows(join):
        table.add_row(name, value)
    if report.get("by_tier"):
        table.add_row("by tier that decided", _gap(report["by_tier"]))
    return table


def render(report: Mapping[str, Any], console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=PIPED_WIDTH)
    run = report["run"]
    models = ", ".join(f"{tier} {model}" for tier, model in (run.get("models") or {}).items())
    console.print(
        f"[bold]{evaluated_source(run)}[/bold]: {report['n']} tickets, taxonomy {run['taxonomy']}, "
        f"tiers {','.join(run['tiers'])}{f' ({models})' if models else ''}, {run['wall_s']:.1f} s"
    )
    corrections = corrections_table(report)
    if corrections is not None:
        console.print(corrections)
    console.print(axes_table(report))
    console.print(pipeline_table(report))
    worst = worst_queues_table(report["routing"])
    if worst is not None:
        console.print(worst)
    llm = llm_table(report)
    if llm is not None:
        console.print(llm)
    console.print(curve_table(report))
    if report.get("retrieval"):
        console.print(retrieval_table(report["retrieval"]))
    if report.get("cv"):
        console.print(cv_table(report["cv"]))
