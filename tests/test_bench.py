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

from producer_tools.bench.report import best_run, summarise
from producer_tools.bench.scenarios import (
    ESCALATION_RATE,
    FAST_LATENCY_MS,
    IN_FLIGHT,
    QUICK_COUNTS,
    STRONG_LATENCY_MS,
    WorkerResult,
    bench_tickets,
)
from producer_tools.cli import main

REQUIRED_KEYS = (
    "passthrough_tps",
    "local_tps",
    "router_fake0_tps",
    "sdk_only_tps",
    "router_latency_tps",
    "sequential_tps",
    "littles_law_bound_tps",
    "peak_rss_mb",
    "cpu_ms_per_ticket",
)
ROUTER_RUNS = ("b", "c", "e", "f")


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
        assert scenarios[sid]["tickets"] == count
        assert sum(scenarios[sid]["outcomes"].values()) == count
    # The Claude paths really classified through the fake: nothing fell to triage.
    for sid in ("c", "e", "f"):
        assert scenarios[sid]["outcomes"] == {"routed": QUICK_COUNTS[sid]}
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


@pytest.mark.parametrize("only", ["x", "a,z", ","])
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
