"""Turning a request's output schema and a ``ModelScript`` into the answer a model would give.

The schema comes from the taxonomy, so nothing here knows axis names: an axis is any property whose
schema is an object with a ``label`` string enum and a ``confidence`` number. Every choice is a pure
function of the ticket text (never of call order), so a retried ticket gets the same answer and a
benchmark's escalation rate does not depend on concurrency.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from consumer.classify.tokens import CHARS_PER_TOKEN, estimate_tokens
from consumer.draft.prompt import DRAFT_REQUEST
from producer_tools.fake_api.scenario import (
    FixedLabel,
    HashLabels,
    KeywordLabels,
    LabelRule,
    MalformedKind,
    ModelScript,
    TicketIdLabels,
)

_TICKET_ID = re.compile(r"^[ \t>*-]*ticket_id:\s*[`'\"]?([^\s`'\"]+)", re.MULTILINE | re.IGNORECASE)
_MAX_REF_DEPTH = 32

OUT_OF_RANGE_CONFIDENCE = 1.7
WRONG_TYPE_CONFIDENCE = "high"
NOT_JSON_TEXT = "I think this ticket is probably about billing, but I am not entirely sure."


@dataclass(frozen=True)
class Axis:
    name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Ticket:
    """What the fake reads from the user turn: the text it classifies and the id tests key on."""

    text: str
    ticket_id: str | None


def stable_unit(*parts: str) -> float:
    """A number in [0, 1) fixed by ``parts``; Python's ``hash`` is salted per process, so it won't do."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def stable_index(size: int, *parts: str) -> int:
    return min(int(stable_unit(*parts) * size), size - 1)


def user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """All text the user turns carry, in order (assistant prefill is not part of the ticket)."""
    pieces: list[str] = []
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
            continue
        for block in content or []:
            if isinstance(block, Mapping) and isinstance(block.get("text"), str):
                pieces.append(block["text"])
    return "\n".join(pieces)


def extract_ticket(messages: Sequence[Mapping[str, Any]], pattern: str | None = None) -> Ticket:
    """Narrows to the fenced ticket when the scenario names a pattern, so prompt wording can't match."""
    text = user_text(messages)
    id_match = _TICKET_ID.search(text)
    ticket_id = id_match.group(1) if id_match else None
    if pattern is not None:
        fenced = re.search(pattern, text, re.DOTALL)
        if fenced is not None:
            text = fenced.group(1) if fenced.groups() else fenced.group(0)
    return Ticket(text=text, ticket_id=ticket_id)


