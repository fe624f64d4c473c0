"""``GET /v1/openapi.json``: the API described from what is served. Pure: plain data in, a dict out.

The document is built from the routes the app actually registered (each with the kind of operation
it serves), so a route cannot be served undocumented or documented unserved; the request and
answer schemas are the pydantic models' own JSON schemas, the ones the handlers validate with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from consumer.api.classify import ClassifyAnswer
from schemas.events import TicketEvent

OPENAPI_ROUTE = "/v1/openapi.json"
OperationKind = Literal["tickets", "zendesk", "intercom", "mapped", "classify", "explain", "openapi"]
COMPONENT_REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Operation:
    method: Literal["get", "post"]
    path: str
    kind: OperationKind


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_batch: int


def _ref(name: str) -> dict[str, str]:
    return {"$ref": COMPONENT_REF.format(model=name)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref("Error"))}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "Invalid body or query: `field` is the JSON path (or query parameter) at fault",
        401: "Missing or invalid credentials (a forged, stale or replayed signature, an unknown token)",
        404: "Nothing there (the event or record to explain; an unknown route)",
        413: "Body larger than API_MAX_BODY_BYTES",
        415: "Content-Type is not application/json",
        422: "The record at that position holds no routing decision",
        429: "The client's rate limit (API_RATE_PER_S, API_RATE_BURST) is reached: see Retry-After",
        502: "The Messages API refused the request",
        503: "The broker did not acknowledge, or the replica is busy or has no model: see Retry-After",
    }
    return {str(status): _error(texts[status]) for status in statuses}


def _components(limits: Limits) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (TicketEvent, ClassifyAnswer):
        schema = model.model_json_schema(ref_template=COMPONENT_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["TicketBatch"] = {
        "type": "object",
        "required": ["tickets"],
        "properties": {
            "tickets": {
                "type": "array",
                "items": _ref("TicketEvent"),
                "minItems": 1,
                "maxItems": limits.max_batch,
            }
        },
    }
    schemas["Accepted"] = {
        "type": "object",
        "required": ["accepted"],
        "properties": {
            "accepted": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Event ids on the topic",
            },
            "skipped": {"type": "string", "description": "Why a webhook carried nothing to route"},
        },
    }
    schemas["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "field": {"type": ["string", "null"], "description": "JSON path or query parameter at fault"},
            "index": {"type": ["integer", "null"], "description": "The event's place in a batch"},
        },
    }
    return {
        "schemas": schemas,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "A token of API_TOKENS"},
            "signature": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Signature",
                "description": "sha256=<hex HMAC-SHA256 of '<X-Timestamp>.' + raw body> with the X-Client's "
                "secret of API_HMAC_SECRETS; X-Timestamp (Unix seconds) within 300 s; a signature is "
                "accepted once",
            },
            "zendesk": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Zendesk-Webhook-Signature",
                "description": "Zendesk's own webhook signature (API_ZENDESK_SECRETS), Zendesk route only",
            },
            "intercom": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Hub-Signature",
                "description": "Intercom's own webhook signature (API_INTERCOM_SECRETS), Intercom route only",
            },
        },
    }


def _accepting(summary: str, description: str, body: dict[str, Any], security: list[str]) -> dict[str, Any]:
    return {
        "summary": summary,
        "description": description,
        "requestBody": {"required": True, "content": _json(body)},
        "responses": {
            "202": {
                "description": "On the input topic (acks=all) before this answer",
                "content": _json(_ref("Accepted")),
            },
            **_errors(400, 401, 413, 415, 429, 503),
        },
        "security": [{name: []} for name in security],
    }


def _operation(op: Operation, limits: Limits) -> dict[str, Any]:
    common = ["bearer", "signature"]
    any_object = {"type": "object"}
    if op.kind == "tickets":
        return _accepting(
            "Ingest one TicketEvent or a batch",
            f"Validated, then produced to the input topic; at most {limits.max_batch} events and "
            f"{limits.max_body_bytes} bytes. A repeated event_id is answered without a second record.",
            {"oneOf": [_ref("TicketEvent"), _ref("TicketBatch")]},
            common,
        )
    if op.kind == "zendesk":
        return _accepting(
            "Zendesk webhook",
            'The body template {"ticket": {...}} of the README, turned into a TicketEvent.',
            any_object,
            [*common, "zendesk"],
        )
    if op.kind == "intercom":
        return _accepting(
            "Intercom webhook",
            "conversation.user.created and conversation.user.replied notifications; other topics are "
            "answered 202 with `skipped`.",
            any_object,
            [*common, "intercom"],
        )
    if op.kind == "mapped":
        return _accepting(
            f"Webhook mapped by API_WEBHOOK_MAPPINGS ({op.path.rsplit('/', 1)[-1]})",
            "Any JSON payload, turned into a TicketEvent by the named mapping.",
            any_object,
            common,
        )
    if op.kind == "classify":
        return {
            "summary": "Classify and route a ticket without publishing it",
            "description": "The live pipeline and routing rules; nothing is produced or remembered.",
            "requestBody": {"required": True, "content": _json(_ref("TicketEvent"))},
            "responses": {
                "200": {"description": "What would be routed", "content": _json(_ref("ClassifyAnswer"))},
                **_errors(400, 401, 413, 415, 429, 503),
            },
            "security": [{name: []} for name in common],
        }
    if op.kind == "explain":
        return _explain_operation(common)
    return {
        "summary": "This document",
        "responses": {
            "200": {"description": "OpenAPI 3.1", "content": _json(any_object)},
            **_errors(401, 429),
        },
        "security": [{name: []} for name in common],
    }


def _explain_operation(security: list[str]) -> dict[str, Any]:
    def query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}

    return {
        "summary": "Stream why a ticket was routed where it was",
        "description": "Server-sent events: `decision` (labels, confidences, thresholds, rule, "
        "alternatives), `text` ({text} pieces as the strong model writes them), then `done` (usage, "
        "cost_usd) or `error`. Name the ticket by event_id (this replica's recent decisions) or by "
        "topic, partition and offset of its routed record (queue and triage topics only).",
        "parameters": [
            query("event_id", "The ticket event's event_id", {"type": "string", "maxLength": 256}),
            query("topic", "A queue topic or the triage topic", {"type": "string"}),
            query("partition", "With topic and offset", {"type": "integer", "minimum": 0}),
            query("offset", "With topic and partition", {"type": "integer", "minimum": 0}),
        ],
        "responses": {
            "200": {
                "description": "The explanation stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_errors(400, 401, 404, 422, 429, 502, 503),
        },
        "security": [{name: []} for name in security],
    }


def openapi_document(operations: Sequence[Operation], version: str, limits: Limits) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = _operation(op, limits)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ticket-router API",
            "version": version,
            "description": "Ingestion, dry-run classification and explanations of routing decisions. "
            "Every route needs credentials; bodies are limited in size and clients in rate.",
        },
        "paths": paths,
        "components": _components(limits),
    }
