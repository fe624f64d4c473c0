"""``ticket-tools shadow-report NAME``: the candidate ``NAME`` against the live router, ticket by ticket.

Reads what the shadow decided (topic ``shadow.NAME``, written by ``ticket-router consume --shadow
NAME``) and what the live router decided (its queue topics and the triage topic), joins them by
event id, and reports: agreement per axis and on the queue, the queue change matrix (live queue →
shadow queue), escalation and triage rates, cost per 10k tickets and latency on both sides, and
the disagreeing tickets. Both sides are read from their start to their end at the time of reading,
with no consumer group, so running the report changes nothing for either router.

  ticket-tools shadow-report haiku-only
  ticket-tools shadow-report haiku-only --json shadow.json --html shadow.html

The JSON has a ``calibration`` section (the shadow's confidences, and whether each label equals the
live router's) that ``ticket-tools tune`` reads to propose thresholds for the candidate.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from consumer.errors import UserError
from consumer.taxonomy import Taxonomy, load_taxonomy
from producer_tools.decisions import read_live_decisions, read_to_end
from producer_tools.evaluation.shadow import ShadowRead, latest_shadow_decisions, shadow_report
from producer_tools.evaluation.terminal import PIPED_WIDTH, pct
from producer_tools.kafka_io import Connection, add_connection_arguments, cluster_topics, connection_from_args
from schemas.codec import DecodeError, decode
from schemas.shadow import ShadowDecision, shadow_name_problem, shadow_topic

DEFAULT_SHOWN = 20


def add_parser(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "shadow-report",
        help="compare a shadow (consume --shadow NAME) with the live router: agreement, queue changes, cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="the shadow's name (its topic is shadow.NAME)")
    parser.add_argument(
        "--taxonomy",
        type=Path,
        metavar="FILE",
        help="the live router's taxonomy, whose queue topics are read (default: TAXONOMY_PATH)",
    )
    parser.add_argument(
        "--show",
        type=int,
        default=DEFAULT_SHOWN,
        metavar="N",
        help=f"disagreeing tickets listed on the terminal (default {DEFAULT_SHOWN}; all are in --json)",
    )
    parser.add_argument(
        "--json", type=Path, dest="json_out", metavar="OUT.json", help="write the full report"
    )
    parser.add_argument(
        "--html", type=Path, dest="html_out", metavar="OUT.html", help="write a self-contained page"
    )
    add_connection_arguments(parser)
    parser.set_defaults(handler=run)


# -- reading --------------------------------------------------------------------------------------


def shadow_decision_of(value: bytes | None) -> ShadowDecision | None:
    """A record of the shadow topic, or None when it is not a ShadowDecision."""
    try:
        return decode(ShadowDecision, value or b"")
    except (DecodeError, ValidationError):
        return None


async def read_shadow(connection: Connection, name: str) -> ShadowRead:
    """The shadow topic, to its end; a missing topic means the shadow never ran on this cluster."""
    topic = shadow_topic(name)
    if topic not in await cluster_topics(connection):
        raise UserError(
            f"topic {topic!r} does not exist on {connection.bootstrap}: no shadow named {name!r} has run "
            f"here (start one with: ticket-router consume --shadow {name})"
        )
    try:
        records = await read_to_end(connection, [topic])
    except TimeoutError:
        raise UserError(f"reading {topic} from {connection.bootstrap} did not finish in time") from None
    return latest_shadow_decisions(shadow_decision_of(value) for _, value in records)


async def build_report(connection: Connection, taxonomy: Taxonomy, name: str) -> dict[str, Any]:
    """Shadow first, then live: a ticket the shadow decided has been read by the live router too."""
    shadow = await read_shadow(connection, name)
    live = await read_live_decisions(connection, connection.settings, taxonomy)
    triage = connection.settings.triage_topic
    report = shadow_report(name, live, shadow, taxonomy.axis_names, triage)
    report["run"] = {
        "shadow_topic": shadow_topic(name),
        "triage_topic": triage,
        "queue_topic_prefix": connection.settings.queue_topic_prefix,
        "taxonomy": taxonomy.name,
        "bootstrap": connection.bootstrap,
    }
    return report


def run(args: argparse.Namespace) -> int:
    problem = shadow_name_problem(args.name)
    if problem is not None:
        raise UserError(f"NAME {args.name!r}: {problem}")
    if args.show < 0:
        raise UserError(f"--show must be 0 or more, not {args.show}")
    connection = connection_from_args(args)
    origin = "--taxonomy" if args.taxonomy is not None else "TAXONOMY_PATH"
    taxonomy = load_taxonomy(args.taxonomy or connection.settings.taxonomy_path, origin=origin)
    report = asyncio.run(build_report(connection, taxonomy, args.name))
    if args.json_out is not None:
        args.json_out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    if args.html_out is not None:
        args.html_out.write_text(render_html(report), encoding="utf-8")
    render_terminal(report, args.show)
    if report["join"]["joined"] == 0:
        print(
            f"ticket-tools shadow-report: error: no event was decided by both the live router and "
            f"{args.name!r} ({report['join']['live_events']} live, {report['join']['shadow_events']} shadow)",
            file=sys.stderr,
        )
        return 1
    return 0


# -- terminal -------------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def usd(value: float | None) -> str:
    return "—" if value is None else f"${value:.2f}"


def shares(values: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {pct(share)}" for name, share in values.items()) or "—"


def agreed(figures: Mapping[str, Any]) -> tuple[str, str]:
    return pct(figures["agreement"]), f"{figures['agree']}/{figures['compared']}"


def comparison_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, live, shadow) for the side-by-side table of both renderers."""
    live, shadow = report["live"], report["shadow"]

    def both(render: Any, *path: str) -> tuple[str, str]:
        values = []
        for side in (live, shadow):
            value = side
            for key in path:
                value = value[key]
            values.append(render(value))
        return values[0], values[1]

    return [
        ("triage rate", *both(pct, "triage_rate")),
        ("triaged, by kind", *both(shares, "triaged_by_kind")),
        ("escalation rate", *both(pct, "escalation_rate")),
        ("decided by (tier mix)", *both(shares, "tier_mix")),
        ("cost per 10k tickets", *both(usd, "cost_per_10k_tickets_usd")),
        ("latency p50 (routed)", *both(ms, "latency_ms", "p50")),
        ("latency p95 (routed)", *both(ms, "latency_ms", "p95")),
    ]