def resolve(schema: Any, root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follows local ``$ref``s (``#/$defs/...``) so schemas generated from pydantic models work too."""
    node = schema
    for _ in range(_MAX_REF_DEPTH):
        if not isinstance(node, Mapping):
            return {}
        ref = node.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return node
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        node = target
    return {}


def _properties(schema: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    props = resolve(schema, root).get("properties")
    if not isinstance(props, Mapping):
        return {}
    return {str(name): resolve(sub, root) for name, sub in props.items()}


def _axis_labels(prop: Mapping[str, Any], root: Mapping[str, Any]) -> tuple[str, ...] | None:
    inner = _properties(prop, root)
    label, confidence = inner.get("label"), inner.get("confidence")
    if label is None or confidence is None:
        return None
    enum = label.get("enum")
    if not isinstance(enum, list) or not enum or confidence.get("type") not in ("number", "integer"):
        return None
    return tuple(str(value) for value in enum)


Properties = tuple[tuple[str, Mapping[str, Any]], ...]


@dataclass(frozen=True)
class SchemaShape:
    """An output schema with refs resolved and axes found, computed once per distinct schema."""

    root: Mapping[str, Any]
    properties: Properties
    axes: tuple[Axis, ...]
    axis_properties: Mapping[str, Properties]


_SHAPES: dict[bytes, SchemaShape] = {}
_MAX_SHAPES = 256


def schema_shape(schema: Mapping[str, Any]) -> SchemaShape:
    """Memoised by the schema's JSON: every request repeats the same schema, and walking it dominated
    the per-request cost at thousands of requests a second."""
    key = orjson.dumps(schema)
    shape = _SHAPES.get(key)
    if shape is None:
        if len(_SHAPES) >= _MAX_SHAPES:
            _SHAPES.clear()
        shape = _SHAPES[key] = _analyse(schema)
    return shape


def _analyse(schema: Mapping[str, Any]) -> SchemaShape:
    properties = tuple(_properties(schema, schema).items())
    axes: list[Axis] = []
    axis_properties: dict[str, Properties] = {}
    for name, prop in properties:
        labels = _axis_labels(prop, schema)
        if labels is not None:
            axes.append(Axis(name, labels))
            axis_properties[name] = tuple(_properties(prop, schema).items())
    return SchemaShape(schema, properties, tuple(axes), axis_properties)


def find_axes(schema: Mapping[str, Any]) -> list[Axis]:
    """The classification axes of an output schema, in property order."""
    return list(schema_shape(schema).axes)


def choose_label(rule: LabelRule, axis: Axis, ticket: Ticket) -> str:
    """Applies one axis's script; rules without an answer for this ticket fall back to the hash."""
    if isinstance(rule, FixedLabel):
        return rule.label
    if isinstance(rule, TicketIdLabels):
        found = rule.labels.get(ticket.ticket_id) if ticket.ticket_id is not None else None
        return found or rule.default or hash_label(axis, ticket)
    if isinstance(rule, KeywordLabels):
        lowered = ticket.text.lower()
        for keyword in rule.rules:
            if keyword.contains.lower() in lowered:
                return keyword.label
        return rule.default or hash_label(axis, ticket)
    return hash_label(axis, ticket)


def hash_label(axis: Axis, ticket: Ticket) -> str:
    return axis.labels[stable_index(len(axis.labels), "label", axis.name, ticket.text)]


def choose_labels(script: ModelScript, axes: Sequence[Axis], ticket: Ticket) -> dict[str, str]:
    return {
        axis.name: choose_label(script.labels.get(axis.name, HashLabels()), axis, ticket) for axis in axes
    }


def choose_confidences(script: ModelScript, axes: Sequence[Axis], ticket: Ticket) -> dict[str, float]:
    """Scripted confidences, with one axis lowered on a stable fraction ``low_confidence_rate`` of tickets."""
    confidences = {axis.name: script.axis_confidence.get(axis.name, script.confidence) for axis in axes}
    if axes and stable_unit("low-confidence", ticket.text) < script.low_confidence_rate:
        names = [axis.name for axis in axes]
        target = script.low_confidence_axis
        if target not in confidences:
            target = names[stable_index(len(names), "low-confidence-axis", ticket.text)]
        confidences[target] = script.low_confidence_value
    return confidences


def _summary(ticket: Ticket) -> str:
    words = " ".join(ticket.text.split())
    return words[:160] or "Empty ticket."


def _reason(model: str, labels: Mapping[str, str]) -> str:
    chosen = ", ".join(f"{axis}={label}" for axis, label in labels.items())
    return f"Scripted by the fake API for {model}: {chosen}."


def filler(schema: Mapping[str, Any], root: Mapping[str, Any], seed: str) -> Any:
    """A schema-valid placeholder for properties that are not axes, so unknown shapes still validate."""
    node = resolve(schema, root)
    if "const" in node:
        return node["const"]
    enum = node.get("enum")
    if isinstance(enum, list) and enum:
        return enum[stable_index(len(enum), "enum", seed)]
    for key in ("anyOf", "oneOf", "allOf"):
        options = node.get(key)
        if isinstance(options, list) and options:
            return filler(options[0], root, seed)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((item for item in kind if item != "null"), "null")
    return _filler_for_type(kind, node, root, seed)


def _filler_for_type(kind: Any, node: Mapping[str, Any], root: Mapping[str, Any], seed: str) -> Any:
    if kind == "object" or (kind is None and "properties" in node):
        return {name: filler(sub, root, seed + "." + name) for name, sub in _properties(node, root).items()}
    simple: dict[str, Any] = {"string": "fake", "number": 0.5, "integer": 0, "boolean": False, "null": None}
    if kind == "array":
        return []
    return simple.get(str(kind), "fake")


def build_answer(
    schema: Mapping[str, Any], script: ModelScript, ticket: Ticket, model: str
) -> dict[str, Any]:
    """A well-formed answer: every schema property in order, axes from the script, text fields filled."""
    shape = schema_shape(schema)
    labels = choose_labels(script, shape.axes, ticket)
    confidences = choose_confidences(script, shape.axes, ticket)
    answer: dict[str, Any] = {}
    for name, prop in shape.properties:
        if name in labels:
            inner = shape.axis_properties[name]
            answer[name] = _axis_value(inner, schema, labels[name], confidences[name], ticket)
        elif name == "summary":
            answer[name] = _summary(ticket)
        elif name == "routing_reason":
            answer[name] = _reason(model, labels)
        else:
            answer[name] = filler(prop, schema, name + ticket.text)
    return answer


def _axis_value(
    properties: Properties, root: Mapping[str, Any], label: str, confidence: float, ticket: Ticket
) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for inner, sub in properties:
        if inner == "label":
            value[inner] = label
        elif inner == "confidence":
            value[inner] = confidence
        else:
            value[inner] = filler(sub, root, inner + ticket.text)
    return value


def malform(
    answer: dict[str, Any], schema: Mapping[str, Any], kind: MalformedKind, ticket: Ticket
) -> dict[str, Any] | str:
    """Breaks a good answer in exactly one way; ``not_json`` returns prose instead of an object."""
    if kind == "not_json":
        return NOT_JSON_TEXT
    broken = {key: dict(value) if isinstance(value, dict) else value for key, value in answer.items()}
    axes = find_axes(schema)
    if not axes:
        return _drop_first_required(broken, schema) if kind == "missing_field" else NOT_JSON_TEXT
    axis = axes[stable_index(len(axes), "malformed-axis", ticket.text)]
    if kind == "missing_field":
        del broken[axis.name]
    elif kind == "label_outside_enum":
        broken[axis.name]["label"] = _label_outside(axis)
    elif kind == "confidence_out_of_range":
        broken[axis.name]["confidence"] = OUT_OF_RANGE_CONFIDENCE
    else:
        broken[axis.name]["confidence"] = WRONG_TYPE_CONFIDENCE
    return broken


def _label_outside(axis: Axis) -> str:
    label = "not_a_" + axis.name
    while label in axis.labels:
        label += "_x"
    return label


def _drop_first_required(answer: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    required = schema.get("required")
    names = [name for name in required if name in answer] if isinstance(required, list) else list(answer)
    if names:
        del answer[names[0]]
    return answer


def answer_text(answer: dict[str, Any] | str) -> str:
    """What the model would have written: the JSON for an object, the prose otherwise."""
    return answer if isinstance(answer, str) else orjson.dumps(answer).decode()


@dataclass(frozen=True)
class Rendered:
    content: list[dict[str, Any]]
    stop_reason: str
    output_tokens: int


def cut_text(text: str, max_tokens: int, factor: float = 1.0) -> str:
    """The longest start of ``text`` whose estimate stays within ``max_tokens`` (rounds down, unlike
    ``chars_for_tokens``), so a cut answer never reports more tokens than the cap allowed."""
    return text[: int(max_tokens * CHARS_PER_TOKEN / factor)]


def render(
    answer: dict[str, Any] | str,
    tool_name: str | None,
    max_tokens: int,
    tool_use_id: str,
    factor: float = 1.0,
) -> Rendered:
    """Wraps an answer as the model would emit it, cut at ``max_tokens`` like a real generation.

    With a forced tool the answer is a ``tool_use`` block; prose (``not_json``) stays a text block,
    which is how a model ignoring the tool would look to the caller. ``factor`` is the model's
    tokenizer factor, so the same answer costs more output tokens on a 5.x model.
    """
    text = answer_text(answer)
    tokens = max(1, estimate_tokens(text, factor))
    truncated = tokens > max_tokens
    if tool_name is not None and isinstance(answer, dict):
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": tool_use_id,
            "name": tool_name,
            "input": {} if truncated else answer,
        }
        return Rendered([block], "max_tokens" if truncated else "tool_use", min(tokens, max_tokens))
    if truncated:
        text = cut_text(text, max_tokens, factor)
    return Rendered(
        [{"type": "text", "text": text}], "max_tokens" if truncated else "end_turn", min(tokens, max_tokens)
    )


# ``axis=label`` anywhere, or an ``axis: label`` line: how routed tickets and their reasons name labels.
_LABEL_PAIR = re.compile(
    r"\b([a-z][a-z0-9_]*)=[`'\"]?([A-Za-z0-9][\w.-]*)"
    r"|^[ \t>*-]*([a-z][a-z0-9_]*):[ \t]*[`'\"]?([A-Za-z0-9][\w.-]*)[`'\"]?[ \t]*$",
    re.MULTILINE,
)
_NOT_AXES = frozenset({"ticket_id", "event_id", "http", "https"})
MAX_ECHOED_LABELS = 8


def labels_in(text: str) -> list[tuple[str, str]]:
    """The ``axis=label`` pairs (and ``axis: label`` lines) a prompt names; an axis's first mention wins."""
    found: dict[str, str] = {}
    for match in _LABEL_PAIR.finditer(text):
        axis = match.group(1) or match.group(3)
        label = match.group(2) or match.group(4)
        if axis not in _NOT_AXES and axis not in found:
            found[axis] = label.rstrip(".")
    return list(found.items())[:MAX_ECHOED_LABELS]


_SUBJECT_LINE = re.compile(r"^subject:[ \t]*(.*)$", re.MULTILINE)


def draft_reply_text(prompt: str) -> str:
    """A reply-shaped draft for a ``ticket-router draft`` request: greeting, a body naming the ticket's
    subject, id and queue (so a test can tell which ticket a draft answers), a sign-off placeholder."""
    id_match = _TICKET_ID.search(prompt)
    subject_match = _SUBJECT_LINE.search(prompt)
    queue_match = re.search(r"to queue (\S+) with", prompt)
    subject = subject_match.group(1).strip() if subject_match else ""
    about = f' about "{subject}"' if subject else ""
    ticket = f" (ticket {id_match.group(1)})" if id_match else ""
    team = f" The {queue_match.group(1)} team is looking into it." if queue_match else ""
    return (
        f"Hello,\n\nThank you for writing to us{about}{ticket}.{team} "
        "Here is what we suggest in the meantime: [steps for the agent to confirm].\n\n"
        "Best regards,\n[agent name]"
    )


def free_text_answer(prompt: str) -> str:
    """The prose a model writes when asked for text: a draft reply when the prompt asks for one
    (``ticket-router draft``), else a short explanation echoing the prompt's labels.

    A pure function of the prompt, so a streamed and a non-streamed request get the same words, and a
    test of an explanation feature can predict them from the labels it put in the prompt.
    """
    if DRAFT_REQUEST in prompt:
        return draft_reply_text(prompt)
    pairs = labels_in(prompt)
    if not pairs:
        gist = " ".join(prompt.split())[:120] or "an empty request"
        return f"I found no labels to explain in the request. It reads: {gist}"
    named = ", ".join(f"{axis}={label}" for axis, label in pairs)
    axis, label = pairs[0]
    return (
        f"The ticket was routed with {named}. "
        f"Each label follows from the wording of the ticket and the routing rules. "
        f"The signal that would most likely have changed the decision is {axis}: "
        f"had it not been {label}, the ticket would have gone to a different queue."
    )
