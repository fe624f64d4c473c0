"""What each bench scenario runs, and the tickets and fake-API scripts they all share.

Kept free of I/O so the orchestrator (``command``), the measuring worker (``worker``) and the
report agree on one definition: the same seed gives the same tickets in the parent that publishes
them and in the SDK-only worker that classifies them without Kafka, so (c) and (d) make the very
same Messages API calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from consumer.config import Settings
from producer_tools.fake_api.scenario import Latency, ModelScript, Scenario
from producer_tools.samples import bundled_texts, generate_samples
from schemas.events import AuthorRole, TicketEvent

ScenarioId = Literal["a", "b", "c", "d", "e", "f", "g", "s"]
WorkerKind = Literal["passthrough", "router", "sdk"]

SCENARIO_IDS: tuple[ScenarioId, ...] = ("a", "b", "c", "d", "e", "f", "g")
"""The default run, in order. The soak ("s") runs only on its own (``--soak``): it takes minutes."""
SOAK_ID: ScenarioId = "s"
ROUTER_SCENARIOS: frozenset[str] = frozenset({"b", "c", "e", "f", "g", "s"})

# The service's own defaults, so the bench measures the requests a default deployment sends.
FAST_MODEL: str = Settings.model_fields["fast_model"].default
STRONG_MODEL: str = Settings.model_fields["strong_model"].default
FAST_LATENCY_MS = 50.0
STRONG_LATENCY_MS = 180.0
ESCALATION_RATE = 0.15
IN_FLIGHT = 64
SEQUENTIAL_IN_FLIGHT = 1
DUMMY_API_KEY = "bench-dummy-key"  # the fake accepts any key; not shaped like a real one
BENCH_SEED = 6
BENCH_NOW = datetime(2026, 1, 1, tzinfo=UTC)  # fixed so every process generates identical tickets


@dataclass(frozen=True)
class ScenarioInfo:
    id: ScenarioId
    key: str
    """The ``*_tps`` key in bench-results.json."""
    title: str
    kind: WorkerKind
    in_flight: int
    fake_latency: bool
    """True: 50 ms fast / 180 ms strong with 15% escalations; False: the fake answers at once."""
    processes: int = 1
    """Worker processes in one consumer group sharing the scenario's tickets (scale-out: 2)."""


SCENARIOS: dict[str, ScenarioInfo] = {
    info.id: info
    for info in (
        ScenarioInfo("a", "passthrough_tps", "Kafka passthrough", "passthrough", IN_FLIGHT, False),
        ScenarioInfo("b", "local_tps", "router, local tier", "router", IN_FLIGHT, False),
        ScenarioInfo("c", "router_fake0_tps", "router, fake 0 ms", "router", IN_FLIGHT, False),
        ScenarioInfo("d", "sdk_only_tps", "SDK only, fake 0 ms", "sdk", IN_FLIGHT, False),
        ScenarioInfo("e", "router_latency_tps", "router, fake 50/180 ms", "router", IN_FLIGHT, True),
        ScenarioInfo("f", "sequential_tps", "router, one at a time", "router", SEQUENTIAL_IN_FLIGHT, True),
        ScenarioInfo("g", "scale_out_tps", "2 routers, one group, 50/180 ms", "router", IN_FLIGHT, True, 2),
        ScenarioInfo("s", "soak_tps", "soak: router, fake 50/180 ms", "router", IN_FLIGHT, True),
    )
}

DEFAULT_COUNTS: dict[str, int] = {
    "a": 10_000,
    "b": 10_000,
    "c": 6_000,
    "d": 6_000,
    "e": 6_000,
    "f": 100,
    "g": 6_000,  # (e)'s count: the pair shares the same workload one process handles in (e)
}
QUICK_COUNTS: dict[str, int] = {"a": 300, "b": 200, "c": 150, "d": 150, "e": 200, "f": 12, "g": 200}

SOAK_TICKETS = 100_000
QUICK_SOAK_TICKETS = 1_000
SOAK_BASELINE_SHARE = 10
"""The soak's baseline is RSS after the first tenth of its tickets (10,000 of 100,000): by then
start-up, the first full collections and the in-flight peak are behind, so what grows after it
is what the tickets leave behind."""
RSS_SAMPLES = 50
"""Resident memory is read this many times over a soak (and at the baseline and the end)."""


