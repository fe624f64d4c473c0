"""Who is calling the ingestion API: bearer tokens or HMAC-signed requests. Pure, for tests.

Every function here takes the clock as an argument and does no I/O, so forged, stale and replayed
requests are tested without a server. A refusal is an ``Unauthorized`` whose message is one line
for the caller; it never repeats a token, a secret or a signature, because error bodies end up
in help-desk logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from pydantic import SecretStr

MAX_CLOCK_SKEW_S = 300
"""A signed request's X-Timestamp may be this far from the server's clock, either way."""
MIN_CREDENTIAL_CHARS = 16
SIGNATURE_PREFIX = "sha256="
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_CLIENT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Unauthorized(Exception):
    """The request is not authenticated; ``str()`` is the one-line reason shown to the caller."""


def parse_credentials(text: str, kind: str) -> dict[str, str]:
    """``client:credential`` pairs, comma-separated, as a mapping; ``kind`` names the second part
    in messages ("token", "secret"). Raises ValueError without ever quoting a credential.

    Client names become rate-limit keys and log fields, so they are short and plain;
    credentials are long enough not to be guessed (at least 16 characters).
    """
    pairs: dict[str, str] = {}
    for position, entry in enumerate((part.strip() for part in text.split(",")), start=1):
        if not entry:
            continue
        client, colon, credential = entry.partition(":")
        client, credential = client.strip(), credential.strip()
        if not colon or not _CLIENT_NAME.fullmatch(client):
            raise ValueError(
                f"entry {position} is not client:{kind} (client: 1-64 of letters, digits, '_', '.', '-')"
            )
        if len(credential) < MIN_CREDENTIAL_CHARS:
            raise ValueError(
                f"the {kind} of client {client!r} is shorter than {MIN_CREDENTIAL_CHARS} characters"
            )
        if client in pairs:
            raise ValueError(f"client {client!r} is listed twice")
        pairs[client] = credential
    return pairs


def bearer_client(authorization: str, tokens: Mapping[str, SecretStr]) -> str:
    """The client whose token ``Authorization: Bearer <token>`` carries.

    Every configured token is compared, in constant time each, so the answer's timing tells
    neither which client nor how much of a token matched.
    """
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    given = token.strip().encode()
    found: str | None = None
    for client, expected in tokens.items():
        if hmac.compare_digest(given, expected.get_secret_value().encode()):
            found = client
    if found is None:
        raise Unauthorized("unknown bearer token")
    return found


def signature_key(signature: str | None) -> str:
    """A signature header as SeenSignatures remembers it (so the Gate can ``forget`` it)."""
    return (signature or "").strip().lower()


def signature_of(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, "<timestamp>." + raw body): what a client sends."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


@dataclass
class SeenSignatures:
    """Valid signatures of the last ``MAX_CLOCK_SKEW_S`` seconds, to refuse a replayed request.

    A signature is kept until its timestamp leaves the allowed window; after that the timestamp
    check refuses it anyway, so memory is bounded by what the rate limits let in per window.
    """

    window_s: float = MAX_CLOCK_SKEW_S
    _expiry: dict[str, float] = field(default_factory=dict)
    _queue: list[tuple[float, str]] = field(default_factory=list)

    def forget_expired(self, now: float) -> None:
        """Drop signatures whose timestamp has left the window (they are refused as stale anyway)."""
        while self._queue and self._queue[0][0] < now:
            _, signature = heapq.heappop(self._queue)
            self._expiry.pop(signature, None)

    def seen_before(self, signature: str, timestamp: float, now: float) -> bool:
        """True when ``signature`` was already used; remembers it either way."""
        self.forget_expired(now)
        if signature in self._expiry:
            return True
        expires = timestamp + self.window_s
        self._expiry[signature] = expires
        heapq.heappush(self._queue, (expires, signature))
        return False

    def forget(self, signature: str) -> None:
        """Let ``signature`` be used again: its request was not accepted (a 429, a 503, a 400), so
        the sender's retry of the very same bytes is a retry, not a replay. (Its heap entry stays
        until it expires; ``forget_expired`` tolerates that.)"""
        self._expiry.pop(signature, None)

    def __len__(self) -> int:
        return len(self._expiry)


@dataclass(frozen=True)
class SignedRequest:
    """The headers of an HMAC-signed request (any may be missing) and its raw body."""

    client: str | None
    timestamp: str | None
    signature: str | None
    body: bytes


def _timestamp(text: str | None, now: float, window_s: float) -> float:
    if text is None:
        raise Unauthorized("X-Timestamp header missing (unix seconds)")
    try:
        timestamp = int(text.strip())
    except ValueError:
        raise Unauthorized("X-Timestamp is not unix seconds") from None
    skew = timestamp - now
    if abs(skew) > window_s:
        direction = "old" if skew < 0 else "in the future"
        raise Unauthorized(
            f"X-Timestamp is {abs(skew):.0f} s {direction} (allowed: {window_s:.0f} s); "
            "check the client's clock or sign the request again"
        )
    return float(timestamp)


def check_signed_headers(
    request: SignedRequest, secrets: Mapping[str, SecretStr], now: float, window_s: float
) -> tuple[SecretStr, float]:
    """The client's secret and the timestamp, from the headers alone: an unknown client, a stale
    timestamp or a malformed signature is refused before the body is read."""
    if not request.client:
        raise Unauthorized("X-Client header missing (the client name the secret belongs to)")
    secret = secrets.get(request.client.strip())
    if secret is None:
        raise Unauthorized("unknown X-Client")
    timestamp = _timestamp(request.timestamp, now, window_s)
    given = (request.signature or "").strip().lower()
    if not given.startswith(SIGNATURE_PREFIX) or not _HEX_SHA256.fullmatch(
        given.removeprefix(SIGNATURE_PREFIX)
    ):
        raise Unauthorized("X-Signature must be sha256=<64 hex digits>")
    return secret, timestamp


def hmac_client(
    request: SignedRequest,
    secrets: Mapping[str, SecretStr],
    now: float,
    seen: SeenSignatures,
) -> str:
    """The client that signed ``request``, checked in an order that leaks nothing: the client is
    named, the timestamp is fresh, the signature matches (constant time), and it was not used
    before. Only a matching signature is remembered, so forgeries cannot fill the memory."""
    seen.forget_expired(now)
    secret, timestamp = check_signed_headers(request, secrets, now, seen.window_s)
    given = (request.signature or "").strip().lower()
    expected = signature_of(secret.get_secret_value(), request.timestamp or "", request.body)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("signature does not match the body and X-Timestamp")
    if seen.seen_before(signature_key(request.signature), timestamp, now):
        raise Unauthorized("signature already used (replayed request); sign each request anew")
    return (request.client or "").strip()


# -- the help desks' own signatures ---------------------------------------------------------------
#
# Zendesk: X-Zendesk-Webhook-Signature = base64(HMAC-SHA256(signing secret, timestamp + body)), with
# the timestamp (ISO 8601, e.g. 2021-07-25T10:00:00Z) in X-Zendesk-Webhook-Signature-Timestamp and
# no separator between it and the body (developer.zendesk.com/documentation/webhooks/verifying).
# Intercom: X-Hub-Signature = "sha1=" + hex(HMAC-SHA1(app client secret, body)); no timestamp.

ZENDESK_SIGNATURE_HEADER = "X-Zendesk-Webhook-Signature"
ZENDESK_TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"
INTERCOM_SIGNATURE_HEADER = "X-Hub-Signature"
INTERCOM_PREFIX = "sha1="
_HEX_SHA1 = re.compile(r"[0-9a-f]{40}")
INTERCOM_MAX_AGE_S = 3 * 3600
"""How old (by its own signed ``created_at``) an Intercom notification may be. Intercom signs no
timestamp, so this is what bounds a replay in time; Intercom itself delays throttled notifications
by up to 2 hours, so the bound is 3 hours, not the 300 s of a signed timestamp. Within it, a
replayed notification's event_id is a duplicate (answered, not produced again)."""


