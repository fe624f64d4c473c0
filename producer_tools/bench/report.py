"""From the workers' measurements to bench-results.json and the terminal tables: pure functions.

The derived figures (Little's-law bound, ratios, target verdicts) are computed in one place from the
stored numbers, so a test can recompute them from the JSON and catch a report that disagrees with
its own inputs.
"""

from __future__ import annotations

import os
import platform
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from producer_tools.bench.scenarios import (
    ESCALATION_RATE,
    FAST_LATENCY_MS,
    IN_FLIGHT,
    SCENARIO_IDS,
    SCENARIOS,
    STRONG_LATENCY_MS,
    WorkerResult,
)

# Which router run the headline ``cpu_ms_per_ticket`` comes from: the production-like one first.
CPU_HEADLINE_ORDER = ("e", "c", "b", "f")
ROUTER_RUNS = ("b", "c", "e", "f", "g")
SOAK_GROWTH_GOAL_PCT = 10.0
TIER_LATENCY_MS = {"fast": FAST_LATENCY_MS, "strong": STRONG_LATENCY_MS}


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    op: str
    goal: float

    @property
    def met(self) -> bool:
        return self.value >= self.goal if self.op == ">=" else self.value < self.goal

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "op": self.op, "goal": self.goal, "met": self.met}


def mean_fake_latency_ms(results: Mapping[str, WorkerResult]) -> tuple[float, str]:
    """Mean fake-API time a ticket waits for in (e): 50 ms for every fast call plus 180 ms for every
    strong call, from the tier visits the router really made (so the 15% escalations are counted as
    they happened); the configured mix when (e) did not run."""
    latency = results.get("e")
    if latency is not None and latency.tickets > 0 and latency.tier_visits:
        waited = sum(TIER_LATENCY_MS.get(tier, 0.0) * n for tier, n in latency.tier_visits.items())
        return waited / latency.tickets, "measured tier visits of (e)"
    return FAST_LATENCY_MS + ESCALATION_RATE * STRONG_LATENCY_MS, "configured mix (e not run)"


def best_run(runs: Sequence[WorkerResult]) -> WorkerResult:
    """The fastest of a scenario's rounds, which other work on the machine disturbed least.

    Its peak RSS is the highest of all rounds, though: memory is a limit to size a pod for, not a
    speed, so the worst round is the one that counts.
    """
    fastest = max(runs, key=lambda run: run.tps)
    return fastest.model_copy(
        update={
            "peak_rss_mb": max(run.peak_rss_mb for run in runs),
            "runs_tps": [run.tps for run in runs],
        }
    )


def combine_members(members: Sequence[WorkerResult], handled: Sequence[Sequence[str]]) -> WorkerResult:
    """One result for the processes of a multi-process scenario, as if they were one router.

    ``handled`` holds each member's ``partition:offset`` list. A record handled by two members (or
    twice by one, after a rebalance) counts once in ``tickets`` and once in ``duplicates``; the
    time runs from the first record any member consumed to the last outcome any member published.
    CPU is the sum of the members' (what the pair costs); peak RSS is the largest member's (what
    one pod has to be sized for).
    """
    times = Counter(record for records in handled for record in records)
    tickets = len(times)
    seconds = max(max(m.last_at for m in members) - min(m.first_at for m in members), 1e-9)
    cpu_s = sum(m.cpu_s for m in members)
    return WorkerResult(
        scenario=members[0].scenario,
        tickets=tickets,
        seconds=seconds,
        tps=tickets / seconds,
        cpu_s=cpu_s,
        cpu_ms_per_ticket=cpu_s * 1000 / max(tickets, 1),
        peak_rss_mb=max(m.peak_rss_mb for m in members),
        outcomes=dict(sum((Counter(m.outcomes) for m in members), Counter())),
        tier_visits=dict(sum((Counter(m.tier_visits) for m in members), Counter())),
        triage_kinds=dict(sum((Counter(m.triage_kinds) for m in members), Counter())),
        first_at=min(m.first_at for m in members),
        last_at=max(m.last_at for m in members),
        member_tickets=[m.tickets for m in members],
        duplicates=sum(times.values()) - tickets,
    )


def scale_out(results: Mapping[str, WorkerResult], cpus: int | None) -> dict[str, Any] | None:
    """The scale-out run's shape: how the work split, what was repeated, and the ratio's ceiling
    (one process per member, no more than the cores can run at once)."""
    run = results.get("g")
    if run is None:
        return None
    processes = SCENARIOS["g"].processes
    return {
        "processes": processes,
        "ratio_limit": float(min(processes, cpus or processes)),
        "member_tickets": run.member_tickets,
        "duplicates": run.duplicates,
    }


