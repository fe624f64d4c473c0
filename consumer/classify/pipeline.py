"""The ordered tiers: try each until every axis clears its threshold.

The decisions (which tiers a ticket visits, what the outcome is when none is confident) are pure
functions, so they are tested without any model; ``Pipeline`` only sequences the awaits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from consumer.classify.base import (
    Tier,
    TierError,
    TierInvalidOutput,
    TierUnavailable,
    axes_below_threshold,
)
from consumer.classify.budget import SpendGuard
from consumer.classify.deadline import ticket_deadline
from schemas.events import Classification, ErrorKind, TicketEvent, TierAttempt, TokenUsage


@dataclass
class PipelineResult:
    """What the tiers concluded for one ticket, routed or not."""

    classification: Classification | None
    attempts: list[TierAttempt] = field(default_factory=list)
    error_kind: ErrorKind | None = None
    error_message: str = ""
    low_confidence: bool = False

    @property
    def tiers_tried(self) -> list[str]:
        return [a.tier for a in self.attempts]

    @property
    def escalated(self) -> bool:
        return len(self.tiers_tried) > 1

    @property
    def model_used(self) -> str:
        answered = [a for a in self.attempts if a.outcome in ("answered", "low_confidence")]
        return answered[-1].model if answered else ""

    @property
    def usage(self) -> TokenUsage:
        total = TokenUsage()
        for attempt in self.attempts:
            total = total + attempt.usage
        return total

    @property
    def cost_usd(self) -> float:
        return sum(a.cost_usd for a in self.attempts)

    @property
    def call_attempts(self) -> int:
        return sum(a.attempts for a in self.attempts)


def tiers_for_ticket(tier_names: Sequence[str], is_english: bool, non_english_to_strong: bool) -> list[str]:
    """Tiers a ticket visits: non-English tickets skip the cheap tiers when a strong tier exists."""
    names = list(tier_names)
    if not is_english and non_english_to_strong and "strong" in names:
        return names[names.index("strong") :]
    return names


CLAUDE_TIERS = ("fast", "strong")


def skipped_for_budget(tier_name: str, budget_open: bool) -> bool:
    """Whether the spend guard keeps a ticket from this tier: only the Claude tiers cost money."""
    return tier_name in CLAUDE_TIERS and not budget_open


def conclude(
    last_answer: Classification | None, last_failure: ErrorKind, message: str, low_confidence_action: str
) -> tuple[ErrorKind | None, bool]:
    """When no tier was confident: (error kind or None to route, routed-with-low-confidence flag)."""
    if (
        last_failure is ErrorKind.LOW_CONFIDENCE
        and last_answer is not None
        and low_confidence_action == "route_flagged"
    ):
        return None, True
    return last_failure, False


class Pipeline:
    def __init__(
        self,
        tiers: Sequence[Tier],
        thresholds: Mapping[str, float],
        *,
        low_confidence_action: str = "triage",
        non_english_to_strong: bool = True,
        deadline_s: float = 60.0,
        is_english: Callable[[TicketEvent], bool] = lambda _ticket: True,
        tier_thresholds: Mapping[str, Mapping[str, float]] | None = None,
        budget: SpendGuard | None = None,
    ) -> None:
        self.tiers = {tier.name: tier for tier in tiers}
        self.order = [tier.name for tier in tiers]
        self.thresholds = dict(thresholds)
        self.tier_thresholds = {name: dict(values) for name, values in (tier_thresholds or {}).items()}
        self.low_confidence_action = low_confidence_action
        self.non_english_to_strong = non_english_to_strong
        self.deadline_s = deadline_s
        self.is_english = is_english
        self.budget = budget

    async def classify(self, ticket: TicketEvent) -> PipelineResult:
        result = PipelineResult(classification=None)
        try:
            with ticket_deadline(self.deadline_s):
                async with asyncio.timeout(self.deadline_s):
                    return await self._run_tiers(ticket, result)
        except TimeoutError:
            result.error_kind = ErrorKind.LLM_UNAVAILABLE
            result.error_message = f"per-ticket deadline of {self.deadline_s:g}s exceeded"
            return result

    async def _run_tiers(self, ticket: TicketEvent, result: PipelineResult) -> PipelineResult:
        names = tiers_for_ticket(self.order, self.is_english(ticket), self.non_english_to_strong)
        last_failure, message = ErrorKind.INTERNAL, "no tier configured"
        for name in names:
            tier = self.tiers[name]
            if self.budget is not None and skipped_for_budget(name, self.budget.allows()):
                last_failure, message = ErrorKind.BUDGET_EXHAUSTED, f"{name}: {self.budget.describe()}"
                continue
            started = time.perf_counter()
            try:
                answer = await tier.classify(ticket)
            except TierUnavailable as exc:
                last_failure, message = ErrorKind.LLM_UNAVAILABLE, f"{name}: {exc}"
                result.attempts.append(self._spent(self._failed(tier, "unavailable", exc, started)))
                continue
            except TierInvalidOutput as exc:
                last_failure, message = ErrorKind.LLM_INVALID_OUTPUT, f"{name}: {exc}"
                result.attempts.append(self._spent(self._failed(tier, "invalid_output", exc, started)))
                continue
            self._spent(answer.attempt)
            thresholds = self.tier_thresholds.get(name, self.thresholds)
            below = axes_below_threshold(answer.classification, thresholds)
            result.classification = answer.classification
            if not below:
                result.attempts.append(answer.attempt)
                return result
            result.attempts.append(answer.attempt.model_copy(update={"outcome": "low_confidence"}))
            last_failure = ErrorKind.LOW_CONFIDENCE
            message = f"{name}: below threshold on {', '.join(below)}"
        kind, flagged = conclude(result.classification, last_failure, message, self.low_confidence_action)
        result.error_kind, result.low_confidence = kind, flagged
        result.error_message = message
        return result

    def _spent(self, attempt: TierAttempt) -> TierAttempt:
        """Counts what the attempt was billed against the spend guard (failed calls cost too)."""
        if self.budget is not None:
            self.budget.record(attempt.cost_usd)
        return attempt

    @staticmethod
    def _failed(tier: Tier, outcome: str, error: TierError, started: float) -> TierAttempt:
        return TierAttempt.model_validate(
            {
                "tier": tier.name,
                "model": tier.model,
                "outcome": outcome,
                "attempts": error.attempts,
                "latency_ms": (time.perf_counter() - started) * 1000,
                "usage": error.usage,
                "cost_usd": error.cost_usd,
                "error": str(error)[:500],
            }
        )

    async def close(self) -> None:
        for tier in self.tiers.values():
            await tier.close()
