"""Sample ticket events for ``ticket-tools publish --sample N``.

The texts come from the bundled demo tickets (``consumer/data/samples.jsonl``, the new tickets
in it), which the local tier is not trained on and the Claude prompt does not quote as examples:
samples drawn from the training set (``training.jsonl``) were classified with the confidence of
a model grading its own homework, overstating what the local tier does on unseen tickets. There
are few of them, so texts repeat for a large N; the envelope fields (ids, tier, channel, event
type, author) are varied around them. The generator is deterministic for a given seed and base
time so a demo or a bug report can be reproduced exactly: the same ``--seed`` gives the same ids,
texts and fields, and only ``created_at`` moves with the time of the run.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from consumer.errors import UserError
from schemas.events import AccountTier, AuthorRole, Channel, EventType, TicketEvent

TRAINING_RESOURCE = "training.jsonl"
SAMPLES_RESOURCE = "samples.jsonl"
NEW_TICKET = "ticket.created"
FOLLOW_UP_SHARE = 0.15
"""Share of samples that are a follow-up message on an earlier sample ticket (reclassification path)."""
AGENT_SHARE_OF_FOLLOW_UPS = 0.3
"""Share of follow-ups written by an agent, which the router must not reclassify."""
E = TypeVar("E", AccountTier, Channel)

SPREAD = timedelta(hours=6)
"""Samples are created within this window before the base time, newest last."""


@dataclass(frozen=True)
class SampleText:
    """One bundled ticket text and the envelope hints stored beside it."""

    source_id: str
    subject: str
    body: str
    account_tier: str | None
    channel: str | None
    language: str | None


def parse_sample_texts(raw: bytes) -> list[SampleText]:
    """Rows of a training-style or TicketEvent JSONL file; rows without a body are skipped, not fatal.

    The files are edited by hand, so a bad row should cost one sample, not the command. Of a
    TicketEvent file only new tickets are taken: a follow-up ("any update?") is no ticket text.
    """
    texts: list[SampleText] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(row, Mapping) or not isinstance(row.get("body"), str) or not row["body"].strip():
            continue
        if row.get("event_type", NEW_TICKET) != NEW_TICKET:
            continue
        texts.append(
            SampleText(
                source_id=str(row.get("id") or row.get("ticket_id") or f"line-{number}"),
                subject=_optional_str(row.get("subject")) or "",
                body=row["body"],
                account_tier=_optional_str(row.get("account_tier")),
                channel=_optional_str(row.get("channel")),
                language=_optional_str(row.get("language")),
            )
        )
    return texts


def bundled_texts(resource: str = TRAINING_RESOURCE) -> list[SampleText]:
    """Texts shipped in the package (read through importlib.resources, so wheels work too).

    The default is the training set, which the benchmark uses for its many distinct texts; it
    measures throughput, not accuracy. ``held_out_texts`` is what ``--sample`` uses.
    """
    raw = resources.files("consumer.data").joinpath(resource).read_bytes()
    texts = parse_sample_texts(raw)
    if not texts:
        raise UserError(f"the bundled {resource} has no usable ticket texts")
    return texts


def held_out_texts() -> list[SampleText]:
    """The bundled demo tickets, none of which the local tier or the prompt's examples contain."""
    return bundled_texts(SAMPLES_RESOURCE)


def generate_samples(
    count: int, seed: int, now: datetime, texts: Sequence[SampleText] | None = None
) -> list[TicketEvent]:
    """``count`` valid, varied ticket events, identical for the same seed, texts and ``now``."""
    if count < 0:
        raise UserError(f"--sample must be at least 0, not {count}")
    pool = list(texts) if texts is not None else held_out_texts()
    rng = random.Random(seed)
    offsets = sorted((rng.uniform(0, SPREAD.total_seconds()) for _ in range(count)), reverse=True)
    events: list[TicketEvent] = []
    for index, seconds_ago in enumerate(offsets):
        earlier = events[rng.randrange(len(events))] if events and rng.random() < FOLLOW_UP_SHARE else None
        events.append(_sample_event(rng, index, seed, now - timedelta(seconds=seconds_ago), pool, earlier))
    return events


def _sample_event(
    rng: random.Random,
    index: int,
    seed: int,
    created_at: datetime,
    pool: Sequence[SampleText],
    earlier: TicketEvent | None,
) -> TicketEvent:
    """One event: a new ticket, or a follow-up (same ticket and customer) when ``earlier`` is given."""
    text = rng.choice(pool)
    event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    fields: dict[str, Any] = {
        "event_id": event_id,
        "subject": text.subject,
        "body": text.body,
        "language": text.language,
        "created_at": created_at,
        "metadata": {"generator": "ticket-tools publish --sample", "seed": seed, "text": text.source_id},
    }
    if earlier is None:
        fields |= {
            "event_type": EventType.CREATED,
            "ticket_id": f"SAMPLE-{seed}-{index:06d}",
            "customer_id": f"CUST-{rng.randint(1, 500):04d}",
            "account_tier": _enum_or_random(AccountTier, text.account_tier, rng),
            "channel": _enum_or_random(Channel, text.channel, rng),
            "author_role": AuthorRole.CUSTOMER,
        }
    else:
        agent = rng.random() < AGENT_SHARE_OF_FOLLOW_UPS
        fields |= {
            "event_type": EventType.MESSAGE_ADDED,
            "ticket_id": earlier.ticket_id,
            "customer_id": earlier.customer_id,
            "account_tier": earlier.account_tier,
            "channel": earlier.channel,
            "author_role": AuthorRole.AGENT if agent else AuthorRole.CUSTOMER,
            "subject": f"Re: {earlier.subject}" if earlier.subject else "",
        }
    try:
        return TicketEvent.model_validate(fields)
    except ValidationError as exc:  # a bundled text longer than the schema allows, for instance
        reason = exc.errors()[0]["msg"]
        raise UserError(f"sample from {text.source_id} is not a valid TicketEvent: {reason}") from None


def _enum_or_random(kind: type[E], hint: str | None, rng: random.Random) -> E:
    """The text's own hint when it is a valid value, otherwise a random one (keeps samples valid)."""
    values = list(kind)
    if hint is not None:
        for value in values:
            if value.value == hint:
                return value
    return rng.choice(values)


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