def zendesk_signature_of(secret: str, timestamp: str, body: bytes) -> str:
    """What Zendesk sends in X-Zendesk-Webhook-Signature for ``timestamp`` and ``body``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def intercom_signature_of(secret: str, body: bytes) -> str:
    """What Intercom sends in X-Hub-Signature for ``body``."""
    return INTERCOM_PREFIX + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def _unix_seconds(value: str) -> float:
    if value.isdigit():
        return float(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Unauthorized(f"{ZENDESK_TIMESTAMP_HEADER} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise Unauthorized(f"{ZENDESK_TIMESTAMP_HEADER} has no time zone")
    return parsed.timestamp()


def zendesk_timestamp(text: str | None, now: float, window_s: float) -> float:
    """X-Zendesk-Webhook-Signature-Timestamp (ISO 8601; Unix seconds accepted too) as Unix
    seconds, refused outside the window like X-Timestamp."""
    if text is None or not text.strip():
        raise Unauthorized(f"{ZENDESK_TIMESTAMP_HEADER} header missing")
    moment = _unix_seconds(text.strip())
    skew = moment - now
    if abs(skew) > window_s:
        direction = "old" if skew < 0 else "in the future"
        raise Unauthorized(
            f"{ZENDESK_TIMESTAMP_HEADER} is {abs(skew):.0f} s {direction} (allowed: {window_s:.0f} s)"
        )
    return moment


def _zendesk_digest(signature: str | None) -> bytes:
    try:
        digest = base64.b64decode((signature or "").strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != hashlib.sha256().digest_size:
        raise Unauthorized(f"{ZENDESK_SIGNATURE_HEADER} must be base64 of an HMAC-SHA256 digest")
    return digest


def check_zendesk_headers(request: SignedRequest, now: float, window_s: float) -> float:
    """The timestamp, from the headers alone: a stale or malformed one is refused before the body
    is read. (``request.client`` is unused: Zendesk names no client, the secret that matches does.)"""
    timestamp = zendesk_timestamp(request.timestamp, now, window_s)
    _zendesk_digest(request.signature)
    return timestamp


def matching_client(given: bytes, expected: Mapping[str, bytes]) -> str | None:
    """The client whose expected digest equals ``given``; every one is compared in constant time,
    so the timing tells nothing about which (or how much) matched."""
    found: str | None = None
    for client, digest in expected.items():
        if hmac.compare_digest(given, digest):
            found = client
    return found


def zendesk_client(
    request: SignedRequest, secrets: Mapping[str, SecretStr], now: float, seen: SeenSignatures
) -> str:
    """The client (API_ZENDESK_SECRETS entry) whose webhook signing secret signed ``request``,
    with the same fresh-timestamp and no-replay rules as our own X-Signature."""
    seen.forget_expired(now)
    timestamp = check_zendesk_headers(request, now, seen.window_s)
    given = _zendesk_digest(request.signature)
    stamp = (request.timestamp or "").strip().encode()
    expected = {
        client: hmac.new(secret.get_secret_value().encode(), stamp + request.body, hashlib.sha256).digest()
        for client, secret in secrets.items()
    }
    client = matching_client(given, expected)
    if client is None:
        raise Unauthorized(
            f"{ZENDESK_SIGNATURE_HEADER} does not match the body and timestamp for any configured "
            "signing secret (API_ZENDESK_SECRETS)"
        )
    if seen.seen_before(signature_key(request.signature), timestamp, now):
        raise Unauthorized(f"{ZENDESK_SIGNATURE_HEADER} already used (replayed request)")
    return client


def notification_created_at(body: bytes) -> float:
    """The signed body's own ``created_at`` (Unix seconds), read only after the signature matched."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    created = document.get("created_at") if isinstance(document, dict) else None
    if isinstance(created, bool) or not isinstance(created, int | float):
        raise Unauthorized(
            "signed Intercom notification has no numeric created_at, which bounds a replay in time"
        )
    return float(created)


