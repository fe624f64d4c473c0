"""Generic JSON webhook mappings (``API_WEBHOOK_MAPPINGS``): any help desk's JSON as a TicketEvent.

Zendesk and Intercom have adapters of their own (``consumer.api.webhooks``); every other help desk
(Freshdesk, a home-grown one) sends whatever JSON its webhook template renders, so the operator
describes, per named mapping, where each ``TicketEvent`` field is in that JSON. The field names are
TicketEvent's, as in ``ticket-tools publish --map``, plus ``metadata.KEY``.

Everything here is pure: ``parse_mappings`` checks a mapping document once, at start-up, and
raises ``ValueError`` naming the key (``freshdesk.fields.channel.map``) and what it accepts, so a
typo stops the service instead of failing every webhook; ``mapped_event`` reads one payload and
raises ``PayloadError`` naming the payload's JSON path, which the API answers as a 400.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from consumer.api.webhooks import (
    DEFAULT_TIER,
    Adapter,
    PayloadError,
    build_event,
    html_to_text,
    lookup,
    optional_text,
    path_of,
    required_text,
    timestamp,
)
from schemas.events import AccountTier, AuthorRole, Channel, EventType, TicketEvent

JsonPath = tuple[str | int, ...]
METADATA_PREFIX = "metadata."
# TicketEvent's own field names, like ``publish --map``; event_id has its own key (built from
# several payload fields) and schema_version is not the help desk's to set.
MAPPABLE_FIELDS: tuple[str, ...] = tuple(
    name for name in TicketEvent.model_fields if name not in {"metadata", "event_id", "schema_version"}
)
REQUIRED_FIELDS = ("ticket_id", "body", "customer_id")
"""Fields a mapping must give (a path or a constant): no default would be honest for them."""
ENUMS: dict[str, type[StrEnum]] = {
    "event_type": EventType,
    "account_tier": AccountTier,
    "author_role": AuthorRole,
    "channel": Channel,
}
DEFAULTS: dict[str, str] = {
    "event_type": EventType.CREATED.value,
    "account_tier": DEFAULT_TIER.value,
    "author_role": AuthorRole.CUSTOMER.value,
    "channel": Channel.WEB.value,
}
"""Values of unmapped fields (created_at, when unmapped, is the time the webhook arrived)."""
MAPPING_KEYS = ("event_id", "fields")
RULE_KEYS = ("path", "const", "default", "map", "html", "prefix")
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
RESERVED_NAMES = frozenset({"zendesk", "intercom"})
"""These have adapters and routes of their own (``/v1/webhooks/zendesk``, ``/intercom``)."""
_SEGMENT = re.compile(r"(?P<key>[^.\[\]]*)(?P<indices>(?:\[-?\d+\])*)")


# -- JSON paths -----------------------------------------------------------------------------------


def parse_path(text: str) -> JsonPath:
    """``ticket.tags[0].name`` (an optional leading ``$.``) as ``("ticket", "tags", 0, "name")``:
    the same steps ``webhooks.lookup`` walks and ``webhooks.path_of`` prints back in 400s."""
    rest = text.strip().removeprefix("$").removeprefix(".")
    steps: list[str | int] = []
    for segment in rest.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None or not (match["key"] or match["indices"]):
            raise ValueError(f"{text!r} is not a JSON path (dotted keys with [n] list indices: a.b[0].c)")
        if match["key"]:
            steps.append(match["key"])
        steps.extend(int(index) for index in re.findall(r"-?\d+", match["indices"]))
    return tuple(steps)


# -- the mapping, checked at start-up -------------------------------------------------------------


@dataclass(frozen=True)
class FieldRule:
    """Where one TicketEvent field comes from: a payload path or a constant, then optionally
    HTML reduced to text, a value map (case-insensitive), a prefix, and a default for when the
    payload has no value (or, with a map, a value the map does not know)."""

    path: JsonPath | None = None
    const: str | None = None
    default: str | None = None
    values: Mapping[str, str] = field(default_factory=dict)
    html: bool = False
    prefix: str = ""


@dataclass(frozen=True)
class WebhookMapping:
    """One named mapping: served at ``POST /v1/webhooks/<name>``; ``name`` is also the event id's
    prefix and ``metadata.source``."""

    name: str
    event_id: tuple[JsonPath, ...]
    fields: Mapping[str, FieldRule]


def _text(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{where}: expected a string or number")
    return str(value)


def _allowed(name: str, value: str, where: str) -> str:
    """An enum field's constant, default or mapped value, checked against the enum."""
    enum = ENUMS.get(name)
    if enum is None:
        return value
    lowered = value.strip().lower()
    allowed = [member.value for member in enum]
    if lowered not in allowed:
        raise ValueError(f"{where}: {value!r} is not a valid {name} (allowed: {', '.join(allowed)})")
    return lowered