def summarise(results: Mapping[str, WorkerResult], environment: Mapping[str, Any]) -> dict[str, Any]:
    """The bench-results.json document: headline keys first, then how each was derived."""
    doc: dict[str, Any] = {}
    for sid in SCENARIO_IDS:
        if sid in results:
            doc[SCENARIOS[sid].key] = results[sid].tps
    mean_ms, mean_source = mean_fake_latency_ms(results)
    latency_bound = IN_FLIGHT * 1000 / mean_ms
    sdk = results.get("d")
    doc["littles_law_bound_tps"] = min(latency_bound, sdk.tps) if sdk is not None else latency_bound
    router = [results[sid] for sid in ROUTER_RUNS if sid in results]
    if router:
        doc["peak_rss_mb"] = max(run.peak_rss_mb for run in router)
        headline = next(sid for sid in CPU_HEADLINE_ORDER if sid in results)
        doc["cpu_ms_per_ticket"] = results[headline].cpu_ms_per_ticket
        doc["cpu_ms_per_ticket_from"] = headline
    doc["littles_law"] = {
        "in_flight": IN_FLIGHT,
        "mean_fake_latency_ms": mean_ms,
        "mean_fake_latency_from": mean_source,
        "latency_bound_tps": latency_bound,
        "sdk_only_tps": sdk.tps if sdk is not None else None,
    }
    shape = scale_out(results, environment.get("cpus"))
    if shape is not None:
        doc["scale_out"] = shape
    doc["ratios"] = ratios(doc)
    doc["targets"] = [target.as_json() for target in targets(doc, results)]
    doc["scenarios"] = {
        sid: {
            "title": SCENARIOS[sid].title,
            "in_flight": SCENARIOS[sid].in_flight,
            **results[sid].model_dump(),
        }
        for sid in SCENARIO_IDS
        if sid in results
    }
    doc["environment"] = dict(environment)
    return doc


def ratios(doc: Mapping[str, Any]) -> dict[str, float]:
    pairs = {
        "c_over_d": ("router_fake0_tps", "sdk_only_tps"),
        "e_over_f": ("router_latency_tps", "sequential_tps"),
        "e_over_littles_law_bound": ("router_latency_tps", "littles_law_bound_tps"),
        "local_over_passthrough": ("local_tps", "passthrough_tps"),
        "g_over_e": ("scale_out_tps", "router_latency_tps"),
    }
    return {
        name: doc[top] / doc[bottom]
        for name, (top, bottom) in pairs.items()
        if top in doc and bottom in doc and doc[bottom] > 0
    }


def targets(doc: Mapping[str, Any], results: Mapping[str, WorkerResult]) -> list[Target]:
    """The issue's targets that this run has the figures for."""
    found = doc["ratios"]
    chosen: list[Target] = []
    if "c_over_d" in found:
        chosen.append(Target("router at 0 ms / SDK only (c/d)", found["c_over_d"], ">=", 0.8))
    if "e_over_f" in found:
        chosen.append(Target("concurrent / sequential (e/f)", found["e_over_f"], ">=", 30.0))
    if "e_over_littles_law_bound" in found:
        chosen.append(Target("router / Little's-law bound (e)", found["e_over_littles_law_bound"], ">=", 0.8))
    if "local_tps" in doc:
        chosen.append(Target("local tier end to end, tickets/s (b)", doc["local_tps"], ">=", 1500.0))
    if "peak_rss_mb" in doc:
        most = max(results[sid].tickets for sid in ROUTER_RUNS if sid in results)
        chosen.append(Target(f"router peak RSS MB ({most} tickets)", doc["peak_rss_mb"], "<", 300.0))
    return chosen


def environment(bootstrap: str, embedded: bool, load_before: float) -> dict[str, Any]:
    """Where the figures come from; the load average says whether other work shared the CPUs."""
    return {
        "cpus": os.cpu_count(),
        "load_average_1m_before": load_before,
        "load_average_1m_after": os.getloadavg()[0],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "broker": "embedded Tansu (memory storage)" if embedded else bootstrap,
        "fake_api": "in the bench process, on its own thread; workers are separate processes",
    }


def rounds_range(runs_tps: Sequence[float]) -> str:
    """ "slowest–fastest" of a scenario's rounds, so the spread behind the kept figure shows."""
    if len(runs_tps) < 2:
        return ""
    return f"{min(runs_tps):,.0f}–{max(runs_tps):,.0f}"