def soak_baseline(tickets: int) -> int:
    return max(1, tickets // SOAK_BASELINE_SHARE)


def rss_every(tickets: int) -> int:
    """Tickets between two RSS samples, so a soak of any size gives about ``RSS_SAMPLES``."""
    return max(1, tickets // RSS_SAMPLES)


def tier_names(scenario: str) -> list[str]:
    return ["local"] if scenario == "b" else ["fast", "strong"]


def fake_scenario(with_latency: bool) -> Scenario:
    """The fake's script: instant and always confident, or the production-like latencies.

    ``max_recorded_requests=0``: the fake would otherwise keep the last 10,000 request bodies
    (each carries the ~20 KB system prompt) in the bench's own memory.
    """
    if not with_latency:
        return Scenario(
            models={FAST_MODEL: ModelScript(), STRONG_MODEL: ModelScript()}, max_recorded_requests=0
        )
    return Scenario(
        models={
            FAST_MODEL: ModelScript(
                latency=Latency(mean_ms=FAST_LATENCY_MS), low_confidence_rate=ESCALATION_RATE
            ),
            STRONG_MODEL: ModelScript(latency=Latency(mean_ms=STRONG_LATENCY_MS)),
        },
        max_recorded_requests=0,
    )


def bench_tickets(count: int, seed: int = BENCH_SEED) -> list[TicketEvent]:
    """``count`` English customer tickets (new ones and follow-ups), identical in every process.

    English only and no agent replies, so every ticket makes exactly the calls the scenario
    describes: one fast call, plus a strong call for the escalated 15%. Non-English tickets would
    go straight to the strong tier and agent replies would be skipped without any call, which
    would blur both the escalation rate and the comparison of (c) with (d).
    """
    texts = [text for text in bundled_texts() if text.language in (None, "en")]
    events = generate_samples(count, seed, BENCH_NOW, texts)
    return [
        event
        if event.author_role is AuthorRole.CUSTOMER
        else event.model_copy(update={"author_role": AuthorRole.CUSTOMER})
        for event in events
    ]


class WorkerSpec(BaseModel):
    """Everything a worker process needs, passed as a JSON file (no argv quoting, no env leaks)."""

    model_config = ConfigDict(extra="forbid")

    scenario: ScenarioId
    kind: WorkerKind
    tickets: int = Field(ge=1)
    seed: int = BENCH_SEED
    bootstrap: str
    input_topic: str
    output_topic: str
    group: str
    in_flight: int = Field(ge=1)
    timeout_s: float = Field(gt=0)
    settings: dict[str, Any] = Field(default_factory=dict)
    result_path: str
    profile_path: str | None = None
    member: int | None = None
    """Set for each process of a multi-process scenario (g): it then prints ``ready`` on stdout
    once it owns partitions, runs until its stdin closes, and ``tickets`` is only an upper bound."""
    ids_path: str | None = None
    """Where a member writes ``partition:offset`` of every record it handled, one a line, so the
    parent can count each ticket once and the ones handled twice."""
    rss_every: int | None = None
    """Read the process's resident memory every this many tickets (the soak)."""
    rss_baseline: int | None = None
    """Also read it after exactly this many tickets: the soak's baseline."""


class WorkerResult(BaseModel):
    """What one worker measured. ``seconds`` runs from the first record consumed (or first call
    started) to the last outcome published (or last answer received)."""

    model_config = ConfigDict(extra="forbid")

    scenario: ScenarioId
    tickets: int
    seconds: float
    tps: float
    cpu_s: float
    cpu_ms_per_ticket: float
    peak_rss_mb: float
    outcomes: dict[str, int] = Field(default_factory=dict)
    tier_visits: dict[str, int] = Field(default_factory=dict)
    triage_kinds: dict[str, int] = Field(default_factory=dict)
    fake_api_cpu_ms_per_ticket: float = 0.0
    """CPU the fake Messages API (in the parent) spent per ticket; filled in by the parent."""
    runs_tps: list[float] = Field(default_factory=list)
    """Tickets/s of every round of this scenario (``--repeat``), in order; filled in by the parent."""
    first_at: float = 0.0
    last_at: float = 0.0
    """Wall-clock ``seconds``' ends (Unix time), so the parent can span several processes."""
    member_tickets: list[int] = Field(default_factory=list)
    """Multi-process scenarios: records each process handled (duplicates included)."""
    duplicates: int = 0
    """Multi-process scenarios: records handled more than once (e.g. again after a rebalance)."""
    rss_samples: list[tuple[int, float]] = Field(default_factory=list)
    """The soak: (tickets done, resident MB) through the run, the baseline and the end included."""