def intercom_client(signature: str | None, body: bytes, secrets: Mapping[str, SecretStr], now: float) -> str:
    """The client (API_INTERCOM_SECRETS entry) whose app client secret signed ``body``.

    Intercom signs no timestamp, so a captured notification could be sent again. What bounds that:
    the notification's ``created_at`` inside the signed body must be within INTERCOM_MAX_AGE_S (and
    not more than the clock skew ahead), and within it the replay's event_id is a duplicate the
    API answers without producing (DEDUP_WINDOW ids; the router's own window behind it).
    """
    given = (signature or "").strip().lower()
    if not given.startswith(INTERCOM_PREFIX) or not _HEX_SHA1.fullmatch(given.removeprefix(INTERCOM_PREFIX)):
        raise Unauthorized(f"{INTERCOM_SIGNATURE_HEADER} must be sha1=<40 hex digits>")
    expected = {
        client: intercom_signature_of(secret.get_secret_value(), body).encode()
        for client, secret in secrets.items()
    }
    client = matching_client(given.encode(), expected)
    if client is None:
        raise Unauthorized(
            f"{INTERCOM_SIGNATURE_HEADER} does not match the body for any configured client secret "
            "(API_INTERCOM_SECRETS)"
        )
    age = now - notification_created_at(body)
    if age > INTERCOM_MAX_AGE_S or -age > MAX_CLOCK_SKEW_S:
        raise Unauthorized(
            f"Intercom notification created_at is {abs(age):.0f} s {'old' if age > 0 else 'in the future'} "
            f"(allowed: {INTERCOM_MAX_AGE_S} s old, {MAX_CLOCK_SKEW_S} s ahead)"
        )
    return client
