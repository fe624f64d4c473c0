"""What every classifier tier provides, and the pure decisions made over its answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from schemas.events import Classification, TicketEvent, TierAttempt, TokenUsage


class TierError(Exception):
    """A tier could not produce a usable answer; ``attempts`` calls were made.

    ``usage`` and ``cost_usd`` carry what the failed calls were still billed (an invalid answer
    costs as much as a valid one), so spend figures stay honest.
    """

    def __init__(
        self, message: str, attempts: int = 1, usage: TokenUsage | None = None, cost_usd: float = 0.0
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.usage = usage or TokenUsage()
        self.cost_usd = cost_usd


class TierUnavailable(TierError):
    """The tier's backend did not answer (outage, rate limits, deadline) after bounded retries."""


class TierInvalidOutput(TierError):
    """The tier answered, but not in the schema; never guessed from."""


@dataclass(frozen=True)
class TierAnswer:
    classification: Classification
    attempt: TierAttempt


class Tier(Protocol):
    """A classifier tier. ``name`` is its place in TIERS (local, fast, strong)."""

    name: str

    @property
    def model(self) -> str:
        """The model that answers (the local tier's changes when it is refitted)."""
        ...

    async def classify(self, ticket: TicketEvent) -> TierAnswer:
        """Classify one ticket; raises TierUnavailable or TierInvalidOutput."""
        ...

    async def close(self) -> None: ...


def axes_below_threshold(classification: Classification, thresholds: Mapping[str, float]) -> list[str]:
    """Axes whose confidence is below the taxonomy's threshold (missing axes count as below)."""
    below = []
    for axis, threshold in thresholds.items():
        prediction = classification.axes.get(axis)
        if prediction is None or prediction.confidence < threshold:
            below.append(axis)
    return below


def ticket_text(ticket: TicketEvent) -> str:
    """The text a classifier sees: subject and body."""
    return f"{ticket.subject}\n{ticket.body}" if ticket.subject else ticket.body
