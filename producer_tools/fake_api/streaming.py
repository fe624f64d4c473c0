"""A finished message re-told as the server-sent events the Messages API streams with ``"stream": true``.

The events are cut from the very message body the non-streaming path returns, so a streamed request
and an unstreamed one can never disagree about the text, the tool input, the stop reason or the
usage. Pure: the server writes the frames and decides when to pause between them.

The sequence is the real one: ``message_start`` (the message with empty content, ``stop_reason``
null), a ``ping``, then per content block ``content_block_start``, its deltas (``text_delta``,
``input_json_delta``, ``thinking_delta`` then ``signature_delta``) and ``content_block_stop``, then
``message_delta`` (stop reason, cumulative usage) and ``message_stop``. A mid-stream failure is an
``error`` event after part of the content, after which the stream simply ends.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

# The real API sends one of these on every stream; clients must accept it anywhere.
EVENT_STREAM_HEADERS: dict[str, str] = {"cache-control": "no-cache"}
EVENT_STREAM_CONTENT_TYPE = "text/event-stream"
# Small enough that a short answer still arrives as several deltas, as a real generation does.
CHUNK_CHARS = 24
# How many content deltas a mid-stream error lets through first: the caller has seen text, not all of it.
DELTAS_BEFORE_ERROR = 2


@dataclass(frozen=True)
class Event:
    """One server-sent event: its ``event:`` name and its JSON ``data`` (whose ``type`` is the name)."""

    name: str
    data: Mapping[str, Any]

    @property
    def is_delta(self) -> bool:
        return self.name == "content_block_delta"


def sse_frame(event: Event) -> bytes:
    """The bytes of one event on the wire: the name line, the data line and a blank line."""
    return b"event: " + event.name.encode() + b"\ndata: " + orjson.dumps(event.data) + b"\n\n"


def chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """``text`` in pieces of at most ``size`` characters; at least one, so an empty text still has a delta."""
    return [text[start : start + size] for start in range(0, len(text), size)] or [""]


def message_events(message: Mapping[str, Any], chunk_chars: int = CHUNK_CHARS) -> list[Event]:
    """Every event of a successful stream for ``message`` (a body as ``protocol.message_body`` builds it)."""
    usage = message["usage"]
    opening = dict(message, content=[], stop_reason=None, stop_sequence=None, stop_details=None)
    opening["usage"] = dict(usage, output_tokens=min(1, usage["output_tokens"]))
    events = [Event("message_start", {"type": "message_start", "message": opening})]
    events.append(Event("ping", {"type": "ping"}))
    for index, block in enumerate(message["content"]):
        events.extend(block_events(index, block, chunk_chars))
    delta = {
        "stop_reason": message["stop_reason"],
        "stop_sequence": message["stop_sequence"],
        "stop_details": message.get("stop_details"),
    }
    events.append(Event("message_delta", {"type": "message_delta", "delta": delta, "usage": dict(usage)}))
    events.append(Event("message_stop", {"type": "message_stop"}))
    return events


def block_events(index: int, block: Mapping[str, Any], chunk_chars: int = CHUNK_CHARS) -> list[Event]:
    """``content_block_start`` with the block emptied, the deltas that refill it, ``content_block_stop``."""
    start, deltas = _emptied(block), list(_deltas(block, chunk_chars))
    events = [
        Event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
    ]
    events += [
        Event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        for delta in deltas
    ]
    events.append(Event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def _emptied(block: Mapping[str, Any]) -> dict[str, Any]:
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": ""}
    if kind == "tool_use":
        return {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
    if kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    raise ValueError(f"the fake does not stream {kind!r} blocks")


def _deltas(block: Mapping[str, Any], chunk_chars: int) -> Iterator[dict[str, Any]]:
    kind = block["type"]
    if kind == "text":
        for piece in chunks(block["text"], chunk_chars):
            yield {"type": "text_delta", "text": piece}
    elif kind == "tool_use":
        # An empty input (a call cut off at max_tokens) streams no JSON at all, as the real API does.
        serialized = orjson.dumps(block["input"]).decode() if block["input"] else ""
        for piece in chunks(serialized, chunk_chars) if serialized else []:
            yield {"type": "input_json_delta", "partial_json": piece}
    else:
        for piece in chunks(block["thinking"], chunk_chars):
            yield {"type": "thinking_delta", "thinking": piece}
        yield {"type": "signature_delta", "signature": block["signature"]}


def error_event(error_body: Mapping[str, Any]) -> Event:
    """The in-stream error: the same ``{"type": "error", "error": {...}}`` body a failed request returns."""
    return Event("error", dict(error_body))


def broken_off(events: list[Event], error: Event, deltas_before: int = DELTAS_BEFORE_ERROR) -> list[Event]:
    """The stream cut after ``deltas_before`` content deltas, then ``error``: text started, never finished."""
    kept: list[Event] = []
    seen = 0
    for event in events:
        if event.is_delta:
            if seen == deltas_before:
                break
            seen += 1
        if event.name == "message_delta":
            break
        kept.append(event)
    return [*kept, error]
