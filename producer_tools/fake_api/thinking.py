"""Whether a request makes the model think, how many tokens that costs, and the block it leaves.

On the 5.x models thinking is on unless the request turns it off, and it is paid for out of
``max_tokens``: a cap sized for the answer alone comes back cut off. The fake reproduces that so the
router's max_tokens and thinking settings are tested for real. The amount depends on the effort and
on the ticket (a stable hash of its text), never on call order, so a retried ticket thinks exactly
as long as it did the first time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from consumer.classify.models import Effort, ModelFacts, effective_thinking
from producer_tools.fake_api.answers import cut_text, stable_unit
from producer_tools.fake_api.contract import ThinkingSetting

# Typical thinking per effort level before the per-ticket spread. Each level is at least twice the one
# below and one ticket always gets the same spread, so more effort always means more thinking.
THINKING_BASE_TOKENS: dict[Effort, int] = {
    "low": 300,
    "medium": 900,
    "high": 2_000,
    "xhigh": 4_000,
    "max": 8_000,
}
# A model without an effort parameter (or missing from the table) thinks as hard as at "high".
FALLBACK_EFFORT: Effort = "high"
SPREAD_LOW, SPREAD_HIGH = 0.75, 1.25
SIGNATURE_PREFIX = "sig_fake_"


@dataclass(frozen=True)
class ThinkingPlan:
    """``budget_tokens`` is set only for manual thinking, where it caps the thinking."""

    thinks: bool
    effort: Effort
    budget_tokens: int | None = None


def plan_thinking(setting: ThinkingSetting, facts: ModelFacts | None) -> ThinkingPlan:
    """Uses the router's own rule (``effective_thinking``) so both sides agree on when a model thinks."""
    default_effort = facts.capabilities.default_effort if facts is not None else None
    budget = setting.budget_tokens if setting.type == "enabled" else None
    return ThinkingPlan(
        thinks=effective_thinking(facts, setting.type),
        effort=setting.effort or default_effort or FALLBACK_EFFORT,
        budget_tokens=budget,
    )


def thinking_tokens(plan: ThinkingPlan, ticket_text: str) -> int:
    """The base for the effort times a stable per-ticket factor in [0.75, 1.25), capped by a budget."""
    if not plan.thinks:
        return 0
    spread = SPREAD_LOW + (SPREAD_HIGH - SPREAD_LOW) * stable_unit("thinking", ticket_text)
    tokens = round(THINKING_BASE_TOKENS[plan.effort] * spread)
    return tokens if plan.budget_tokens is None else min(tokens, plan.budget_tokens)


def thinking_text(ticket_text: str) -> str:
    """A short, readable stand-in for the summarised thinking the API returns."""
    gist = " ".join(ticket_text.split())[:80] or "an empty ticket"
    return (
        f"The ticket reads: {gist}. Weighing each axis against the routing policy before answering "
        "with the labels and how sure I am of each."
    )


def thinking_block(ticket_text: str, max_tokens: int | None = None, factor: float = 1.0) -> dict[str, Any]:
    """The block that opens a thinking reply; cut to ``max_tokens`` when thinking ran out of room.

    The signature is opaque to callers, as the real one is; it is stable per ticket text.
    """
    text = thinking_text(ticket_text)
    if max_tokens is not None:
        text = cut_text(text, max_tokens, factor)
    digest = hashlib.blake2b(ticket_text.encode(), digest_size=16).hexdigest()
    return {"type": "thinking", "thinking": text, "signature": SIGNATURE_PREFIX + digest}
