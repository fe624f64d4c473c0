"""Bad configuration stops the start-up with one line naming the variable and what it accepts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from consumer.config import ConfigError, load_settings


def test_defaults_use_the_local_tier_without_a_key() -> None:
    settings = load_settings(anthropic_api_key=None)
    assert settings.effective_tiers == ["local"]
    assert settings.embedded_broker == (not settings.kafka_bootstrap_servers)


def test_a_key_selects_fast_then_strong() -> None:
    assert load_settings(anthropic_api_key="k").effective_tiers == ["fast", "strong"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"tiers": "local,turbo"}, "TIERS: unknown tier 'turbo' (allowed: local, fast, strong)"),
        ({"tiers": "fast", "anthropic_api_key": None}, "needs ANTHROPIC_API_KEY"),
        ({"low_confidence_action": "drop"}, "LOW_CONFIDENCE_ACTION"),
        ({"dense_encoder": "bert"}, "DENSE_ENCODER: Input should be 'none', 'wordllama', 'minilm' or 'e5'"),
        ({"auto_offset_reset": "middle"}, "AUTO_OFFSET_RESET: Input should be 'earliest' or 'latest'"),
        ({"max_in_flight": 0}, "MAX_IN_FLIGHT"),
        ({"kafka_security_protocol": "SASL_SSL"}, "KAFKA_SASL_MECHANISM"),
        (
            {"ticket_deadline_s": 30, "drain_timeout_s": 25},
            "TICKET_DEADLINE_S (30) must not exceed DRAIN_TIMEOUT_S (25)",
        ),
        (
            {"fast_model": "claude-sonnet-4-5"},
            "FAST_MODEL: claude-sonnet-4-5 was retired on 2026-11-30; use claude-sonnet-5-5",
        ),
        (
            {"strong_model": "claude-sonnet-4-5-20250929", "tiers": "local"},
            "STRONG_MODEL: claude-sonnet-4-5-20250929 was retired on 2026-11-30; use claude-sonnet-5-5",
        ),
        (
            {"fast_thinking": "sometimes"},
            "FAST_THINKING: Input should be 'adaptive', 'disabled' or 'between_tools'",
        ),
        (
            {"strong_effort": "extreme"},
            "STRONG_EFFORT: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'",
        ),
        (
            {"strong_thinking": "disabled"},
            "STRONG_THINKING: 'disabled' is not accepted by claude-sonnet-5-5 "
            "(allowed: adaptive, between_tools)",
        ),
        (
            {"fast_model": "claude-haiku-4-5", "fast_effort": "low"},
            "FAST_EFFORT: claude-haiku-4-5 has no effort setting (allowed: unset)",
        ),
        (
            {"anthropic_api_key": "k", "fast_model": "my-own-model"},
            "MODEL_PRICES has no price for 'my-own-model'",
        ),
    ],
)
def test_bad_values_name_the_variable(overrides: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


SASL = {"kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u", "kafka_sasl_password": "p"}


def consume_with(**env: str) -> subprocess.CompletedProcess[str]:
    """``ticket-router consume`` in a clean environment with only ``env`` set."""
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", "consume"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_reports_bad_config_in_one_line_without_traceback() -> None:
    done = consume_with(TIERS="local,turbo")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ticket-router: error: TIERS: unknown tier 'turbo' (allowed: local, fast, strong)"
    ]


def test_today_s_models_are_the_defaults_with_their_cheapest_valid_requests() -> None:
    settings = load_settings(anthropic_api_key="k")
    assert (settings.fast_model, settings.strong_model) == ("claude-haiku-5-5", "claude-sonnet-5-5")
    fast, strong = settings.tier_request("fast"), settings.tier_request("strong")
    assert (fast.thinking, fast.effort, fast.max_tokens) == ("disabled", "low", 600)
    assert (strong.thinking, strong.effort, strong.max_tokens) == ("between_tools", "low", 600)
    assert settings.model_warnings() == []


def test_pinned_older_models_still_load_and_warn() -> None:
    settings = load_settings(
        anthropic_api_key="k", fast_model="claude-haiku-4-5-20251001", strong_model="claude-sonnet-4-6"
    )
    fast = settings.tier_request("fast")
    assert (fast.thinking, fast.effort) == (None, None), "nothing Haiku 4.5 has no parameter for"
    warnings = settings.model_warnings()
    assert len(warnings) == 2
    assert warnings[1].startswith("STRONG_MODEL: claude-sonnet-4-6 is a legacy model")


def test_model_prices_add_to_the_table_instead_of_replacing_it() -> None:
    row = {"input": 1.0, "output": 2.0, "cache_write": 1.25, "cache_read": 0.1}
    settings = load_settings(
        anthropic_api_key="k", fast_model="my-own-model", model_prices={"my-own-model": row}
    )
    assert settings.prices["my-own-model"] == row
    assert settings.prices["claude-sonnet-5-5"]["input"] == 2.0


def test_a_retired_model_stops_the_cli_with_one_line() -> None:
    done = consume_with(FAST_MODEL="claude-sonnet-4-5")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ticket-router: error: FAST_MODEL: claude-sonnet-4-5 was retired on 2026-11-30; use claude-sonnet-5-5"
    ]


def test_secret_key_is_not_in_the_settings_repr() -> None:
    settings = load_settings(anthropic_api_key="sk-ant-secret-value-123")
    assert "sk-ant-secret-value-123" not in repr(settings)
    assert "sk-ant-secret-value-123" not in str(settings.model_dump())


def test_a_thinking_tier_with_a_small_cap_is_warned_about() -> None:
    tight = load_settings(
        anthropic_api_key="k", fast_thinking="adaptive", fast_effort="high", fast_max_tokens=600
    )
    assert tight.model_warnings() == [
        "FAST_MAX_TOKENS: 600 leaves little room for claude-haiku-5-5 to think (about 8600 expected at "
        "effort high): answers may come back cut off"
    ]
    roomy = load_settings(anthropic_api_key="k", fast_thinking="adaptive", fast_effort="high")
    assert roomy.model_warnings() == []
    assert load_settings(anthropic_api_key="k", fast_max_tokens=600).model_warnings() == [], "no thinking"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MODEL_PRICES": "{bad"}, "MODEL_PRICES: the value is not a JSON object"),
        ({"MODEL_PRICES": "[1]"}, "MODEL_PRICES: Input should be a valid dictionary"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "nohost"}, "KAFKA_BOOTSTRAP_SERVERS: 'nohost' is not host:port"),
        (
            {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
            "cannot reach Kafka at 127.0.0.1:1: no broker accepted a connection "
            "(check KAFKA_BOOTSTRAP_SERVERS)",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nope/ca.crt"},
            "KAFKA_SSL_CAFILE: cannot read /nope/ca.crt: No such file or directory",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "ssl", "KAFKA_SSL_CAFILE": "{not_pem}"},
            "KAFKA_SSL_CAFILE: {not_pem} holds no PEM CA certificate (NO_CERTIFICATE_OR_CRL_FOUND)",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "{not_pem}"},
            "KAFKA_SSL_CERTFILE/KAFKA_SSL_KEYFILE: {not_pem} and the same file are not a PEM certificate",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "{not_pem}"},
            "KAFKA_SSL_KEYFILE is set without KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_start_up_mistakes_are_one_line_naming_the_variable(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    """Each once ended in a traceback or in an OS/aiokafka message that named no setting."""
    not_pem = tmp_path / "not-a-certificate.pem"
    not_pem.write_text("hello\n")
    values = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", **env}
    done = consume_with(**{key: value.replace("{not_pem}", str(not_pem)) for key, value in values.items()})
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("ticket-router: error: " + expected.replace("{not_pem}", str(not_pem))), line


def test_level_and_protocol_names_are_case_insensitive() -> None:
    settings = load_settings(log_level="debug", kafka_security_protocol="sasl_ssl", **SASL)
    assert (settings.log_level, settings.kafka_security_protocol) == ("DEBUG", "SASL_SSL")


def test_a_closed_pipe_is_not_reported_as_a_mistake() -> None:
    """`ticket-router taxonomy check | head -1` used to end in `error: [Errno 32] Broken pipe`, rc 2."""
    script = (
        "import os, sys\n"
        "read, write = os.pipe()\n"
        "os.close(read)\n"
        "os.dup2(write, sys.stdout.fileno())\n"
        "from consumer.cli import main\n"
        "sys.exit(main(['taxonomy', 'check']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""


def test_an_empty_path_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """`LOCAL_MODEL_CACHE=` once cached fitted models in the working directory (Path("") is ".")."""
    monkeypatch.setenv("LOCAL_MODEL_CACHE", "")
    monkeypatch.setenv("LOCAL_TRAINING_PATH", " ")
    settings = load_settings()
    assert settings.local_model_cache is None
    assert settings.local_training_path is None


def test_retrieval_keeps_one_example_per_label_combination_by_default() -> None:
    assert load_settings().retrieved_per_label == 1
    assert load_settings(retrieved_per_label=0).retrieved_per_label == 0
