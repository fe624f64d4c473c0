"""The shape of one successful reply: a pre-warm, a refusal, or thinking followed by the answer.

All of these are HTTP 200 and all are billed, which is why a router can get them wrong: a pre-warm
(``max_tokens`` 0) has no content, a refusal has no answer, and thinking spends ``max_tokens`` before
the answer starts, so a tight cap cuts the answer off. Pure: the answer, ticket and token budget go
in, the content blocks, stop reason and output-token counts come out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from producer_tools.fake_api.answers import Ticket, render, stable_unit
from producer_tools.fake_api.scenario import ModelScript
from producer_tools.fake_api.thinking import ThinkingPlan, thinking_block, thinking_tokens

# A refusal is decided a few tokens in; those tokens are billed.
REFUSAL_OUTPUT_TOKENS = 4
REFUSAL_EXPLANATION = "The fake API was scripted to refuse this request."


@dataclass(frozen=True)
class Reply:
    """What goes into the message body besides ids and input usage."""

    content: list[dict[str, Any]]
    stop_reason: str
    output_tokens: int
    thinking_tokens: int = 0
    stop_details: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class Generation:
    """What limits and shapes generation: the cap, the tokenizer, thinking, and a forced tool."""

    max_tokens: int
    factor: float
    thinking: ThinkingPlan
    tool_name: str | None = None
    tool_use_id: str = ""


def refuses(script: ModelScript, ticket: Ticket) -> bool:
    """A stable fraction ``refusal_rate`` of tickets, so a retry of a refused ticket is refused again."""
    return script.refusal_rate > 0 and stable_unit("refusal", ticket.text) < script.refusal_rate


def prewarm_reply() -> Reply:
    """``max_tokens`` 0 writes or reads the cache and generates nothing."""
    return Reply([], "max_tokens", 0)


def refusal_reply(max_tokens: int) -> Reply:
    return Reply(
        [],
        "refusal",
        min(REFUSAL_OUTPUT_TOKENS, max_tokens),
        stop_details={"type": "refusal", "category": None, "explanation": REFUSAL_EXPLANATION},
    )


def compose_reply(
    answer: dict[str, Any] | str, ticket: Ticket, generation: Generation, refused: bool
) -> Reply:
    """Pre-warm first (nothing is generated), then a refusal, else thinking and the answer."""
    if generation.max_tokens == 0:
        return prewarm_reply()
    if refused:
        return refusal_reply(generation.max_tokens)
    return thought_and_answered(answer, ticket, generation)


def thought_and_answered(answer: dict[str, Any] | str, ticket: Ticket, generation: Generation) -> Reply:
    """Thinking comes out of ``max_tokens`` first; the answer gets what is left and is cut to fit.

    If thinking alone reaches the cap, the reply is only the (cut) thinking block.
    """
    cap = generation.max_tokens
    thought = thinking_tokens(generation.thinking, ticket.text)
    if thought >= cap:
        block = thinking_block(ticket.text, cap, generation.factor)
        return Reply([block], "max_tokens", cap, cap)
    rendered = render(answer, generation.tool_name, cap - thought, generation.tool_use_id, generation.factor)
    opening = [thinking_block(ticket.text)] if thought else []
    return Reply(opening + rendered.content, rendered.stop_reason, rendered.output_tokens + thought, thought)
