"""``ticket-tools bench``: every scenario runs end to end, and the report agrees with its own figures.

No wall-clock thresholds here: on a shared CI machine throughput says nothing about correctness.
What is checked is that each scenario really ran (every ticket accounted for, the fake's
escalations seen) and that every derived figure can be recomputed from the stored ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from producer_tools.bench.report import best_run, combine_members, summarise, summarise_soak
from producer_tools.bench.scenarios import (
    ESCALATION_RATE,
    FAST_LATENCY_MS,
    IN_FLIGHT,
    QUICK_COUNTS,
    QUICK_SOAK_TICKETS,
    STRONG_LATENCY_MS,
    WorkerResult,
    bench_tickets,
    soak_baseline,
)
from producer_tools.cli import main

REQUIRED_KEYS = (
    "passthrough_tps",
    "local_tps",
    "router_fake0_tps",
    "sdk_only_tps",
    "router_latency_tps",
    "sequential_tps",
    "scale_out_tps",
    "littles_law_bound_tps",
    "peak_rss_mb",
    "cpu_ms_per_ticket",
)
ROUTER_RUNS = ("b", "c", "e", "f", "g")


def check_consistent(doc: dict[str, Any]) -> None:
    """Every derived figure equals its definition recomputed from the stored inputs."""
    law = doc["littles_law"]
    latency_bound = law["in_flight"] * 1000 / law["mean_fake_latency_ms"]
    assert law["latency_bound_tps"] == pytest.approx(latency_bound)
    assert doc["littles_law_bound_tps"] == pytest.approx(min(latency_bound, doc["sdk_only_tps"]))
    ratios = doc["ratios"]
    assert ratios["c_over_d"] == pytest.approx(doc["router_fake0_tps"] / doc["sdk_only_tps"])
    assert ratios["e_over_f"] == pytest.approx(doc["router_latency_tps"] / doc["sequential_tps"])
    assert ratios["e_over_littles_law_bound"] == pytest.approx(
        doc["router_latency_tps"] / doc["littles_law_bound_tps"]
    )
    assert ratios["g_over_e"] == pytest.approx(doc["scale_out_tps"] / doc["router_latency_tps"])
    assert doc["scale_out"]["ratio_limit"] == min(2, doc["environment"]["cpus"])
    scenarios = doc["scenarios"]
    assert doc["peak_rss_mb"] == pytest.approx(max(scenarios[s]["peak_rss_mb"] for s in ROUTER_RUNS))
    assert doc["cpu_ms_per_ticket"] == pytest.approx(scenarios["e"]["cpu_ms_per_ticket"])
    for run in scenarios.values():
        assert run["tps"] == pytest.approx(run["tickets"] / run["seconds"])
        assert run["cpu_ms_per_ticket"] == pytest.approx(run["cpu_s"] * 1000 / run["tickets"])
    latency = scenarios["e"]
    waited = FAST_LATENCY_MS * latency["tier_visits"].get("fast", 0)
    waited += STRONG_LATENCY_MS * latency["tier_visits"].get("strong", 0)
    assert law["mean_fake_latency_ms"] == pytest.approx(waited / latency["tickets"])
    for target in doc["targets"]:
        value, goal = target["value"], target["goal"]
        assert target["met"] == (value >= goal if target["op"] == ">=" else value < goal)


@pytest.mark.integration
def test_quick_bench_runs_every_scenario_and_reports_consistently(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"

    assert main(["bench", "--quick", "--json", str(out)]) == 0

    doc = json.loads(out.read_text())
    for key in REQUIRED_KEYS:
        assert isinstance(doc[key], int | float) and doc[key] > 0, key
    check_consistent(doc)
    scenarios = doc["scenarios"]
    for sid, count in QUICK_COUNTS.items():
        handled = count + scenarios[sid]["duplicates"]  # records handled twice count once in tickets
        assert scenarios[sid]["tickets"] == count
        assert sum(scenarios[sid]["outcomes"].values()) == handled
    # The Claude paths really classified through the fake: nothing fell to triage.
    for sid in ("c", "e", "f", "g"):
        assert scenarios[sid]["outcomes"] == {"routed": QUICK_COUNTS[sid] + scenarios[sid]["duplicates"]}
    # (g): both processes joined and consumed; their shares add up to every record handled.
    scale_out = scenarios["g"]
    assert len(scale_out["member_tickets"]) == 2 and min(scale_out["member_tickets"]) > 0
    assert sum(scale_out["member_tickets"]) == QUICK_COUNTS["g"] + scale_out["duplicates"]
    assert doc["scale_out"]["member_tickets"] == scale_out["member_tickets"]
    assert doc["scale_out"]["duplicates"] == scale_out["duplicates"]
    assert scale_out["seconds"] == pytest.approx(scale_out["last_at"] - scale_out["first_at"])
    assert scenarios["d"]["outcomes"] == {"answered": QUICK_COUNTS["d"]}
    # (e): every ticket asked the fast model; the scripted low-confidence share went on to strong.
    visits = scenarios["e"]["tier_visits"]
    assert visits["fast"] == QUICK_COUNTS["e"]
    assert 0 < visits["strong"] < QUICK_COUNTS["e"] * 0.4
    assert scenarios["f"]["in_flight"] == 1 and scenarios["e"]["in_flight"] == IN_FLIGHT


def _result(sid: str, tickets: int, seconds: float, **extra: Any) -> WorkerResult:
    return WorkerResult.model_validate(
        {
            "scenario": sid,
            "tickets": tickets,
            "seconds": seconds,
            "tps": tickets / seconds,
            "cpu_s": tickets / 1000,
            "cpu_ms_per_ticket": 1.0,
            "peak_rss_mb": 100.0,
            **extra,
        }
    )


def test_summary_of_a_partial_run_uses_only_what_ran() -> None:
    results = {"e": _result("e", 1000, 2.0, tier_visits={"fast": 1000, "strong": 200})}

    doc = summarise(results, {})

    assert doc["littles_law"]["mean_fake_latency_ms"] == pytest.approx(50 + 0.2 * 180)
    assert doc["littles_law_bound_tps"] == pytest.approx(IN_FLIGHT * 1000 / 86)  # no (d): no SDK cap
    assert doc["ratios"] == {"e_over_littles_law_bound": pytest.approx(500 / (IN_FLIGHT * 1000 / 86))}
    assert "sdk_only_tps" not in doc and doc["cpu_ms_per_ticket_from"] == "e"


def test_summary_without_the_latency_run_uses_the_configured_mix() -> None:
    results = {"d": _result("d", 1000, 1.0), "b": _result("b", 500, 1.0)}

    doc = summarise(results, {})

    configured = FAST_LATENCY_MS + ESCALATION_RATE * STRONG_LATENCY_MS
    assert doc["littles_law"]["mean_fake_latency_ms"] == pytest.approx(configured)
    assert doc["littles_law_bound_tps"] == pytest.approx(min(IN_FLIGHT * 1000 / configured, 1000))
    assert doc["cpu_ms_per_ticket_from"] == "b"


def test_bench_tickets_are_reproducible_english_customer_tickets() -> None:
    first, again = bench_tickets(50), bench_tickets(50)

    assert [t.model_dump() for t in first] == [t.model_dump() for t in again]
    assert all(t.author_role.value == "customer" and t.language in (None, "en") for t in first)
    assert len({t.event_id for t in first}) == 50


@pytest.mark.parametrize("only", ["x", "a,z", ",", "s"])
def test_unknown_scenarios_are_a_user_error(only: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--only", only]) == 2
    assert "--only takes scenario letters" in capsys.readouterr().err


def test_the_fastest_round_is_kept_with_the_highest_memory_of_all_rounds() -> None:
    rounds = [
        _result("c", 600, 1.0, peak_rss_mb=210.0),
        _result("c", 600, 0.8, peak_rss_mb=205.0),
        _result("c", 600, 0.9, peak_rss_mb=230.0),
    ]

    kept = best_run(rounds)

    assert kept.seconds == 0.8 and kept.tps == pytest.approx(750)
    assert kept.peak_rss_mb == 230.0
    assert kept.runs_tps == pytest.approx([600, 750, 600 / 0.9])


def test_repeat_below_one_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--repeat", "0"]) == 2
    assert "--repeat must be at least 1" in capsys.readouterr().err


def test_members_combine_into_one_run_that_counts_each_record_once() -> None:
    first = _result("g", 3, 1.0, first_at=100.0, last_at=101.0, outcomes={"routed": 3}, peak_rss_mb=210.0)
    second = _result("g", 2, 1.5, first_at=100.5, last_at=102.0, outcomes={"routed": 2}, peak_rss_mb=220.0)

    combined = combine_members([first, second], [["0:0", "0:1", "1:0"], ["1:0", "2:0"]])

    assert combined.tickets == 4 and combined.duplicates == 1  # 1:0 was handled by both
    assert combined.member_tickets == [3, 2] and combined.outcomes == {"routed": 5}
    assert combined.seconds == pytest.approx(2.0) and combined.tps == pytest.approx(2.0)
    assert combined.cpu_s == pytest.approx(0.005)
    assert combined.cpu_ms_per_ticket == pytest.approx(0.005 * 1000 / 4)
    assert combined.peak_rss_mb == 220.0  # the largest process: what one pod is sized for


def test_soak_growth_is_measured_from_the_baseline_sample_to_the_last() -> None:
    samples = [(100, 190.0), (1000, 210.0), (1500, 250.0), (2000, 231.0)]
    run = _result("s", 2000, 10.0, rss_samples=samples)

    doc = summarise_soak(run, 1000, {})

    assert doc["rss_mb_at_baseline"] == 210.0 and doc["rss_mb_at_end"] == 231.0
    assert doc["rss_growth_pct"] == pytest.approx(10.0)
    [target] = doc["targets"]
    assert target["goal"] == 10.0 and not target["met"]  # 10% is not under 10%
    with pytest.raises(ValueError, match="no RSS sample at 500"):
        summarise_soak(run, 500, {})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "e"], "--soak runs alone: drop --only"),
        (["--repeat", "2", "--sequential-tickets", "5"], "drop --repeat, --sequential-tickets"),
        (["--tickets", "9"], "--tickets with --soak must be at least 10"),
    ],
)
def test_soak_options_that_do_not_apply_are_a_user_error(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--soak", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.integration
def test_quick_soak_samples_memory_through_the_run_and_reports_its_growth(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"

    assert main(["bench", "--soak", "--quick", "--json", str(out)]) == 0

    doc = json.loads(out.read_text())
    baseline = soak_baseline(QUICK_SOAK_TICKETS)
    run = doc["scenarios"]["s"]
    assert doc["soak_tickets"] == run["tickets"] == QUICK_SOAK_TICKETS
    assert doc["rss_baseline_tickets"] == baseline == 100
    assert run["outcomes"] == {"routed": QUICK_SOAK_TICKETS}
    assert run["tier_visits"]["fast"] == QUICK_SOAK_TICKETS
    done = [tickets for tickets, _ in run["rss_samples"]]
    assert done == sorted(set(done)) and len(done) >= 10, "sampled through the run, in order"
    assert baseline in done and done[-1] == QUICK_SOAK_TICKETS
    rss = {tickets: mb for tickets, mb in run["rss_samples"]}
    assert doc["rss_mb_at_baseline"] == rss[baseline] and doc["rss_mb_at_end"] == rss[QUICK_SOAK_TICKETS]
    assert doc["rss_growth_pct"] == pytest.approx((rss[QUICK_SOAK_TICKETS] / rss[baseline] - 1) * 100)
    assert all(0 < mb <= run["peak_rss_mb"] for mb in rss.values())
    [target] = doc["targets"]
    assert target["value"] == doc["rss_growth_pct"] and target["met"] == (target["value"] < 10.0)
    assert doc["soak_tps"] == pytest.approx(run["tickets"] / run["seconds"])
