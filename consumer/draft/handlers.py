"""Which handler drafts the reply to a routed ticket: pure functions over the taxonomy's handlers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from consumer.taxonomy import DraftTier, Handler


def handler_matches(handler: Handler, queue: str, labels: Mapping[str, str]) -> bool:
    """True when ``queue`` is one of the handler's queues (if it names any) and every axis its
    ``when`` names has one of the listed labels, as for a routing rule."""
    if handler.queues and queue not in handler.queues:
        return False
    for axis, wanted in handler.when.items():
        accepted = [wanted] if isinstance(wanted, str) else wanted
        if labels.get(axis) not in accepted:
            return False
    return True


def select_handler(handlers: Sequence[Handler], queue: str, labels: Mapping[str, str]) -> Handler | None:
    """The first handler, in file order, that matches; None when no handler drafts for this ticket."""
    for handler in handlers:
        if handler_matches(handler, queue, labels):
            return handler
    return None


def handler_tier(handler: Handler, default: DraftTier) -> DraftTier:
    """The tier (fast or strong) whose model writes the handler's drafts."""
    return handler.tier if handler.tier is not None else default


def handler_answer_tokens(handler: Handler, default: int) -> int:
    """Tokens the reply itself may use; thinking, when the model thinks, gets room on top."""
    return handler.max_tokens if handler.max_tokens is not None else default
