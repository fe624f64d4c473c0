"""Signed session cookies and CSRF tokens. Pure: the clock and the key are arguments.

A session is ``<payload>.<mac>``: the payload (user, a random nonce, expiry) in URL-safe base64 and
an HMAC-SHA256 of it under CONSOLE_SESSION_KEY. Nothing is stored server-side, so every replica
with the same key accepts the same cookie. The CSRF token of a session is an HMAC of its nonce: a
page can put it in its forms, a cross-site page cannot compute it, and it changes with each sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson

NONCE_BYTES = 16


@dataclass(frozen=True)
class Session:
    user: str
    nonce: str
    expires_at: float


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, purpose: bytes, data: bytes) -> str:
    return _b64(hmac.new(key, purpose + b"|" + data, hashlib.sha256).digest())


def new_session(user: str, now: float, ttl_s: float, nonce: str | None = None) -> Session:
    return Session(user, nonce or secrets.token_urlsafe(NONCE_BYTES), now + ttl_s)


def session_cookie(session: Session, key: bytes) -> str:
    payload = _b64(orjson.dumps({"u": session.user, "n": session.nonce, "e": session.expires_at}))
    return f"{payload}.{_mac(key, b'session', payload.encode())}"


def read_session(cookie: str | None, key: bytes, now: float) -> Session | None:
    """The session a cookie holds, or None when it is missing, forged, malformed or expired."""
    if not cookie or "." not in cookie:
        return None
    payload, _, mac = cookie.rpartition(".")
    if not hmac.compare_digest(mac, _mac(key, b"session", payload.encode())):
        return None
    try:
        data = orjson.loads(_unb64(payload))
        session = Session(str(data["u"]), str(data["n"]), float(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires_at > now else None


def csrf_token(nonce: str, key: bytes) -> str:
    """The token forms of the session (or sign-in page) with ``nonce`` carry."""
    return _mac(key, b"csrf", nonce.encode())


def csrf_ok(nonce: str | None, submitted: object, key: bytes) -> bool:
    """Whether a form's token is the one of this ``nonce`` (constant-time)."""
    if not nonce or not isinstance(submitted, str) or not submitted:
        return False
    return hmac.compare_digest(submitted, csrf_token(nonce, key))