def _keys(spec: Mapping[Any, Any], allowed: Sequence[str], where: str) -> None:
    unknown = [str(key) for key in spec if key not in allowed]
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")


def _path(value: object, where: str) -> JsonPath:
    try:
        return parse_path(_text(value, where))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _value_map(name: str, spec: object, where: str) -> dict[str, str]:
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(f"{where}: expected a non-empty map of payload value: {name} value")
    return {
        _text(key, where).strip().lower(): _allowed(name, _text(value, f"{where}.{key}"), f"{where}.{key}")
        for key, value in spec.items()
    }


def parse_rule(name: str, spec: object, where: str) -> FieldRule:
    """A field's rule: a bare string is a path; an object has ``path`` or ``const`` and options."""
    if isinstance(spec, str):
        return FieldRule(path=_path(spec, where))
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a JSON path or an object with {', '.join(RULE_KEYS)}")
    _keys(spec, RULE_KEYS, where)
    if ("path" in spec) == ("const" in spec):
        raise ValueError(f"{where}: give exactly one of path or const")
    if "const" in spec:
        if set(spec) != {"const"}:
            raise ValueError(f"{where}: const takes no other option (it is the value as given)")
        return FieldRule(const=_allowed(name, _text(spec["const"], f"{where}.const"), f"{where}.const"))
    html = spec.get("html", False)
    if not isinstance(html, bool):
        raise ValueError(f"{where}.html: expected true or false")
    default = spec.get("default")
    where_default = f"{where}.default"
    if "prefix" in spec and name in ENUMS:
        raise ValueError(f"{where}.prefix: only for text fields ({name} takes one of its values)")
    return FieldRule(
        path=_path(spec["path"], f"{where}.path"),
        default=None if default is None else _allowed(name, _text(default, where_default), where_default),
        values=_value_map(name, spec["map"], f"{where}.map") if "map" in spec else {},
        html=html,
        prefix=_text(spec.get("prefix", ""), f"{where}.prefix"),
    )


def _field_name(name: object, where: str) -> str:
    text = str(name)
    metadata_key = text.startswith(METADATA_PREFIX) and len(text) > len(METADATA_PREFIX)
    if text not in MAPPABLE_FIELDS and not metadata_key:
        hint = " (event_id has its own key, beside fields)" if text == "event_id" else ""
        raise ValueError(
            f"{where}: unknown field {text!r}{hint} (fields: {', '.join(MAPPABLE_FIELDS)}, metadata.KEY)"
        )
    return text


