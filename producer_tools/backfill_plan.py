"""The pure decisions of ``ticket-tools backfill``: ids, batching, what each result leads to, counts, spend.

Kept apart from the I/O so every rule a backfill relies on (a ``custom_id`` maps back to exactly one
ticket, batches stay within the API's limits, each result has exactly one next step, every ticket
ends in exactly one outcome, the discount is what the summary says) is tested without a network.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

BATCH_DISCOUNT = 0.5
"""Message Batches bill input and output at half the Messages API's price (stacking with caching)."""
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
REQUEST_OVERHEAD_BYTES = 64
"""Per request in the create body beyond its params: ``{"custom_id": ..., "params": ...},``."""
BODY_HEADROOM = 0.98
"""Batches are cut below the byte limit: the SDK's JSON encoding may differ slightly from ours."""

CUSTOM_ID_MAX = 64
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")

ResultKind = Literal["confident", "low_confidence", "failed", "invalid"]
"""What one result says: an answer clearing every threshold, one below a threshold, no answer
(``errored``, ``expired``, ``canceled``), or an answer outside the schema (refused, cut off)."""
OutcomeKind = Literal["routed", "triaged", "skipped"]


# -- custom ids ----------------------------------------------------------------------------------------


def custom_id_for(index: int, ticket_id: str) -> str:
    """``t<index>-<ticket id, made safe>``: the index maps back to the source position exactly; the
    ticket id (cut to fit the API's 64 characters and its ``[a-zA-Z0-9_-]`` alphabet) is for people
    reading the results file."""
    prefix = f"t{index}"
    readable = _UNSAFE.sub("_", ticket_id)[: CUSTOM_ID_MAX - len(prefix) - 1]
    return f"{prefix}-{readable}" if readable else prefix


def index_of(custom_id: str) -> int:
    """The source position a ``custom_id`` was made from; ValueError for an id this tool never made."""
    head = custom_id.split("-", 1)[0]
    if not head.startswith("t") or not head[1:].isdigit():
        raise ValueError(f"not a backfill custom_id: {custom_id!r}")
    return int(head[1:])


# -- batching -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    max_requests: int = MAX_BATCH_REQUESTS
    max_bytes: int = MAX_BATCH_BYTES


def split_batches(sizes: Sequence[tuple[int, int]], limits: Limits) -> list[list[int]]:
    """``(index, request bytes)`` pairs cut, in order, into batches within both limits.

    Raises ValueError for one request that alone exceeds the byte limit: no batch can carry it.
    """
    budget = int(limits.max_bytes * BODY_HEADROOM)
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, size in sizes:
        cost = size + REQUEST_OVERHEAD_BYTES
        if cost > budget:
            raise ValueError(
                f"the request for ticket {index} is {size} bytes, over the batch limit of {budget}"
            )
        if current and (len(current) >= limits.max_requests or used + cost > budget):
            batches.append(current)
            current, used = [], 0
        current.append(index)
        used += cost
    if current:
        batches.append(current)
    return batches


# -- what a result leads to ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """The next request for a ticket: on ``tier``, the ``attempt``-th time there (1 or 2)."""

    tier: str
    attempt: int = 1


@dataclass(frozen=True)
class Conclude:
    """The ticket's outcome is decided: routed (``flagged`` when routed despite low confidence) or
    triaged with ``error_kind``."""

    outcome: Literal["routed", "triaged"]
    error_kind: str | None = None
    flagged: bool = False


def after_result(
    kind: ResultKind, step: Step, tiers: Sequence[str], low_confidence_action: str
) -> Step | Conclude:
    """The live pipeline's decisions for one batch result.

    Confident: routed. Low confidence: the next (stronger) tier, else what LOW_CONFIDENCE_ACTION
    says. No answer or an invalid one: the same tier once more, then triage with the reason.
    """
    if kind == "confident":
        return Conclude("routed")
    if kind == "low_confidence":
        later = list(tiers[tiers.index(step.tier) + 1 :]) if step.tier in tiers else []
        if later:
            return Step(later[0])
        if low_confidence_action == "route_flagged":
            return Conclude("routed", flagged=True)
        return Conclude("triaged", "low_confidence")
    if step.attempt < 2:
        return Step(step.tier, step.attempt + 1)
    return Conclude("triaged", "llm_unavailable" if kind == "failed" else "llm_invalid_output")


# -- accounting ---------------------------------------------------------------------------------------


def unaccounted(total: int, outcomes: Mapping[int, str]) -> list[int]:
    """Source positions without an outcome (the summary refuses to call such a run complete)."""
    return [index for index in range(total) if index not in outcomes]


def tally(outcomes: Iterable[str]) -> Counter[str]:
    counts: Counter[str] = Counter({"routed": 0, "triaged": 0, "skipped": 0})
    counts.update(outcomes)
    return counts


@dataclass(frozen=True)
class Spend:
    """What the batches cost, and what the live path would have paid for the same tokens."""

    batch_usd: float
    live_usd: float

    @property
    def saved_usd(self) -> float:
        return self.live_usd - self.batch_usd

    @property
    def saved_percent(self) -> float:
        return 100.0 * self.saved_usd / self.live_usd if self.live_usd > 0 else 0.0


def batch_price(live_usd: float) -> float:
    """A call's batch price from its live price (the discount applies to every token type)."""
    return live_usd * BATCH_DISCOUNT


def spend_line(spend: Spend) -> str:
    return (
        f"spend ${spend.batch_usd:.4f} with the Batches API; ${spend.live_usd:.4f} at the live price "
        f"for the same tokens (saved ${spend.saved_usd:.4f}, {spend.saved_percent:.0f}%)"
    )
