"""orjson encoding and decoding of wire models.

Decoding is split in two steps (bytes → JSON, JSON → model) because the router must tell a
``malformed_json`` record from a ``schema_invalid`` one when it sends them to triage.
"""

from __future__ import annotations

import base64
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class DecodeError(ValueError):
    """The bytes are not a JSON document."""


def encode(model: BaseModel) -> bytes:
    return orjson.dumps(model.model_dump(mode="json"))


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from exc


def decode(model: type[M], raw: bytes) -> M:
    """Bytes → model; raises DecodeError or pydantic.ValidationError."""
    return model.model_validate(parse_json(raw))


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """A one-line summary naming the offending fields, for triage records and logs."""
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def bytes_for_record(raw: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    """Raw record bytes as (text, encoding) suitable for a JSON field, lossless either way."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def bytes_from_record(text: str, encoding: str) -> bytes:
    return base64.b64decode(text) if encoding == "base64" else text.encode("utf-8")
