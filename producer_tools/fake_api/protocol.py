"""The wire format of the Messages API: request checks and the JSON the real API sends back.

Kept free of aiohttp so the exact error shapes, status codes and headers the SDK maps to exceptions
can be read (and unit-tested) in one place. The checks are deliberately stricter than the real API
where the router's contract is narrower (``system`` must be a list of text blocks, an output schema
or forced tool is required): a router that passes here fails loudly rather than silently there.
Today's per-model and per-version rules (sampling, thinking, effort, prefill, forced tools,
retirement) live in ``contract``; this module runs them in the order the real API reports problems.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import orjson

from consumer.classify.models import facts_for, tokenizer_factor
from producer_tools.fake_api.caching import CacheUsage
from producer_tools.fake_api.contract import (
    LATEST_API_VERSION,
    check_model_rules,
    check_not_retired,
    read_setting,
)
from producer_tools.fake_api.errors import ApiError, invalid, model_not_found
from producer_tools.fake_api.outcome import Reply
from producer_tools.fake_api.scenario import FaultKind, ModelScript, Scenario
from producer_tools.fake_api.thinking import ThinkingPlan, plan_thinking

OutputMode = Literal["json_schema", "tool", "text"]


@dataclass(frozen=True)
class OutputSpec:
    """Where the answer goes: a JSON text block, the input of a forced tool call, or free prose."""

    mode: OutputMode
    schema: Mapping[str, Any]
    tool_name: str | None = None


@dataclass(frozen=True)
class MessagesRequest:
    model: str
    model_name: str
    script: ModelScript
    max_tokens: int
    system: list[Mapping[str, Any]]
    messages: list[Mapping[str, Any]]
    cache_control: Mapping[str, Any] | None
    output: OutputSpec | None
    uncached_texts: tuple[str, ...]
    token_factor: float
    thinking: ThinkingPlan
    stream: bool = False


def new_request_id() -> str:
    return "req_fake_" + uuid.uuid4().hex[:24]


def new_message_id() -> str:
    return "msg_fake_" + uuid.uuid4().hex[:24]


def parse_json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise invalid("Request body must be a JSON object.")
    return body


def check_auth(headers: Mapping[str, str], expected_key: str | None) -> None:
    """Accepts ``x-api-key`` or ``Authorization: Bearer`` (the 2.x SDK sends its api_key as the latter).

    When both are sent the API uses ``x-api-key``, so a wrong x-api-key fails even beside a good bearer.
    """
    key = headers.get("x-api-key") or _bearer(headers.get("authorization", ""))
    if not key:
        raise ApiError("authentication_error", "x-api-key header is required")
    if expected_key is not None and key != expected_key:
        raise ApiError("authentication_error", "invalid x-api-key")


def _bearer(value: str) -> str:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def parse_messages_request(
    body: Mapping[str, Any],
    scenario: Scenario,
    *,
    count_only: bool,
    today: date,
    version: str = LATEST_API_VERSION,
) -> MessagesRequest:
    """Validates a create (or count_tokens) body in the order the real API reports problems.

    The schema first (fields, then the contract's model-independent checks), then the model (retired
    or unknown is a 404), then what that model accepts, and last the fake's own output contract.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: Field required")
    max_tokens = 0 if count_only else _max_tokens(body.get("max_tokens"))
    system = _system_blocks(body.get("system"))
    messages = _messages(body.get("messages"))
    cache_control = _top_level_cache_control(body.get("cache_control"))
    stream = False if count_only else _stream_flag(body.get("stream"))
    setting = read_setting(body, version)
    facts = facts_for(model)
    check_not_retired(model, facts, today)
    name = scenario.resolve_model(model)
    if name is None:
        raise model_not_found(model)
    check_model_rules(body, messages, setting, facts, version, None if count_only else max_tokens)
    return MessagesRequest(
        model=model,
        model_name=name,
        script=scenario.models[name],
        max_tokens=max_tokens,
        system=system,
        messages=messages,
        cache_control=cache_control,
        output=None if count_only else _output_spec(body),
        uncached_texts=_uncached_texts(body),
        token_factor=tokenizer_factor(model),
        thinking=plan_thinking(setting, facts),
        stream=stream,
    )


