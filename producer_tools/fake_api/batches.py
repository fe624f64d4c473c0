"""The Message Batches API's wire format and life cycle, kept free of aiohttp and of answering.

A batch is created with ``{"requests": [{"custom_id", "params"}, ...]}``; the body as a whole is
checked at once (its shape, the ``custom_id`` pattern and uniqueness, the 100,000-request and
256 MB limits: a 400 or a 413 of the whole batch), while each request's ``params`` are checked
only when it is processed, as the real API does, so one bad request is one ``errored`` result and
the rest of the batch still runs. Results are revealed when the batch ends: after the scenario's
processing delay, on a cancel (every request not yet ended is ``canceled``), or at expiry (every
one ``expired``). Until then ``request_counts`` shows them all as ``processing``.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from producer_tools.fake_api.errors import ApiError, invalid
from producer_tools.fake_api.scenario import BatchScript

ResultType = Literal["succeeded", "errored", "canceled", "expired"]
RESULT_TYPES: tuple[ResultType, ...] = ("succeeded", "errored", "canceled", "expired")
CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_CUSTOM_ID = re.compile(CUSTOM_ID_PATTERN)
CUSTOM_ID_MAX = 64
DEFAULT_PAGE = 20
MAX_PAGE = 1000


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str
    params: Mapping[str, Any]


@dataclass
class FakeBatch:
    """One batch's state; ``results`` fill in as requests are processed, ``ended_at`` ends it."""

    id: str
    created_at: datetime
    created_clock: float
    requests: Sequence[BatchRequest]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancel_initiated_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def processed(self) -> bool:
        return len(self.results) == len(self.requests)

    @property
    def status(self) -> str:
        if self.ended_at is not None:
            return "ended"
        return "canceling" if self.cancel_initiated_at is not None else "in_progress"


def new_batch_id() -> str:
    return "msgbatch_fake_" + uuid.uuid4().hex[:24]


def too_large(size: int, limit: int) -> ApiError:
    return ApiError("request_too_large", f"Request exceeds the maximum size of {limit} bytes (got {size}).")