def join_line(report: Mapping[str, Any]) -> str:
    join = report["join"]
    return (
        f"{join['joined']} events decided by both; {join['live_only']} only live (before the shadow "
        f"started, or not read by it yet), {join['shadow_only']} only in the shadow (live records "
        f"expired or not yet read)"
    )


def agreement_table(report: Mapping[str, Any]) -> Table:
    table = Table(title="Agreement with the live router")
    for column in ("axis", "agreement", "same / compared"):
        table.add_column(column, justify="left" if column == "axis" else "right")
    agreement = report["agreement"]
    for axis, figures in agreement["axes"].items():
        table.add_row(axis, *agreed(figures))
    table.add_row("[bold]all axes[/bold]", *agreed(agreement["all_axes"]))
    table.add_row("[bold]queue[/bold]", *agreed(agreement["queue"]))
    return table


def comparison_table(report: Mapping[str, Any]) -> Table:
    table = Table(title=f"Live vs shadow {report['name']} (the same {report['join']['joined']} events)")
    table.add_column("figure")
    table.add_column("live", justify="right")
    table.add_column("shadow", justify="right")
    for row in comparison_rows(report):
        table.add_row(*row)
    return table


def queue_changes_table(changes: Mapping[str, Any]) -> Table | None:
    if not changes["top"]:
        return None
    table = Table(
        title=f"Queue changes: {changes['changed']} events ({pct(changes['changed_share'])})",
        caption="the most frequent; the whole matrix: --json queue_changes, --html",
    )
    for column in ("live queue", "shadow queue", "events"):
        table.add_column(column, justify="right" if column == "events" else "left")
    for change in changes["top"]:
        table.add_row(change["live"], change["shadow"], str(change["count"]))
    return table