def parse_mapping(name: str, spec: object) -> WebhookMapping:
    """One named mapping, every key checked; messages start with the key's dotted place."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(
            f"{name!r}: a mapping name is 1-40 of a-z, 0-9, '_', '-' (it is the URL's last part)"
        )
    if name in RESERVED_NAMES:
        raise ValueError(f"{name}: reserved (the {name} adapter has its own route); pick another name")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{name}: expected an object with {', '.join(MAPPING_KEYS)}")
    _keys(spec, MAPPING_KEYS, name)
    ids = spec.get("event_id")
    ids = [ids] if isinstance(ids, str) else ids
    if not isinstance(ids, list) or not ids:
        raise ValueError(
            f"{name}.event_id: expected the JSON paths that identify one delivery "
            "(e.g. [ticket.id, ticket.updated_at]), so a redelivered webhook is a duplicate"
        )
    event_id = tuple(_path(path, f"{name}.event_id[{i}]") for i, path in enumerate(ids))
    fields = spec.get("fields")
    if not isinstance(fields, Mapping):
        raise ValueError(f"{name}.fields: expected an object of TicketEvent field: JSON path or rule")
    rules = {
        _field_name(key, f"{name}.fields"): parse_rule(str(key), rule, f"{name}.fields.{key}")
        for key, rule in fields.items()
    }
    missing = [required for required in REQUIRED_FIELDS if required not in rules]
    if missing:
        raise ValueError(f"{name}.fields: {', '.join(missing)} must be mapped (a path or a const)")
    return WebhookMapping(name, event_id, rules)


def parse_mappings(document: object) -> dict[str, WebhookMapping]:
    """The whole document: ``{name: {event_id: [...], fields: {...}}, ...}``."""
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise ValueError("expected an object of mapping name: {event_id, fields}")
    return {str(name): parse_mapping(name, spec) for name, spec in document.items()}


def load_mappings(path: Path) -> dict[str, WebhookMapping]:
    """The mappings in a YAML (or JSON) file; every problem is one line starting with the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}: not valid YAML{line}") from None
    try:
        return parse_mappings(document)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


# -- one payload ----------------------------------------------------------------------------------


def rule_value(name: str, rule: FieldRule, payload: object) -> str | None:
    """The field's text from ``payload``: read, HTML to text, mapped, prefixed; the default (or
    None) when the payload has nothing there. An enum value nothing maps is a PayloadError naming
    the path (its value is not repeated: 400s never echo a body)."""
    if rule.const is not None or rule.path is None:
        return rule.const
    text = optional_text(payload, rule.path)
    if rule.html:
        text = html_to_text(text)
    if text and rule.values:
        text = rule.values.get(text.lower(), rule.default if rule.default is not None else text)
    if not text:
        return rule.default
    enum = ENUMS.get(name)
    if enum is not None:
        text = text.lower()
        allowed = [member.value for member in enum]
        if text not in allowed:
            raise PayloadError(
                path_of(rule.path),
                f"not a valid {name} (allowed: {', '.join(allowed)}); give the mapping a map or a default",
            )
    return rule.prefix + text


def mapped_event(mapping: WebhookMapping, payload: object, now: datetime) -> TicketEvent:
    """The TicketEvent ``mapping`` reads from ``payload``; ``now`` is its created_at when the
    mapping has none. Raises PayloadError naming the payload's JSON path."""
    if not isinstance(payload, Mapping):
        raise PayloadError("$", "expected a JSON object")
    parts = [required_text(payload, path) for path in mapping.event_id]
    event: dict[str, Any] = {"event_id": ":".join([mapping.name, *parts]), **DEFAULTS}
    metadata: dict[str, str] = {"source": mapping.name}
    sources: dict[str, str] = {}
    for name, rule in mapping.fields.items():
        if name == "created_at" and rule.path is not None and lookup(payload, rule.path) is not None:
            event[name] = timestamp(payload, rule.path)
            continue
        value = rule_value(name, rule, payload)
        if value is None:
            if name in REQUIRED_FIELDS and rule.path is not None:
                raise PayloadError(path_of(rule.path), "missing (and the mapping has no default)")
            continue
        if name.startswith(METADATA_PREFIX):
            metadata[name.removeprefix(METADATA_PREFIX)] = value
        else:
            event[name] = value
            if rule.path is not None:
                sources[name] = path_of(rule.path)
    event.setdefault("created_at", now)
    event["metadata"] = metadata
    try:
        return build_event(event)
    except PayloadError as exc:  # name the payload's path, not ours, when the value came from one
        raise PayloadError(sources.get(exc.field.removeprefix("$."), exc.field), exc.problem) from None


def adapter_for(mapping: WebhookMapping) -> Adapter:
    """The webhook route's adapter: ``mapped_event`` at the time the webhook arrives."""

    def adapt(payload: object) -> TicketEvent:
        return mapped_event(mapping, payload, datetime.now(UTC))

    return adapt
