"""Seeded chance: which fault or malformation a request gets, and how long it waits.

Each concern draws from its own ``random.Random`` stream so that, for example, adding latency to a
scenario does not shift which requests fail: a seeded run stays comparable when one knob changes.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from producer_tools.fake_api.scenario import (
    REFUSAL,
    FaultKind,
    Latency,
    MalformedKind,
    ModelScript,
    Scenario,
    ScriptStep,
    is_fault,
    is_malformed,
)

K = TypeVar("K", bound=str)


def draw_kind(rng: random.Random, rates: Mapping[K, float]) -> K | None:
    """One uniform draw against cumulative rates; always consumes exactly one number from ``rng``."""
    point = rng.random()
    cumulative = 0.0
    for kind, rate in rates.items():
        cumulative += rate
        if point < cumulative:
            return kind
    return None


def sample_latency_ms(latency: Latency, rng: random.Random) -> float:
    """``mean_ms``/``spread_ms`` mean the same for every distribution: the mean and the spread around it.

    For ``lognormal`` the spread is the standard deviation, converted to the underlying normal's
    parameters so the sampled mean really is ``mean_ms``.
    """
    mean, spread = latency.mean_ms, latency.spread_ms
    if mean <= 0 and spread <= 0:
        return 0.0
    if latency.distribution == "fixed":
        return mean
    if latency.distribution == "uniform":
        return max(0.0, rng.uniform(mean - spread, mean + spread))
    if mean <= 0:
        return 0.0
    sigma = math.sqrt(math.log1p((spread / mean) ** 2))
    return rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma)


@dataclass(frozen=True)
class Plan:
    """What to do with one request: an injected fault, a malformed answer, a refusal, or none of them.

    Only a scripted step sets ``refusal``: the ``refusal_rate`` is decided per ticket when answering,
    because a model refuses a text, not a position in the call order.
    """

    fault: FaultKind | None = None
    malformed: MalformedKind | None = None
    refusal: bool = False


def plan_from_step(step: ScriptStep) -> Plan:
    if is_fault(step):
        return Plan(fault=step)
    if is_malformed(step):
        return Plan(malformed=step)
    return Plan(refusal=step == REFUSAL)


@dataclass
class Dice:
    """The mutable, seeded part of a scenario: per-model script queues and the random streams."""

    scenario: Scenario
    queues: dict[str, deque[ScriptStep]] = field(init=False)
    faults: random.Random = field(init=False)
    malformations: random.Random = field(init=False)
    latencies: random.Random = field(init=False)

    def __post_init__(self) -> None:
        seed = self.scenario.seed
        self.queues = {name: deque(script.script) for name, script in self.scenario.models.items()}
        self.faults = random.Random(f"{seed}:faults")
        self.malformations = random.Random(f"{seed}:malformed")
        self.latencies = random.Random(f"{seed}:latency")

    def plan(self, model_name: str, script: ModelScript) -> Plan:
        """The scripted step if one is queued, otherwise the rates (both streams always advance)."""
        queue = self.queues.get(model_name)
        if queue:
            return plan_from_step(queue.popleft())
        fault = draw_kind(self.faults, script.fault_rates)
        malformed = draw_kind(self.malformations, script.malformed_rates)
        return Plan(fault=fault) if fault is not None else Plan(malformed=malformed)

    def latency_s(self, script: ModelScript) -> float:
        return sample_latency_ms(script.latency, self.latencies) / 1000.0
