"""Pydantic models of every event on the wire.

These are the contract with the services that publish tickets and the team consumers that read
queue topics, so they change only by adding optional fields; a breaking change bumps
``schema_version``. Unknown fields on input are ignored so that a producer can upgrade before the
router does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

TICKET_SCHEMA_VERSION: Literal[1] = 1

NonEmptyId = Annotated[str, Field(min_length=1, max_length=200)]


def utc_now() -> datetime:
    return datetime.now(UTC)


class EventType(StrEnum):
    CREATED = "ticket.created"
    MESSAGE_ADDED = "ticket.message_added"


class AuthorRole(StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"


class AccountTier(StrEnum):
    FREE = "free"
    STARTER = "starter"
    PRO = "pro"
    ENTERPRISE = "enterprise"


class Channel(StrEnum):
    EMAIL = "email"
    WEB = "web"
    CHAT = "chat"
    PHONE = "phone"
    API = "api"


class ErrorKind(StrEnum):
    """Why a ticket went to ``needs-human-triage``; also a metric label, so the set is closed."""

    MALFORMED_JSON = "malformed_json"
    SCHEMA_INVALID = "schema_invalid"
    TOO_LARGE = "too_large"
    LLM_UNAVAILABLE = "llm_unavailable"
    LLM_INVALID_OUTPUT = "llm_invalid_output"
    LOW_CONFIDENCE = "low_confidence"
    INTERNAL = "internal"
    BUDGET_EXHAUSTED = "budget_exhausted"
    """The Claude tiers were skipped because LLM_BUDGET_USD_PER_HOUR/_PER_DAY was spent and no local
    tier was confident; replay it (``ticket-tools replay``) once the window has rolled."""
    DRAFT_FAILED = "draft_failed"
    """``ticket-router draft`` could not draft a reply for a routed ticket (the message says why); the
    ticket itself is in its queue, and the original is the ``RoutedTicket`` read from that queue."""


class TicketEvent(BaseModel):
    """A ticket as published by upstream services on the input topic (key = ``ticket_id``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = TICKET_SCHEMA_VERSION
    event_id: NonEmptyId
    event_type: EventType
    ticket_id: NonEmptyId
    subject: str = Field(default="", max_length=2_000)
    body: str
    account_tier: AccountTier
    author_role: AuthorRole = AuthorRole.CUSTOMER
    customer_id: NonEmptyId
    channel: Channel
    language: str | None = Field(default=None, max_length=35, description="BCP 47 hint from the producer")
    created_at: AwareDatetime
    metadata: dict[str, Any] = Field(default_factory=dict)


class AxisPrediction(BaseModel):
    """One axis of a classification: the label and how sure the tier was of it."""

    model_config = ConfigDict(frozen=True)

    label: str
    confidence: float = Field(ge=0.0, le=1.0)


class Classification(BaseModel):
    """A tier's answer. Axes are taxonomy configuration, so they are a mapping, not fields."""

    model_config = ConfigDict(frozen=True)

    axes: dict[str, AxisPrediction]
    summary: str = ""
    routing_reason: str = ""


class TokenUsage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = Field(default=0, description="Billed output tokens, thinking included")
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    thinking_tokens: int = Field(default=0, description="Of output_tokens, those the model spent thinking")
    retrieved_tokens: int = Field(
        default=0,
        description=(
            "Of input_tokens, the estimated tokens of the retrieved similar examples put before the "
            "ticket (an estimate: the API reports only totals); 0 without retrieval"
        ),
    )

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            thinking_tokens=self.thinking_tokens + other.thinking_tokens,
            retrieved_tokens=self.retrieved_tokens + other.retrieved_tokens,
        )


class TierAttempt(BaseModel):
    """What one tier did for one ticket: kept so cost and latency can be attributed per tier."""

    tier: str
    model: str
    outcome: Literal["answered", "low_confidence", "unavailable", "invalid_output"]
    attempts: int = 1
    latency_ms: float = 0.0
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost_usd: float = 0.0
    error: str | None = None


class SourcePosition(BaseModel):
    topic: str
    partition: int
    offset: int


class RoutedTicket(BaseModel):
    """What a team consumer reads from its queue topic (key = ``ticket_id``)."""

    schema_version: Literal[1] = TICKET_SCHEMA_VERSION
    ticket: TicketEvent
    classification: Classification
    queue: str
    rule: str = Field(description="Name of the routing rule that chose the queue")
    model_used: str
    tiers_tried: list[str]
    escalated: bool
    reclassification: bool = Field(description="True for a customer's follow-up on an existing ticket")
    low_confidence: bool = Field(
        default=False, description="Routed although an axis was below its threshold on the last tier"
    )
    tier_attempts: list[TierAttempt] = Field(default_factory=list)
    latency_ms: float
    usage: TokenUsage
    cost_usd: float
    prompt_version: str
    router_version: str
    classified_at: datetime = Field(default_factory=utc_now)
    source: SourcePosition


class TriageRecord(BaseModel):
    """A ticket the router could not route, with enough to replay it (``ticket-tools replay``)."""

    schema_version: Literal[1] = TICKET_SCHEMA_VERSION
    error_kind: ErrorKind
    message: str
    original_value: str = Field(description="The record's value: UTF-8 text, or base64 when not UTF-8")
    original_encoding: Literal["utf-8", "base64"]
    original_size: int
    original_truncated: bool = False
    original_key: str | None = None
    source: SourcePosition
    ticket_id: str | None = None
    event_id: str | None = None
    attempts: int = 0
    tiers_tried: list[str] = Field(default_factory=list)
    partial_classification: Classification | None = None
    prompt_version: str | None = None
    router_version: str
    triaged_at: datetime = Field(default_factory=utc_now)


WIRE_MODELS: tuple[type[BaseModel], ...] = (TicketEvent, Classification, RoutedTicket, TriageRecord)
