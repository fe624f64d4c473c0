"""The ``DraftReply`` event: a first reply drafted for one routed ticket, for an agent to review.

``ticket-router draft`` reads the queue topics and, for each routed ticket a handler of the taxonomy
matches, asks Claude for a draft of the first reply and publishes one of these to ``DRAFTS_TOPIC``
(key = ``ticket_id``). A draft is a suggestion to a person: nothing in ticket-router sends it to a
customer, and ``review_required`` is in the contract (always true) so that a consumer of the topic
cannot mistake it for a reply that may be sent as it is.

A wire contract like ``schemas.events`` (exported as JSON Schema): it changes only by adding
optional fields, and unknown fields are ignored so a reader can be older than the drafter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import TICKET_SCHEMA_VERSION, NonEmptyId, SourcePosition, TokenUsage, utc_now

DEFAULT_DRAFTS_TOPIC = "ticket-drafts"


class DraftReply(BaseModel):
    """A drafted first reply to one routed ticket event (join with the ``RoutedTicket`` by ``event_id``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = TICKET_SCHEMA_VERSION
    event_id: NonEmptyId = Field(description="The routed ticket event the draft answers")
    ticket_id: NonEmptyId
    queue: str = Field(description="The queue the ticket was routed to (without QUEUE_TOPIC_PREFIX)")
    handler: str = Field(description="The taxonomy handler whose instructions wrote the draft")
    reply: str = Field(min_length=1, description="The drafted reply text, for an agent to review and edit")
    review_required: Literal[True] = Field(
        default=True,
        description="Always true: a person reviews the draft; nothing sends it to a customer automatically",
    )
    model: str = Field(description="The Claude model that wrote the draft")
    tier: Literal["fast", "strong"]
    usage: TokenUsage
    cost_usd: float = Field(ge=0.0, description="Estimated spend of every call made for this draft, USD")
    latency_ms: float = Field(ge=0.0, description="Time spent writing the draft, retries included")
    attempts: int = Field(ge=1, description="Messages API calls made (retries included)")
    handler_version: str = Field(
        description="Hash of the handler's prompt (template, instructions, model and request settings)"
    )
    drafter_version: str
    drafted_at: datetime = Field(default_factory=utc_now)
    source: SourcePosition = Field(
        description="Where the routed ticket was read: queue topic, partition, offset"
    )


DRAFT_MODELS: tuple[type[BaseModel], ...] = (DraftReply,)
