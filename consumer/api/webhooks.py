"""Help-desk webhooks (Zendesk, Intercom) turned into ``TicketEvent``s: pure functions, no I/O.

The HTTP side (authentication, limits, producing with acks before ``202``) is the one
``POST /v1/tickets`` uses; these functions only read a payload. Each ``event_id`` is built from the
help desk's own ids, so a webhook the help desk delivers again is a duplicate the ingestor answers
without producing a second record.

A payload that cannot be read raises ``PayloadError`` naming the JSON path of the field; an
Intercom notification that is not a customer's message is ``Skipped`` (answered ``202``, nothing
produced), because Intercom sends every subscribed topic to one URL and a retry would not help.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

from pydantic import ValidationError

from schemas.events import AccountTier, AuthorRole, Channel, EventType, TicketEvent

DEFAULT_TIER = AccountTier.STARTER
ZENDESK_TIER_PATH: tuple[str | int, ...] = ("ticket", "account_tier")
"""Where the Zendesk body template may put the tier (e.g. ``{{ticket.organization.custom_fields.plan}}``);
API_ZENDESK_TIER_PATH replaces it."""
INTERCOM_TIER_PATH: tuple[str | int, ...] = ("data", "item", "custom_attributes", "account_tier")
"""A conversation attribute the Intercom workspace may define to carry the tier;
API_INTERCOM_TIER_PATH replaces it."""
INTERCOM_TOPICS = {
    "conversation.user.created": EventType.CREATED,
    "conversation.user.replied": EventType.MESSAGE_ADDED,
}


class PayloadError(Exception):
    """A webhook body this adapter cannot read; ``field`` is the JSON path (``$.ticket.id``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class Skipped:
    """A notification that carries no customer message: acknowledged, nothing produced."""

    reason: str


Adapter = Callable[[object], "TicketEvent | Skipped"]


# -- reading fields -------------------------------------------------------------------------------


def path_of(path: Sequence[str | int]) -> str:
    """``("data", "item", 0)`` as ``$.data.item[0]``, the way 400s name fields."""
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def lookup(document: object, path: Sequence[str | int]) -> object:
    """The value at ``path``, or None when any step is missing (or of the wrong kind)."""
    value = document
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list) or not -len(value) <= part < len(value):
                return None
            value = value[part]
        else:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
    return value


def required_text(document: object, path: Sequence[str | int]) -> str:
    """A non-empty string or number at ``path`` (help desks render ids either way), as text."""
    value = lookup(document, path)
    if isinstance(value, bool) or not isinstance(value, str | int):
        problem = "missing" if value is None else f"expected a string or number, got {type(value).__name__}"
        raise PayloadError(path_of(path), problem)
    text = str(value).strip()
    if not text:
        raise PayloadError(path_of(path), "empty")
    return text


def optional_text(document: object, path: Sequence[str | int]) -> str:
    value = lookup(document, path)
    return str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""


def timestamp(document: object, path: Sequence[str | int]) -> datetime:
    """Unix seconds (Intercom) or ISO 8601 (Zendesk's ``*_with_timestamp``); naive means UTC."""
    value = lookup(document, path)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise PayloadError(path_of(path), "not an ISO 8601 time or Unix seconds") from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    raise PayloadError(path_of(path), "missing" if value is None else "not an ISO 8601 time or Unix seconds")


def tier_at(document: object, path: Sequence[str | int]) -> AccountTier:
    """The tier a payload field maps to; absent or unknown values get the default, so a help
    desk's own plan names never make its webhooks fail."""
    value = optional_text(document, path).lower()
    try:
        return AccountTier(value)
    except ValueError:
        return DEFAULT_TIER


# -- HTML to text ---------------------------------------------------------------------------------

BLOCK_TAGS = {
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "pre",
}
SKIPPED_TAGS = {"script", "style"}


class _TextCollector(HTMLParser):
    """Collects text, turning block boundaries into line breaks and dropping scripts and styles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SKIPPED_TAGS:
            self._skipping += 1
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Intercom's HTML message body as the plain text the classifiers were trained on: tags
    removed, entities decoded, one line per block, runs of spaces and blank lines collapsed."""
    collector = _TextCollector()
    collector.feed(markup)
    collector.close()
    lines = (
        re.sub(r"[ \t\r\f\v\u00a0]+", " ", line).strip() for line in "".join(collector.parts).split("\n")
    )
    return "\n".join(line for line in lines if line)


# -- channels -------------------------------------------------------------------------------------

ZENDESK_VIA = (
    (("web service", "api"), Channel.API),
    (("mail",), Channel.EMAIL),
    (("chat", "messaging", "whatsapp", "sms", "facebook", "twitter", "instagram"), Channel.CHAT),
    (("phone", "voice", "call"), Channel.PHONE),
    (("web", "form", "help center", "widget"), Channel.WEB),
)
INTERCOM_SOURCE_TYPES = {
    "email": Channel.EMAIL,
    "conversation": Channel.CHAT,
    "chat": Channel.CHAT,
    "facebook": Channel.CHAT,
    "twitter": Channel.CHAT,
    "whatsapp": Channel.CHAT,
    "instagram": Channel.CHAT,
    "sms": Channel.CHAT,
    "phone_call": Channel.PHONE,
    "api": Channel.API,
}


def zendesk_channel(via: str) -> Channel:
    """Zendesk's ``{{ticket.via}}`` ("Mail", "Web form", "Phone call (incoming)", "Web service",
    ...) as a router channel; "Web service" is the API, so it is matched before "web"."""
    lowered = via.lower()
    for needles, channel in ZENDESK_VIA:
        if any(needle in lowered for needle in needles):
            return channel
    return Channel.WEB


