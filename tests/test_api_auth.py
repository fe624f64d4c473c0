"""The ingestion API's gatekeeping as pure functions: signatures, timestamps, replays, bearer
tokens, credential settings and the token bucket, with the clock passed in."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from consumer.api.auth import (
    MAX_CLOCK_SKEW_S,
    SeenSignatures,
    SignedRequest,
    Unauthorized,
    bearer_client,
    hmac_client,
    parse_credentials,
    signature_of,
)
from consumer.api.ingest import BadRequest, events_of, json_path, parse_body
from consumer.api.ratelimit import RateLimiter, TokenBucket, retry_after_header
from consumer.config import ConfigError, format_settings_error, load_settings, settings_from_values

SECRET = "zendesk-shared-secret-0123456789"
SECRETS = {"zendesk": SecretStr(SECRET)}
TOKENS = {"intake": SecretStr("intake-token-abcdefghijkl"), "ops": SecretStr("ops-token-0123456789abc")}
NOW = 1_760_000_000.0
BODY = b'{"event_id": "e-1"}'


def signed(
    body: bytes = BODY, timestamp: float = NOW, secret: str = SECRET, client: str = "zendesk"
) -> SignedRequest:
    stamp = str(int(timestamp))
    return SignedRequest(client, stamp, signature_of(secret, stamp, body), body)


def refusal(request: SignedRequest, seen: SeenSignatures | None = None, now: float = NOW) -> str:
    with pytest.raises(Unauthorized) as caught:
        hmac_client(request, SECRETS, now, seen or SeenSignatures())
    return str(caught.value)


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1760000000." + BODY, hashlib.sha256).hexdigest()
    assert signature_of(SECRET, "1760000000", BODY) == "sha256=" + expected


def test_a_correctly_signed_request_names_its_client() -> None:
    assert hmac_client(signed(), SECRETS, NOW, SeenSignatures()) == "zendesk"
    # Within the window either way: a client clock a little ahead or behind is fine.
    assert hmac_client(signed(timestamp=NOW - 299), SECRETS, NOW, SeenSignatures()) == "zendesk"
    assert hmac_client(signed(timestamp=NOW + 299), SECRETS, NOW, SeenSignatures()) == "zendesk"


def test_forged_signatures_are_refused_without_echoing_the_secret() -> None:
    wrong_secret = signed(secret="not-the-shared-secret-at-all")
    assert refusal(wrong_secret) == "signature does not match the body and X-Timestamp"
    tampered = signed()
    tampered_body = SignedRequest(tampered.client, tampered.timestamp, tampered.signature, BODY + b" ")
    assert "does not match" in refusal(tampered_body)
    other_time = SignedRequest(tampered.client, str(int(NOW) + 1), tampered.signature, BODY)
    assert "does not match" in refusal(other_time)
    for reason in (refusal(wrong_secret), refusal(tampered_body)):
        assert SECRET not in reason and (tampered.signature or "") not in reason


def test_missing_or_malformed_signed_headers_are_named() -> None:
    good = signed()
    assert "X-Client header missing" in refusal(SignedRequest(None, good.timestamp, good.signature, BODY))
    assert refusal(signed(client="intercom")) == "unknown X-Client"
    assert "X-Timestamp header missing" in refusal(SignedRequest("zendesk", None, good.signature, BODY))
    assert "not unix seconds" in refusal(SignedRequest("zendesk", "yesterday", good.signature, BODY))
    assert "sha256=<64 hex digits>" in refusal(SignedRequest("zendesk", good.timestamp, "md5=abc", BODY))


@pytest.mark.parametrize(("offset", "word"), [(-301, "old"), (+301, "in the future"), (-86_400, "old")])
def test_timestamps_outside_five_minutes_are_refused(offset: float, word: str) -> None:
    reason = refusal(signed(timestamp=NOW + offset))
    assert f"s {word} (allowed: {MAX_CLOCK_SKEW_S} s)" in reason


def test_a_replayed_signature_is_refused_until_its_timestamp_expires() -> None:
    seen = SeenSignatures()
    request = signed()
    assert hmac_client(request, SECRETS, NOW, seen) == "zendesk"
    assert "replayed request" in refusal(request, seen, now=NOW + 10)
    # A forged request is never remembered, so it cannot be used to block a real one.
    assert "does not match" in refusal(signed(secret="x" * 20, body=b"other"), seen)
    assert hmac_client(signed(body=b"other"), SECRETS, NOW, seen) == "zendesk"
    # Once outside the window, the timestamp check refuses it and the memory lets it go.
    assert "old" in refusal(request, seen, now=NOW + MAX_CLOCK_SKEW_S + 1)
    assert len(seen) == 0


def test_bearer_tokens_name_their_client_and_wrong_ones_are_not_echoed() -> None:
    assert bearer_client("Bearer intake-token-abcdefghijkl", TOKENS) == "intake"
    assert bearer_client("bearer   ops-token-0123456789abc ", TOKENS) == "ops"
    with pytest.raises(Unauthorized, match=r"^unknown bearer token$"):
        bearer_client("Bearer intake-token-abcdefghijkX", TOKENS)
    with pytest.raises(Unauthorized, match="must be 'Bearer <token>'"):
        bearer_client("Basic aW50YWtlOg==", TOKENS)
    with pytest.raises(Unauthorized, match="must be 'Bearer <token>'"):
        bearer_client("Bearer ", TOKENS)
    with pytest.raises(Unauthorized):
        bearer_client("Bearer intake-token-abcdefghijkl", {})


def test_credential_settings_are_checked_and_never_quoted() -> None:
    assert parse_credentials(" a:0123456789abcdef , b.c:0123456789abcdefg:h ,", "token") == {
        "a": "0123456789abcdef",
        "b.c": "0123456789abcdefg:h",  # only the first colon separates
    }
    with pytest.raises(ValueError, match="entry 2 is not client:secret"):
        parse_credentials("a:0123456789abcdef,just-a-secret-value-here", "secret")
    with pytest.raises(ValueError, match="shorter than 16") as caught:
        parse_credentials("a:tiny-secret", "secret")
    assert "tiny-secret" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"^API_TOKENS: client 'a' is listed twice$"):
        load_settings(tiers="local", api_tokens="a:0123456789abcdef,a:0123456789abcdefg")
    with pytest.raises(ConfigError, match=r"^API_PORT is set but neither API_TOKENS nor API_HMAC_SECRETS"):
        load_settings(tiers="local", api_port=8080)
    settings = load_settings(tiers="local", api_port=0, api_hmac_secrets=f"zendesk:{SECRET}")
    assert settings.api_hmac_secrets["zendesk"].get_secret_value() == SECRET
    assert SECRET not in repr(settings)


def test_a_tool_showing_bad_values_never_shows_a_credential() -> None:
    with pytest.raises(Exception) as caught:
        settings_from_values({"api_tokens": "a:short-token-1"})
    message = format_settings_error(caught.value, show_value=True)  # type: ignore[arg-type]
    assert message.startswith("API_TOKENS: ") and "short-token-1" not in message


def test_token_bucket_allows_a_burst_then_the_rate_with_a_retry_after() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)  # one token takes 1/rate seconds
    assert bucket.take(100.25) == pytest.approx(0.25)
    assert bucket.take(100.5) == 0.0
    assert bucket.take(110.0) == 0.0  # refilled, but never past the burst
    assert [bucket.take(110.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]
    assert bucket.take(90.0) > 0  # a clock that goes backwards refills nothing


def test_rate_limits_are_per_client_and_retry_after_rounds_up() -> None:
    limiter = RateLimiter(rate_per_s=0.5, burst=1)
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("a", 0.0) == pytest.approx(2.0)
    assert limiter.take("b", 0.0) == 0.0
    assert [retry_after_header(s) for s in (0.01, 1.0, 1.2, 7.9)] == ["1", "1", "2", "8"]


def test_body_errors_name_the_field_as_a_json_path_and_the_event() -> None:
    assert json_path("$.tickets[2]", ("metadata", "a", 0)) == "$.tickets[2].metadata.a[0]"
    with pytest.raises(BadRequest) as caught:
        parse_body(b'{"tickets": [{}, 1]', 10)
    assert caught.value.error.startswith("body is not valid JSON")
    with pytest.raises(BadRequest) as caught:
        events_of({"tickets": [{"event_id": "x"}] * 3}, 2)
    assert caught.value.field == "$.tickets" and "at most 2" in caught.value.error
    with pytest.raises(BadRequest) as caught:
        events_of([{}], 2)
    assert caught.value.field == "$"
