"""The ``ShadowDecision`` event: what a candidate router would have done with one ticket.

A shadow (``ticket-router consume --shadow NAME``) is a second router with its own configuration
(tiers, models, taxonomy, thresholds, retrieval) reading the same input topic in its own consumer
group. It must never change what happens to a ticket, so instead of a queue or the triage topic it
publishes one of these per classified ticket to ``shadow.NAME`` (key = ``ticket_id``), and
``ticket-tools shadow-report NAME`` joins them with the live router's decisions by ``event_id``.

A wire contract like ``schemas.events`` (exported as JSON Schema): it changes only by adding
optional fields, and unknown fields are ignored so a reader can be older than the shadow.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import (
    TICKET_SCHEMA_VERSION,
    Classification,
    ErrorKind,
    SourcePosition,
    TierAttempt,
    TokenUsage,
)

SHADOW_TOPIC_PREFIX = "shadow."
MAX_TOPIC_LENGTH = 249
"""Kafka's limit on a topic name; the shadow's name has the prefix's length less."""
MAX_SHADOW_NAME_LENGTH = MAX_TOPIC_LENGTH - len(SHADOW_TOPIC_PREFIX)
_TOPIC_CHARACTERS = re.compile(r"[A-Za-z0-9._-]+")


def shadow_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a shadow (its topic is ``shadow.NAME``), or None when it can.

    The name becomes part of a topic name and of a consumer group, so it gets Kafka's topic rules:
    ASCII letters, digits, ``.``, ``_`` and ``-``, and a topic of at most 249 characters.
    """
    if not name:
        return "the name is empty"
    if len(name) > MAX_SHADOW_NAME_LENGTH:
        return f"the name is {len(name)} characters; at most {MAX_SHADOW_NAME_LENGTH} fit a Kafka topic name"
    if _TOPIC_CHARACTERS.fullmatch(name) is None:
        bad = sorted({char for char in name if _TOPIC_CHARACTERS.fullmatch(char) is None})
        shown = " ".join(repr(char) for char in bad)
        return f"{shown} cannot be part of a Kafka topic name (allowed: letters, digits, '.', '_', '-')"
    return None


def shadow_topic(name: str) -> str:
    """Where the shadow called ``name`` publishes its decisions."""
    return SHADOW_TOPIC_PREFIX + name


def shadow_group(consumer_group: str, name: str) -> str:
    """The shadow's own consumer group: it reads every ticket the live group reads, from its own offsets."""
    return f"{consumer_group}.shadow.{name}"


class ShadowDecision(BaseModel):
    """What the shadow ``shadow`` would have done with one ticket (key = ``ticket_id``).

    ``outcome`` says which: routed to ``queue`` by ``rule``, or sent to triage for ``error_kind``
    (with the partial classification, when a tier answered below its thresholds). The rest is what
    a ``RoutedTicket`` says about how the answer was reached, so cost, latency and escalation can be
    compared with the live router's. The ticket itself is not repeated: join by ``event_id``.
    """

    model_config = ConfigDict(extra="ignore")

    schema_version: Literal[1] = TICKET_SCHEMA_VERSION
    shadow: str = Field(description="The shadow's name (``--shadow NAME``)")
    outcome: Literal["routed", "triaged"]
    ticket_id: str | None = Field(description="None only when the record could not be read as a ticket")
    event_id: str | None = Field(description="None only when the record could not be read as a ticket")
    queue: str | None = Field(default=None, description="The queue it would have routed to (routed only)")
    rule: str | None = Field(default=None, description="The routing rule that chose the queue (routed only)")
    classification: Classification | None = Field(
        default=None, description="Routed: the classification; triaged: the partial one, when a tier answered"
    )
    error_kind: ErrorKind | None = Field(default=None, description="Why it would have triaged (triaged only)")
    message: str | None = Field(default=None, description="The triage reason (triaged only)")
    model_used: str = Field(default="", description="The model whose answer counted; empty if none answered")
    tiers_tried: list[str] = Field(default_factory=list)
    escalated: bool = False
    low_confidence: bool = Field(
        default=False, description="Routed although an axis was below its threshold on the last tier"
    )
    tier_attempts: list[TierAttempt] = Field(default_factory=list)
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost_usd: float = 0.0
    latency_ms: float = Field(default=0.0, description="Classification time; 0 when nothing was classified")
    prompt_version: str | None = None
    router_version: str
    decided_at: datetime
    source: SourcePosition


SHADOW_MODELS: tuple[type[BaseModel], ...] = (ShadowDecision,)
"""Exported as JSON Schema beside ``schemas.events.WIRE_MODELS`` (see ``schemas.export``)."""
