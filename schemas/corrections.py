"""The ``Correction`` event: a person's verdict on how the router classified one ticket.

Corrections are how the router learns from the people who handle its tickets: an agent moving a
ticket to another team, a triager labelling a ticket the router could not route, or a help desk's
export of last month's reassignments. Each one names the classified event it corrects
(``event_id``), so it can be joined with what the router decided, and carries only the axes that
were corrected: a correction that says nothing about ``urgency`` leaves the router's urgency as it
was, neither confirmed nor refuted.

Like the models in ``schemas.events`` this is a wire contract (exported as JSON Schema): it
changes only by adding optional fields, and unknown fields are ignored so that a producer can
upgrade before the router does. Whether the labels exist is a question for the taxonomy the
reader uses, not for the schema, since taxonomies change more often than this contract.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.events import NonEmptyId

CORRECTION_SCHEMA_VERSION: Literal[1] = 1

DEFAULT_CORRECTIONS_TOPIC = "ticket-corrections"
"""Where corrections are published (key = ``ticket_id``): ``CORRECTIONS_TOPIC``'s default."""

# Expressed in the exported JSON Schema too, so that a producer in another language refuses a
# correction that corrects nothing before it is sent, as the Python model does.
_SAYS_SOMETHING: dict[str, Any] = {
    "anyOf": [
        {"required": ["labels"], "properties": {"labels": {"minProperties": 1}}},
        {"required": ["queue"], "properties": {"queue": {"type": "string"}}},
    ]
}


def new_correction_id() -> str:
    return str(uuid.uuid4())


class CorrectionSource(StrEnum):
    """Who made the correction; a metric label too, so the set is closed."""

    AGENT = "agent"  # an agent moved or relabelled a ticket in the help desk
    TRIAGE = "triage"  # a person labelled a ticket from needs-human-triage
    IMPORT = "import"  # a bulk import of past reassignments (``ticket-tools correct --csv``)


class Correction(BaseModel):
    """Corrected labels (and/or queue) for one classified ticket event (key = ``ticket_id``).

    The ticket's text is optional: a router that routed the event joins the correction with what
    it routed by ``event_id`` and already has the text. An import from a help desk may correct
    tickets the router never saw (they predate it, or came in another way), so it carries
    ``subject``, ``body`` and ``language`` itself, which makes the correction a labelled example
    on its own.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_extra=_SAYS_SOMETHING)

    schema_version: Literal[1] = CORRECTION_SCHEMA_VERSION
    correction_id: NonEmptyId = Field(
        default_factory=new_correction_id,
        description="Unique per correction, so a consumer can drop a correction delivered twice",
    )
    ticket_id: NonEmptyId
    event_id: NonEmptyId = Field(description="The classified ticket event this correction is about")
    labels: dict[NonEmptyId, NonEmptyId] = Field(
        default_factory=dict,
        description="Axis → corrected label, for any subset of the taxonomy's axes (empty only with queue)",
    )
    queue: str | None = Field(
        default=None,
        min_length=1,
        max_length=249,
        description="The queue the ticket was moved to, when a person overrode the routing",
    )
    source: CorrectionSource
    actor: NonEmptyId = Field(description="Opaque id of who corrected (a person, or the import job)")
    corrected_at: AwareDatetime
    subject: str = Field(default="", max_length=2_000, description="The ticket's subject, when known")
    body: str | None = Field(
        default=None, description="The ticket's text, for tickets the router may not have seen"
    )
    language: str | None = Field(default=None, max_length=35, description="BCP 47 tag of the text")
    router_labels: dict[NonEmptyId, NonEmptyId] = Field(
        default_factory=dict,
        description=(
            "Set by the router that routed the event when it republishes the correction with the "
            "ticket's text: its own labels, kept on the axes the person did not correct. Producers "
            "leave it out; a correction carrying it is not counted again"
        ),
    )

    @model_validator(mode="after")
    def _corrects_something(self) -> Correction:
        if not self.labels and self.queue is None:
            raise ValueError("a correction needs at least one corrected label or a queue")
        return self

    @property
    def fields_corrected(self) -> list[str]:
        """The axes corrected, then ``queue`` when overridden: what the tool counts per field."""
        return [*self.labels, *(["queue"] if self.queue is not None else [])]


CORRECTION_MODELS: tuple[type[BaseModel], ...] = (Correction,)
"""Exported as JSON Schema beside ``schemas.events.WIRE_MODELS`` (see ``schemas.export``)."""
