"""The error bodies of the Messages API, shared by the request checks and the fault injector.

Its own module so that every pure checker (``protocol``, ``contract``) can raise the same
exception without importing one another: the server turns any ``ApiError`` into the JSON and status
code the SDK maps to its exception classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class ApiError(Exception):
    """An error the real API would answer with ``{"type": "error", "error": {...}}``."""

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = ERROR_STATUS[error_type]
        self.headers = dict(headers or {})
        self.details = dict(details) if details is not None else None

    def body(self, request_id: str | None) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"type": "error", "error": error, "request_id": request_id}


def invalid(message: str) -> ApiError:
    """A 400 ``invalid_request_error``: the most common answer to a request the API will not take."""
    return ApiError("invalid_request_error", message)


def model_not_found(model: str) -> ApiError:
    """The 404 for an unknown or retired model; the message echoes the id exactly as sent."""
    return ApiError("not_found_error", f"model: {model}")
