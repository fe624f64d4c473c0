"""The spend guard: Claude calls stop once an hour's or a day's budget is spent, until it rolls over.

A traffic spike or a retry storm otherwise bills without limit. The guard counts what each Claude
call actually cost (``TierAttempt.cost_usd``, failed-but-billed calls included) and, once a window's
budget is spent, the pipeline skips the Claude tiers: the local tier still answers where it is
configured, anything else goes to triage as ``budget_exhausted`` for a replay once the window rolls.

Windows are fixed and aligned to the UTC clock (the hour from :00, the day from midnight UTC), not
rolling: "paused until 15:00 UTC" is something an operator can read and plan a replay around, the
state is two numbers per window (no per-call history kept), and every replica's window starts at
the same instant. The price is that a burst straddling a boundary may spend up to twice a budget
within sixty minutes; the day budget is the bound for that.

Replicas: each router enforces ``budget / LLM_BUDGET_REPLICAS`` on its own spend, so N replicas
together never pass the budget without a shared store (set N to the most replicas that run, e.g.
KEDA's maxReplicaCount). Fewer replicas, or an uneven load, leave part of the budget unused: the
honest trade for needing no new server. The check is made before each tier call, so calls already
in flight when a budget is reached still finish (at most ``MAX_IN_FLIGHT`` calls of overshoot).

The accounting is plain functions over immutable state; ``SpendGuard`` only holds the state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

HOUR_S = 3_600
DAY_S = 86_400
WINDOW_SECONDS: Mapping[str, int] = {"hour": HOUR_S, "day": DAY_S}


@dataclass(frozen=True)
class Window:
    """One budget: its name (``hour``, ``day``), length, and the USD this replica may spend in it."""

    name: str
    seconds: int
    limit_usd: float


@dataclass(frozen=True)
class WindowState:
    """Spend counted in the window that started at ``start`` (Unix seconds)."""

    start: float
    spent_usd: float = 0.0


def window_start(now: float, seconds: int) -> float:
    """The start of the fixed window holding ``now``: Unix time counts from midnight UTC, so hours
    and days start on the UTC clock."""
    return now - (now % seconds)


def rolled(state: WindowState, window: Window, now: float) -> WindowState:
    """The state as of ``now``: a fresh, empty window once the old one has ended."""
    start = window_start(now, window.seconds)
    return state if state.start == start else WindowState(start=start)


def add_spend(state: WindowState, window: Window, now: float, cost_usd: float) -> WindowState:
    """``cost_usd`` added to the window holding ``now`` (negative or zero costs change nothing)."""
    current = rolled(state, window, now)
    return replace(current, spent_usd=current.spent_usd + max(cost_usd, 0.0))


def is_exhausted(state: WindowState, window: Window, now: float) -> bool:
    """Whether the window holding ``now`` has spent its whole budget."""
    return rolled(state, window, now).spent_usd >= window.limit_usd


def exhausted_windows(
    states: Mapping[str, WindowState], windows: Mapping[str, Window], now: float
) -> list[str]:
    """Names of the windows whose budget is spent; Claude may be called only when this is empty."""
    return [name for name, window in windows.items() if is_exhausted(states[name], window, now)]


def reopens_at(states: Mapping[str, WindowState], windows: Mapping[str, Window], now: float) -> float | None:
    """When Claude may be called again (the latest end among the spent windows), or None if now."""
    ends = [
        window_start(now, windows[name].seconds) + windows[name].seconds
        for name in exhausted_windows(states, windows, now)
    ]
    return max(ends) if ends else None


def budget_windows(per_hour: float | None, per_day: float | None, replicas: int = 1) -> dict[str, Window]:
    """The configured windows, each limited to this replica's share of its budget."""
    windows = {}
    for name, budget in (("hour", per_hour), ("day", per_day)):
        if budget is not None:
            windows[name] = Window(name, WINDOW_SECONDS[name], budget / replicas)
    return windows


class SpendGuard:
    """This replica's spend per window, and whether Claude may be called now.

    Not locked: the router is one event loop, and every method runs to completion between awaits.
    """

    def __init__(self, windows: Mapping[str, Window], clock: Callable[[], float] = time.time) -> None:
        self.windows = dict(windows)
        self._clock = clock
        now = clock()
        self._states = {name: WindowState(window_start(now, w.seconds)) for name, w in self.windows.items()}

    def allows(self) -> bool:
        """True while no window's budget is spent."""
        return not exhausted_windows(self._states, self.windows, self._clock())

    def record(self, cost_usd: float) -> None:
        """Counts the cost of a Claude call (or of a tier's failed calls that were still billed)."""
        if not cost_usd:
            return
        now = self._clock()
        for name, window in self.windows.items():
            self._states[name] = add_spend(self._states[name], window, now, cost_usd)

    def spent(self, name: str) -> float:
        """USD spent in the current ``name`` window (0 right after it rolled)."""
        return rolled(self._states[name], self.windows[name], self._clock()).spent_usd

    def exhausted(self, name: str) -> bool:
        return is_exhausted(self._states[name], self.windows[name], self._clock())

    def reopens_in_s(self) -> float | None:
        """Seconds until Claude may be called again, or None if it may be now (a Retry-After)."""
        now = self._clock()
        until = reopens_at(self._states, self.windows, now)
        return until - now if until is not None else None

    def describe(self) -> str:
        """Why Claude is skipped, for the triage record: which budgets and until when."""
        now = self._clock()
        spent = exhausted_windows(self._states, self.windows, now)
        until = reopens_at(self._states, self.windows, now)
        parts = [
            f"{name} ${rolled(self._states[name], self.windows[name], now).spent_usd:.4f} "
            f"of ${self.windows[name].limit_usd:.4f}"
            for name in spent
        ]
        when = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M UTC") if until else "now"
        return f"LLM budget spent ({', '.join(parts)}); Claude tiers skipped until {when}"