def _stream_flag(value: Any) -> bool:
    """``stream`` is a strict boolean in the API schema: ``"true"`` or ``1`` is a 400, not a stream."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid("stream: Input should be a valid boolean")
    return value


def _max_tokens(value: Any) -> int:
    if value is None:
        raise invalid("max_tokens: Field required")
    # 0 is a cache pre-warm: the prompt is cached (or read) and nothing is generated.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(f"max_tokens: must be a non-negative integer, got {value!r}")
    return value


def _system_blocks(value: Any) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("system: the router contract requires a list of text blocks")
    for index, block in enumerate(value):
        if (
            not isinstance(block, dict)
            or block.get("type") != "text"
            or not isinstance(block.get("text"), str)
        ):
            raise invalid(f"system.{index}: Input should be a text block with a string 'text'")
    return value


def _messages(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not value:
        raise invalid("messages: at least one message is required")
    for index, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise invalid(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if not isinstance(content, str) and not _is_block_list(content):
            raise invalid(f"messages.{index}.content: Input should be a string or a list of content blocks")
    if value[0].get("role") != "user":
        raise invalid("messages: first message must use the 'user' role")
    return value


def _is_block_list(content: Any) -> bool:
    return isinstance(content, list) and all(isinstance(b, dict) and "type" in b for b in content)


def _top_level_cache_control(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid("cache_control: Input should be an object")
    return value


def _output_spec(body: Mapping[str, Any]) -> OutputSpec:
    """A forced tool wins over output_config, as a forced tool call is what the model would emit.

    Without either the model writes prose (``text``), even beside tools it may but need not call;
    ``tool_choice`` ``any`` (some tool, the fake cannot pick which) stays outside the fake's contract.
    """
    forced = _forced_tool(body)
    if forced is not None:
        return forced
    output_config = body.get("output_config")
    fmt = output_config.get("format") if isinstance(output_config, dict) else None
    if isinstance(fmt, dict):
        schema = fmt.get("schema")
        if fmt.get("type") != "json_schema" or not isinstance(schema, dict):
            raise invalid("output_config.format: expected {'type': 'json_schema', 'schema': {...}}")
        return OutputSpec("json_schema", schema)
    if fmt is None and _tool_choice_type(body) != "any":
        return OutputSpec("text", {})
    raise invalid(
        "The fake API answers text, output_config.format (json_schema) "
        "or tools plus tool_choice {'type': 'tool', 'name': ...}; not tool_choice 'any'."
    )


def _tool_choice_type(body: Mapping[str, Any]) -> Any:
    choice = body.get("tool_choice")
    return choice.get("type") if isinstance(choice, dict) else None


def _forced_tool(body: Mapping[str, Any]) -> OutputSpec | None:
    choice = body.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") != "tool":
        return None
    name = choice.get("name")
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and tool.get("name") == name:
            schema = tool.get("input_schema")
            if not isinstance(schema, dict):
                raise invalid(f"tools: tool {name!r} has no input_schema object")
            return OutputSpec("tool", schema, str(name))
    raise invalid(f"tool_choice: tool {name!r} is not among the provided tools")


def _uncached_texts(body: Mapping[str, Any]) -> tuple[str, ...]:
    """Tool definitions and the output schema cost input tokens but sit outside the cached prefix."""
    texts: list[str] = []
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        texts.append(orjson.dumps(tools).decode())
    output_config = body.get("output_config")
    if isinstance(output_config, dict) and output_config.get("format") is not None:
        texts.append(orjson.dumps(output_config["format"]).decode())
    return tuple(texts)


def fault_error(kind: FaultKind, script: ModelScript, now: datetime) -> ApiError:
    """The error for an injected fault; ``drop`` and ``timeout`` are handled at the connection level."""
    if kind == "429":
        return ApiError(
            "rate_limit_error",
            "This request would exceed your organization's rate limit of 50 requests per minute. "
            "For details, refer to: https://docs.claude.com/en/api/rate-limits.",
            headers=rate_limit_headers(script.retry_after_s, now),
        )
    if kind == "spend_limit":
        return ApiError(
            "rate_limit_error",
            "You have reached your specified workspace API usage limits. "
            f"You will regain access on {(now + timedelta(days=1)).date().isoformat()} at 00:00 UTC.",
            headers={"x-should-retry": "false"},
            details={"error_code": "enforced_spend_limit_reached"},
        )
    if kind in ("529", "529_mid_stream"):
        return overloaded()
    if kind == "500":
        return ApiError("api_error", "Internal server error")
    raise ValueError(f"{kind} is not answered with an error body")


def overloaded() -> ApiError:
    """The 529 body; inside a stream the same error arrives as an ``error`` event of a 200 reply."""
    return ApiError("overloaded_error", "Overloaded")


def rate_limit_headers(retry_after_s: int, now: datetime) -> dict[str, str]:
    """The headers a 429 carries; the SDK and the router read ``retry-after`` (whole seconds)."""
    reset = (now + timedelta(seconds=retry_after_s)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = {"retry-after": str(retry_after_s)}
    limits = (("requests", 50), ("tokens", 40_000), ("input-tokens", 30_000), ("output-tokens", 8_000))
    for kind, limit in limits:
        headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
        headers[f"anthropic-ratelimit-{kind}-remaining"] = "0"
        headers[f"anthropic-ratelimit-{kind}-reset"] = reset
    return headers


def message_body(model: str, reply: Reply, usage: CacheUsage) -> dict[str, Any]:
    """The message JSON; ``output_tokens_details`` is on every reply (thinking 0 when it did not think)."""
    return {
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": list(reply.content),
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "stop_details": reply.stop_details,
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": reply.output_tokens,
            "output_tokens_details": {"thinking_tokens": reply.thinking_tokens},
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": usage.ephemeral_5m_input_tokens,
                "ephemeral_1h_input_tokens": usage.ephemeral_1h_input_tokens,
            },
        },
    }