def render(doc: Mapping[str, Any], console: Console) -> None:
    """Scenario table, then ratios and targets; the JSON has the same figures unrounded.

    "1-core ceiling" is 1000 ÷ CPU ms per ticket: the rate at which the scenario's process would
    use one whole core. Each process is one interpreter, so a run near its ceiling is CPU-bound.
    """
    table = Table(title="ticket-router bench", title_justify="left")
    for column, justify in (
        ("", "left"),
        ("scenario", "left"),
        ("in flight", "right"),
        ("tickets", "right"),
        ("seconds", "right"),
        ("tickets/s", "right"),
        ("rounds", "right"),
        ("CPU ms/ticket", "right"),
        ("1-core ceiling/s", "right"),
        ("peak RSS MB", "right"),
        ("fake API CPU ms/ticket", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for sid, run in doc["scenarios"].items():
        table.add_row(
            sid,
            run["title"],
            str(run["in_flight"]),
            f"{run['tickets']:,}",
            f"{run['seconds']:.2f}",
            f"{run['tps']:,.0f}",
            rounds_range(run.get("runs_tps") or []),
            f"{run['cpu_ms_per_ticket']:.2f}",
            f"{1000 / run['cpu_ms_per_ticket']:,.0f}" if run["cpu_ms_per_ticket"] > 0 else "",
            f"{run['peak_rss_mb']:.0f}",
            f"{run['fake_api_cpu_ms_per_ticket']:.2f}" if run["fake_api_cpu_ms_per_ticket"] else "",
        )
    console.print(table)
    law = doc["littles_law"]
    bound_parts = (
        f"{law['in_flight']} in flight ÷ {law['mean_fake_latency_ms']:.1f} ms"
        f" = {law['latency_bound_tps']:,.0f}/s"
    )
    if law["sdk_only_tps"] is not None:
        bound_parts += f", capped by SDK only {law['sdk_only_tps']:,.0f}/s"
    if law["mean_fake_latency_from"] != "measured tier visits of (e)":
        bound_parts += f"; {law['mean_fake_latency_from']}"
    console.print(f"Little's-law bound: {doc['littles_law_bound_tps']:,.0f} tickets/s ({bound_parts})")
    if "scale_out" in doc:
        console.print(scale_out_line(doc))
    if not doc["targets"]:
        return
    checks = Table(title="targets", title_justify="left")
    for column in ("target", "measured", "goal", ""):
        checks.add_column(column)
    for target in doc["targets"]:
        value = target["value"]
        shown = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
        checks.add_row(
            target["name"],
            shown,
            f"{target['op']} {target['goal']:g}",
            "[green]met[/green]" if target["met"] else "[red]missed[/red]",
        )
    console.print(checks)


def scale_out_line(doc: Mapping[str, Any]) -> str:
    shape = doc["scale_out"]
    split = " + ".join(f"{n:,}" for n in shape["member_tickets"])
    ratio = doc["ratios"].get("g_over_e")
    versus = f" = {ratio:.2f} × (e)" if ratio is not None else ""
    return (
        f"Scale-out (g): {shape['processes']} processes in one group, {doc['scale_out_tps']:,.0f} tickets/s"
        f"{versus} (limit {shape['ratio_limit']:g}); records per process {split}, "
        f"{shape['duplicates']:,} handled twice"
    )


def rss_at(samples: Sequence[tuple[int, float]], tickets: int) -> float:
    """The resident memory read right after ``tickets`` tickets were done."""
    for done, mb in samples:
        if done == tickets:
            return mb
    raise ValueError(f"no RSS sample at {tickets} tickets")


def summarise_soak(result: WorkerResult, baseline: int, environment: Mapping[str, Any]) -> dict[str, Any]:
    """The soak-results.json document: RSS after the baseline and at the end, and the growth."""
    at_baseline = rss_at(result.rss_samples, baseline)
    at_end = rss_at(result.rss_samples, result.tickets)
    growth = (at_end - at_baseline) * 100 / at_baseline
    target = Target(f"RSS growth after the first {baseline:,} tickets, %", growth, "<", SOAK_GROWTH_GOAL_PCT)
    return {
        "soak_tickets": result.tickets,
        "soak_tps": result.tps,
        "rss_baseline_tickets": baseline,
        "rss_mb_at_baseline": at_baseline,
        "rss_mb_at_end": at_end,
        "rss_growth_pct": growth,
        "peak_rss_mb": result.peak_rss_mb,
        "cpu_ms_per_ticket": result.cpu_ms_per_ticket,
        "targets": [target.as_json()],
        "scenarios": {
            "s": {"title": SCENARIOS["s"].title, "in_flight": SCENARIOS["s"].in_flight, **result.model_dump()}
        },
        "environment": dict(environment),
    }


def render_soak(doc: Mapping[str, Any], console: Console) -> None:
    """The soak's figures, and about ten of its RSS samples to show the trend between them."""
    run = doc["scenarios"]["s"]
    console.print(
        f"soak: {doc['soak_tickets']:,} tickets in {run['seconds']:.1f}s ({doc['soak_tps']:,.0f}/s), "
        f"{doc['cpu_ms_per_ticket']:.2f} CPU ms/ticket, peak RSS {doc['peak_rss_mb']:.0f} MB"
    )
    samples = run["rss_samples"]
    shown = samples[:: max(1, len(samples) // 10)]
    console.print("RSS MB by tickets done: " + ", ".join(f"{n:,} {mb:.0f}" for n, mb in shown))
    [target] = doc["targets"]
    verdict = "[green]met[/green]" if target["met"] else "[red]missed[/red]"
    console.print(
        f"RSS after {doc['rss_baseline_tickets']:,} tickets {doc['rss_mb_at_baseline']:.1f} MB, "
        f"at the end {doc['rss_mb_at_end']:.1f} MB: {doc['rss_growth_pct']:+.1f}% "
        f"(goal < {target['goal']:g}%) {verdict}"
    )
