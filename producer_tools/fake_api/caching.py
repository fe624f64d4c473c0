"""Prompt-cache accounting that follows the real API's rules closely enough to test cost logic.

The router's savings come from the cached system prompt, and its start-up check warns when that
prompt is below a model's minimum cacheable length. Both only mean something if the fake refuses to
cache short prefixes, expires entries after their TTL and refreshes them on hits, as the real API
does. This module is pure: the clock is passed in, so tests move time instead of sleeping.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from consumer.classify.tokens import estimate_tokens

TTL_SECONDS: dict[str, float] = {"5m": 300.0, "1h": 3600.0}
DEFAULT_TTL = "5m"
MAX_BREAKPOINTS = 4


class CacheControlError(ValueError):
    """A request the real API would reject with 400 because of its cache_control markers."""


@dataclass(frozen=True)
class Block:
    """One request block in prompt order, reduced to what caching and billing look at."""

    text: str
    canonical: bytes
    cache_control: Mapping[str, Any] | None


@dataclass(frozen=True)
class Breakpoint:
    """A cacheable prefix: everything up to and including a block marked with cache_control."""

    key: str
    tokens: int
    ttl_s: float


@dataclass(frozen=True)
class PromptLayout:
    breakpoints: tuple[Breakpoint, ...]
    total_tokens: int


@dataclass(frozen=True)
class CacheUsage:
    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0


def block_text(block: Mapping[str, Any]) -> str:
    """The part of a block that costs tokens; non-text blocks count as their JSON, which errs high."""
    text = block.get("text")
    if isinstance(text, str):
        return text
    rest = {key: value for key, value in block.items() if key != "cache_control"}
    return orjson.dumps(rest, option=orjson.OPT_SORT_KEYS).decode()


def _make_block(raw: Mapping[str, Any]) -> Block:
    rest = {key: value for key, value in raw.items() if key != "cache_control"}
    control = raw.get("cache_control")
    return Block(
        text=block_text(raw),
        canonical=orjson.dumps(rest, option=orjson.OPT_SORT_KEYS),
        cache_control=control if isinstance(control, Mapping) else None,
    )


def _message_blocks(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [block for block in content or [] if isinstance(block, Mapping)]


def prompt_blocks(
    system: Sequence[Mapping[str, Any]],
    messages: Sequence[Mapping[str, Any]],
    top_level_cache_control: Mapping[str, Any] | None = None,
) -> list[Block]:
    """System blocks then message blocks in order; a top-level marker lands on the very last block."""
    raw = list(system) + [block for message in messages for block in _message_blocks(message)]
    blocks = [_make_block(block) for block in raw]
    if top_level_cache_control is not None and blocks:
        last = blocks[-1]
        blocks[-1] = Block(last.text, last.canonical, top_level_cache_control)
    return blocks


def ttl_seconds(cache_control: Mapping[str, Any]) -> float:
    if cache_control.get("type") != "ephemeral":
        raise CacheControlError("cache_control.type: Input should be 'ephemeral'")
    ttl = cache_control.get("ttl", DEFAULT_TTL)
    if ttl not in TTL_SECONDS:
        raise CacheControlError(f"cache_control.ttl: Input should be '5m' or '1h', got {ttl!r}")
    return TTL_SECONDS[ttl]


def layout_prompt(
    model: str, blocks: Sequence[Block], uncached_texts: Sequence[str] = (), factor: float = 1.0
) -> PromptLayout:
    """Hashes each marked prefix (with the model, since caches are per model) and prices the request.

    ``uncached_texts`` (tool definitions, the output schema) add to the bill but not to any prefix,
    matching how the router estimates its own cached prompt. ``factor`` is the model's tokenizer
    factor: the same prompt is about 30% more tokens on a 5.x model, for the bill and the minimum.
    """
    marked = sum(1 for block in blocks if block.cache_control is not None)
    if marked > MAX_BREAKPOINTS:
        raise CacheControlError(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {marked}."
        )
    digest = hashlib.sha256(model.encode())
    texts: list[str] = []
    breakpoints: list[Breakpoint] = []
    for block in blocks:
        digest.update(len(block.canonical).to_bytes(8, "big") + block.canonical)
        texts.append(block.text)
        if block.cache_control is not None:
            tokens = estimate_tokens("".join(texts), factor)
            breakpoints.append(
                Breakpoint(digest.copy().hexdigest(), tokens, ttl_seconds(block.cache_control))
            )
    total = estimate_tokens("".join(texts) + "".join(uncached_texts), factor)
    return PromptLayout(tuple(breakpoints), total)


def _written_by_ttl(to_write: Sequence[Breakpoint], read: int) -> dict[float, int]:
    """Each written segment (between consecutive breakpoints) is billed at its own breakpoint's TTL."""
    by_ttl = dict.fromkeys(TTL_SECONDS.values(), 0)
    previous = read
    for bp in to_write:
        by_ttl[bp.ttl_s] += bp.tokens - previous
        previous = bp.tokens
    return by_ttl


class PromptCache:
    """Live cache entries (prefix key → expiry time). The only state; everything else is derived."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._expiry: dict[str, float] = {}
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._expiry)

    def clear(self) -> None:
        self._expiry.clear()

    def _alive(self, key: str, now: float) -> bool:
        expiry = self._expiry.get(key)
        return expiry is not None and expiry > now

    def charge(self, layout: PromptLayout, now: float, min_tokens: int) -> CacheUsage:
        """Reads the longest live prefix, writes the marked prefixes after it, and splits the bill.

        Prefixes shorter than ``min_tokens`` are ignored entirely, as the real API does, so a short
        prompt is billed in full as ``input_tokens`` on every request.
        """
        eligible = [bp for bp in layout.breakpoints if bp.tokens >= min_tokens]
        hits = [index for index, bp in enumerate(eligible) if self._alive(bp.key, now)]
        hit = hits[-1] if hits else None
        read = eligible[hit].tokens if hit is not None else 0
        to_write = eligible[hit + 1 :] if hit is not None else eligible
        for bp in ([eligible[hit]] if hit is not None else []) + to_write:
            self._expiry[bp.key] = now + bp.ttl_s
        self._evict_expired(now)
        by_ttl = _written_by_ttl(to_write, read)
        write = sum(by_ttl.values())
        five_minutes, one_hour = by_ttl[TTL_SECONDS["5m"]], by_ttl[TTL_SECONDS["1h"]]
        return CacheUsage(layout.total_tokens - read - write, write, read, five_minutes, one_hour)

    def _evict_expired(self, now: float) -> None:
        if len(self._expiry) > self._max_entries:
            self._expiry = {key: expiry for key, expiry in self._expiry.items() if expiry > now}