def parse_batch_requests(body: Mapping[str, Any], script: BatchScript) -> list[BatchRequest]:
    """The requests of a create body, or the 400 the whole batch gets (messages as pydantic words them)."""
    requests = body.get("requests")
    if requests is None:
        raise invalid("requests: Field required")
    if not isinstance(requests, list):
        raise invalid("requests: Input should be a valid list")
    if not requests:
        raise invalid("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > script.max_requests:
        raise invalid(
            f"requests: List should have at most {script.max_requests} items after validation, "
            f"not {len(requests)}"
        )
    parsed = [_batch_request(index, item) for index, item in enumerate(requests)]
    seen: set[str] = set()
    for item in parsed:
        if item.custom_id in seen:
            raise invalid(
                f"Duplicate custom_id {item.custom_id!r}: each custom_id must be unique in a batch."
            )
        seen.add(item.custom_id)
    return parsed


def _batch_request(index: int, item: Any) -> BatchRequest:
    where = f"requests.{index}"
    if not isinstance(item, Mapping):
        raise invalid(f"{where}: Input should be a valid dictionary")
    custom_id, params = item.get("custom_id"), item.get("params")
    if not isinstance(custom_id, str):
        raise invalid(f"{where}.custom_id: Field required")
    if len(custom_id) > CUSTOM_ID_MAX:
        raise invalid(f"{where}.custom_id: String should have at most {CUSTOM_ID_MAX} characters")
    if not _CUSTOM_ID.match(custom_id):
        raise invalid(f"{where}.custom_id: String should match pattern '{CUSTOM_ID_PATTERN}'")
    if not isinstance(params, Mapping):
        raise invalid(f"{where}.params: Field required")
    return BatchRequest(custom_id, params)


def batch_only_problem(params: Mapping[str, Any]) -> ApiError | None:
    """What a batch refuses that ``/v1/messages`` takes: streaming, and a ``max_tokens`` 0 pre-warm
    (a cache entry written inside a batch would expire before a follow-up request ran)."""
    if params.get("stream") is True:
        return invalid("stream: Streaming is not supported in Message Batches requests.")
    if params.get("max_tokens") == 0:
        return invalid("max_tokens: Input should be greater than or equal to 1 in Message Batches requests.")
    return None


def errored(error: ApiError, request_id: str) -> dict[str, Any]:
    """An ``errored`` result: the error response the same request would have got on its own."""
    return {"type": "errored", "error": error.body(request_id)}


def unprocessed(kind: Literal["canceled", "expired"]) -> dict[str, Any]:
    return {"type": kind}


def scripted_failure(script: BatchScript, rng: random.Random) -> dict[str, Any] | None:
    """The batch's own dice for one valid request: an ``api_error``, an expiry, or None to answer."""
    roll = rng.random()
    if roll < script.error_rate:
        return {"type": "errored", "error": ApiError("api_error", "Internal server error").body(None)}
    if roll < script.error_rate + script.expire_rate:
        return unprocessed("expired")
    return None


def settle(batch: FakeBatch, script: BatchScript, now_clock: float, now: datetime) -> None:
    """Ends the batch if its time has come: a cancel, expiry, or processing done and delay passed."""
    if batch.ended_at is not None:
        return
    age = now_clock - batch.created_clock
    if batch.cancel_initiated_at is not None:
        _end(batch, "canceled", now)
    elif age >= script.expires_after_s:
        _end(batch, "expired", now)
    elif batch.processed and age >= script.processing_delay_s:
        batch.ended_at = now


def _end(batch: FakeBatch, kind: Literal["canceled", "expired"], now: datetime) -> None:
    """Every request without a revealed result gets ``kind`` (none is revealed before the end)."""
    batch.results = {request.custom_id: unprocessed(kind) for request in batch.requests}
    batch.ended_at = now


def request_counts(batch: FakeBatch) -> dict[str, int]:
    """All ``processing`` until the batch ends, then the tally by result type (sums to the total)."""
    counts = dict.fromkeys(("processing", *RESULT_TYPES), 0)
    if batch.ended_at is None:
        counts["processing"] = len(batch.requests)
        return counts
    for result in batch.results.values():
        counts[result["type"]] += 1
    return counts


def _rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def batch_object(batch: FakeBatch, results_url: str, expires_after_s: float) -> dict[str, Any]:
    """The ``message_batch`` JSON; ``results_url`` is set only once the batch has ended."""
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": batch.status,
        "request_counts": request_counts(batch),
        "ended_at": _rfc3339(batch.ended_at),
        "created_at": _rfc3339(batch.created_at),
        "expires_at": _rfc3339(batch.created_at + timedelta(seconds=expires_after_s)),
        "archived_at": None,
        "cancel_initiated_at": _rfc3339(batch.cancel_initiated_at),
        "results_url": results_url if batch.ended_at is not None else None,
    }


def page_of(
    ids_newest_first: Sequence[str], limit: int, after_id: str | None, before_id: str | None
) -> tuple[list[str], bool]:
    """One page of a list (newest first): the ids after ``after_id`` or before ``before_id``, and
    whether more remain in that direction."""
    ids = list(ids_newest_first)
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else len(ids)
        chosen = ids[start : start + limit]
        return chosen, start + limit < len(ids)
    if before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
        start = max(0, end - limit)
        return ids[start:end], start > 0
    return ids[:limit], limit < len(ids)


def page_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    try:
        value = int(raw)
    except ValueError:
        raise invalid("limit: Input should be a valid integer") from None
    if not 1 <= value <= MAX_PAGE:
        raise invalid(f"limit: Input should be between 1 and {MAX_PAGE}")
    return value


def result_lines(batch: FakeBatch, rng: random.Random) -> list[dict[str, Any]]:
    """The results file's lines, shuffled: the real file is not in request order either."""
    lines = [
        {"custom_id": request.custom_id, "result": batch.results[request.custom_id]}
        for request in batch.requests
    ]
    rng.shuffle(lines)
    return lines
