"""Bad configuration stops the start-up with one line naming the variable and what it accepts."""

from __future__ import annotations

import subprocess
import sys

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
        ({"max_in_flight": 0}, "MAX_IN_FLIGHT"),
        ({"kafka_security_protocol": "SASL_SSL"}, "KAFKA_SASL_MECHANISM"),
        (
            {"ticket_deadline_s": 30, "drain_timeout_s": 25},
            "TICKET_DEADLINE_S (30) must not exceed DRAIN_TIMEOUT_S (25)",
        ),
    ],
)
def test_bad_values_name_the_variable(overrides: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_cli_reports_bad_config_in_one_line_without_traceback() -> None:
    env = {"TIERS": "local,turbo", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "consume"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ticket-router: error: TIERS: unknown tier 'turbo' (allowed: local, fast, strong)"
    ]


def test_secret_key_is_not_in_the_settings_repr() -> None:
    settings = load_settings(anthropic_api_key="sk-ant-secret-value-123")
    assert "sk-ant-secret-value-123" not in repr(settings)
    assert "sk-ant-secret-value-123" not in str(settings.model_dump())