def intercom_channel(source_type: str) -> Channel:
    """Intercom's ``source.type``; the Messenger ("conversation") and anything unknown is chat."""
    return INTERCOM_SOURCE_TYPES.get(source_type.lower(), Channel.CHAT)


# -- adapters -------------------------------------------------------------------------------------


def build_event(fields: dict[str, Any]) -> TicketEvent:
    """The event, or a PayloadError naming our field when a read value breaks the schema (a
    40,000-character subject, say)."""
    try:
        return TicketEvent.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise PayloadError(path_of(tuple(first["loc"])), f"as TicketEvent: {first['msg']}") from None


def zendesk_event(payload: object, tier_path: Sequence[str | int] = ZENDESK_TIER_PATH) -> TicketEvent:
    """A Zendesk webhook with the documented body template (``{"ticket": {...}}``).

    ``ticket.event`` is ``"created"`` (the trigger on ticket creation) or ``"comment_added"`` (the
    trigger on an update with a public comment); the latter takes ``latest_comment`` as the body
    and its ``latest_comment_id`` (else ``updated_at``) in the event id, so each comment is one event.
    """
    if not isinstance(payload, Mapping) or not isinstance(payload.get("ticket"), Mapping):
        raise PayloadError("$.ticket", 'missing: the body template must be {"ticket": {...}}')
    ticket_id = required_text(payload, ("ticket", "id"))
    kind = optional_text(payload, ("ticket", "event")).lower() or "created"
    if kind == "created":
        event_type, body = EventType.CREATED, required_text(payload, ("ticket", "description"))
        event_id, created_at = f"zendesk:{ticket_id}:created", timestamp(payload, ("ticket", "created_at"))
    elif kind in {"comment_added", "updated"}:
        event_type, body = EventType.MESSAGE_ADDED, required_text(payload, ("ticket", "latest_comment"))
        comment = optional_text(payload, ("ticket", "latest_comment_id"))
        marker = comment or required_text(payload, ("ticket", "updated_at"))
        event_id = f"zendesk:{ticket_id}:comment:{marker}"
        updated = optional_text(payload, ("ticket", "updated_at"))
        created_at = timestamp(payload, ("ticket", "updated_at" if updated else "created_at"))
    else:
        raise PayloadError("$.ticket.event", f'expected "created" or "comment_added", got {kind!r}')
    via = optional_text(payload, ("ticket", "via"))
    return build_event(
        {
            "event_id": event_id,
            "event_type": event_type,
            "ticket_id": f"zendesk-{ticket_id}",
            "subject": optional_text(payload, ("ticket", "subject")),
            "body": body,
            "account_tier": tier_at(payload, tier_path),
            "author_role": AuthorRole.CUSTOMER,
            "customer_id": required_text(payload, ("ticket", "requester_id")),
            "channel": zendesk_channel(via),
            "created_at": created_at,
            "metadata": {"source": "zendesk", "zendesk_ticket_id": ticket_id, "via": via},
        }
    )


def intercom_message(payload: object, event_type: EventType) -> tuple[tuple[str | int, ...], str]:
    """Where the customer's message is (the conversation's source, or its newest part) and the
    id that makes it unique within the conversation."""
    item = ("data", "item")
    if event_type is EventType.CREATED:
        return (*item, "source"), "created"
    parts = (*item, "conversation_parts", "conversation_parts")
    if not isinstance(lookup(payload, parts), list) or not lookup(payload, parts):
        raise PayloadError(path_of(parts), "missing: a reply notification carries the new part")
    part = (*parts, -1)
    return part, "part:" + required_text(payload, (*part, "id"))


def intercom_event(
    payload: object, tier_path: Sequence[str | int] = INTERCOM_TIER_PATH
) -> TicketEvent | Skipped:
    """An Intercom webhook notification (``type: notification_event``): a customer's new
    conversation or reply becomes an event; any other topic is Skipped."""
    if not isinstance(payload, Mapping):
        raise PayloadError("$", "expected an Intercom notification object")
    topic = required_text(payload, ("topic",))
    event_type = INTERCOM_TOPICS.get(topic)
    if event_type is None:
        return Skipped(f"topic {topic!r} is not a customer message (wanted {', '.join(INTERCOM_TOPICS)})")
    conversation = required_text(payload, ("data", "item", "id"))
    message, marker = intercom_message(payload, event_type)
    source = ("data", "item", "source")
    raw_body = required_text(payload, (*message, "body"))
    body = html_to_text(raw_body)
    if not body:
        raise PayloadError(path_of((*message, "body")), "no text once HTML is removed")
    when = (
        (*message, "created_at")
        if lookup(payload, (*message, "created_at"))
        else ("data", "item", "created_at")
    )
    return build_event(
        {
            "event_id": f"intercom:{conversation}:{marker}",
            "event_type": event_type,
            "ticket_id": f"intercom-{conversation}",
            "subject": html_to_text(optional_text(payload, (*source, "subject"))),
            "body": body,
            "account_tier": tier_at(payload, tier_path),
            "author_role": AuthorRole.CUSTOMER,
            "customer_id": required_text(payload, (*message, "author", "id")),
            "channel": intercom_channel(optional_text(payload, (*source, "type"))),
            "created_at": timestamp(payload, when),
            "metadata": {
                "source": "intercom",
                "intercom_conversation_id": conversation,
                "notification_id": optional_text(payload, ("id",)),
                "delivered_as": optional_text(payload, (*source, "delivered_as")),
            },
        }
    )