def confidence(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def disagreements_table(rows: Sequence[Mapping[str, Any]], shown: int) -> Table | None:
    if not rows or shown == 0:
        return None
    table = Table(
        title=f"Disagreements: {min(shown, len(rows))} of {len(rows)}, the shadow's surest first",
        caption="all of them: --json disagreements",
    )
    for column in ("event", "ticket", "axis", "live → shadow", "confidence live / shadow"):
        table.add_column(column)
    for row in rows[:shown]:
        table.add_row(
            row["event_id"],
            row["ticket_id"],
            row["axis"],
            f"{row['live']} → {row['shadow']}",
            f"{confidence(row['live_confidence'])} / {confidence(row['shadow_confidence'])}",
        )
    return table


def render_terminal(report: Mapping[str, Any], shown: int, console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=PIPED_WIDTH)
    console.print(f"[bold]shadow {report['name']}[/bold] against the live router: {join_line(report)}")
    if not report["join"]["joined"]:
        return
    console.print(agreement_table(report))
    console.print(comparison_table(report))
    for table in (
        queue_changes_table(report["queue_changes"]),
        disagreements_table(report["disagreements"], shown),
    ):
        if table is not None:
            console.print(table)


# -- HTML -----------------------------------------------------------------------------------------


def agreement_png(agreement: Mapping[str, Any]) -> str:
    """Horizontal bars: agreement per axis, all axes, and the queue."""
    from producer_tools.evaluation.html_report import _pyplot, png_data_uri

    plt = _pyplot()
    rows = [(axis, f["agreement"]) for axis, f in agreement["axes"].items()]
    rows += [("all axes", agreement["all_axes"]["agreement"]), ("queue", agreement["queue"]["agreement"])]
    figure, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    names = [name for name, _ in rows]
    values = [value if value is not None else 0.0 for _, value in rows]
    ax.barh(range(len(rows)), values, color="#4c78a8")
    ax.set_yticks(range(len(rows)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of events where the shadow says the same as the live router")
    for position, (_, value) in enumerate(rows):
        ax.text(min((value or 0.0) + 0.01, 0.9), position, pct(value), va="center", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    uri = png_data_uri(figure)
    plt.close(figure)
    return uri


def queue_change_png(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> str:
    """Heatmap of live queue (rows) → shadow queue (columns), coloured by the share of each live
    queue's events, so a small queue that moves shows as clearly as a large one."""
    from producer_tools.evaluation.html_report import matrix_png

    title = "Queue changes (colour = share of the live queue's events)"
    return matrix_png(
        labels, matrix, ("shadow queue", "live queue"), title, annotate_up_to=20, cell_inches=0.35
    )


def comparison_png(live: Mapping[str, Any], shadow: Mapping[str, Any]) -> str:
    """Live and shadow side by side: rates, cost per 10k tickets, latency."""
    from producer_tools.evaluation.html_report import _pyplot, png_data_uri

    plt = _pyplot()
    figure, (rates, cost, latency) = plt.subplots(1, 3, figsize=(12, 3.6))
    width = 0.38
    panels = (
        (rates, ("triage_rate", "escalation_rate"), ("triage", "escalation"), "share of events"),
        (cost, ("cost_per_10k_tickets_usd",), ("per 10k tickets",), "USD"),
        (latency, ("p50", "p95"), ("p50", "p95"), "ms (routed tickets)"),
    )
    for ax, keys, names, unit in panels:
        for offset, (side, values) in enumerate((("live", live), ("shadow", shadow))):
            source = values["latency_ms"] if ax is latency else values
            heights = [source[key] or 0.0 for key in keys]
            positions = [index + (offset - 0.5) * width for index in range(len(keys))]
            ax.bar(positions, heights, width, label=side, color=("#9d9d9d", "#f58518")[offset])
        ax.set_xticks(range(len(keys)), names)
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3)
    rates.set_ylim(0, 1)
    cost.set_ylim(bottom=0)
    latency.set_ylim(bottom=0)
    rates.legend()
    uri = png_data_uri(figure)
    plt.close(figure)
    return uri


def render_html(report: Mapping[str, Any]) -> str:
    from producer_tools.evaluation.html_report import CSS, table

    name = report["name"]
    title = f"ticket-router shadow report: {name}"
    join = report["join"]
    join_rows = [
        ["events decided by both (joined)", str(join["joined"])],
        ["live events read", str(join["live_events"])],
        ["shadow events read", str(join["shadow_events"])],
        ["only live", str(join["live_only"])],
        ["only in the shadow", str(join["shadow_only"])],
        ["shadow records without an event id (unreadable input)", str(join["shadow_without_event_id"])],
        ["shadow records that were not ShadowDecisions", str(join["shadow_unreadable"])],
    ]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(join_line(report))}</p>",
        "<h2>The join</h2>",
        table(["", "events"], join_rows),
    ]
    if join["joined"]:
        parts += _compared_html(report)
    parts.append("</body></html>")
    return "".join(parts)


def _compared_html(report: Mapping[str, Any]) -> list[str]:
    from producer_tools.evaluation.html_report import table

    agreement, changes = report["agreement"], report["queue_changes"]
    agreement_rows = [[axis, *agreed(f)] for axis, f in agreement["axes"].items()]
    agreement_rows += [["all axes", *agreed(agreement["all_axes"])], ["queue", *agreed(agreement["queue"])]]
    matrix_rows = [
        [live, *(str(cell) for cell in row)]
        for live, row in zip(changes["labels"], changes["matrix"], strict=True)
    ]
    disagreement_rows = [
        [
            row["event_id"],
            row["ticket_id"],
            row["axis"],
            row["live"],
            row["shadow"],
            confidence(row["live_confidence"]),
            confidence(row["shadow_confidence"]),
        ]
        for row in report["disagreements"]
    ]
    note = (
        "The live router is the reference, not the truth: a disagreement is a ticket to look at. "
        "Cost: the live router's triage records carry no cost, so its triaged tickets count as $0. "
        "Latency: routed tickets only."
    )
    return [
        "<h2>Agreement with the live router</h2>",
        f"<img alt='agreement per axis' src='{agreement_png(agreement)}'>",
        table(["axis", "agreement", "same / compared"], agreement_rows),
        "<h2>Live vs shadow</h2>",
        f"<img alt='live vs shadow' src='{comparison_png(report['live'], report['shadow'])}'>",
        table(["figure", "live", "shadow"], [list(row) for row in comparison_rows(report)]),
        f"<p class='note'>{html.escape(note)}</p>",
        f"<h2>Queue changes: {changes['changed']} events ({pct(changes['changed_share'])})</h2>",
        f"<img alt='queue change matrix' src='{queue_change_png(changes['labels'], changes['matrix'])}'>",
        "<details><summary>The matrix (rows: live queue, columns: shadow queue)</summary>",
        table(["live \\ shadow", *changes["labels"]], matrix_rows),
        "</details>",
        f"<h2>Disagreeing tickets ({len(disagreement_rows)})</h2>",
        table(
            ["event", "ticket", "axis", "live", "shadow", "live confidence", "shadow confidence"],
            disagreement_rows,
        ),
    ]
