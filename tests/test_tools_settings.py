"""The Kafka tools read only their own settings, and say what to do when the default broker is absent.

Issue 11: a bad ``METRICS_PORT``, ``TIERS`` or ``MODEL_PRICES`` (settings of the service only)
stopped ``publish``/``tail``/``replay``; and with ``ticket-router run`` on another port than 9092
the tools' default address failed without saying that ``--bootstrap`` was the way out.
"""

from __future__ import annotations

import socket

import pytest

from consumer.config import Settings, load_settings
from consumer.errors import UserError
from consumer.kafka.connection import client_options
from producer_tools.kafka_io import TOOL_SETTINGS, Connection, load_tool_settings
from schemas.codec import encode
from schemas.events import ErrorKind
from tests.kafka_helpers import create_topics, produce, unique
from tests.test_tools_cli import run, triage

SERVICE_ONLY_MISTAKES = {"METRICS_PORT": "abc", "TIERS": "turbo", "MODEL_PRICES": "{bad"}


def free_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_tools_read_only_their_variables_with_the_service_s_rules() -> None:
    """The service's own Settings and checks, built from the tools' variables alone."""
    assert set(TOOL_SETTINGS) <= set(Settings.model_fields)
    settings = load_tool_settings({"TOPIC_PARTITIONS": "4", "METRICS_PORT": "abc", "TIERS": "turbo"})
    assert settings.topic_partitions == 4
    assert settings.metrics_port == Settings.model_fields["metrics_port"].default


def test_tool_clients_connect_like_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    secured = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "router",
        "KAFKA_SASL_PASSWORD": "s3cret",
        "TIERS": "local",
    }
    for name, value in secured.items():
        monkeypatch.setenv(name, value)
    tool = Connection(load_tool_settings(), "broker:9093", 1.0).options()
    service = client_options(load_settings(), "broker:9093")
    assert tool.pop("client_id") == "ticket-tools"
    assert type(tool.pop("ssl_context")) is type(service.pop("ssl_context"))
    service.pop("client_id")
    assert tool == service
    assert tool["sasl_plain_password"] == "s3cret" and tool["sasl_mechanism"] == "SCRAM-SHA-512"


@pytest.mark.parametrize(("variable", "value"), SERVICE_ONLY_MISTAKES.items())
def test_a_bad_service_only_setting_does_not_block_publish(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)
    status, out, err = run(["publish", "--sample", "1", "--dry-run"], capsys)
    assert status == 0, err
    assert len(out.splitlines()) == 1 and "would be published to 'tickets'" in err


@pytest.mark.integration
def test_a_bad_service_only_setting_does_not_block_tail_or_replay(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable, value in SERVICE_ONLY_MISTAKES.items():
        monkeypatch.setenv(variable, value)
    topic = unique("triage-settings")
    create_topics(bootstrap, [topic], partitions=1)
    produce(bootstrap, topic, [(b"T-0001", encode(triage(1, ErrorKind.LLM_UNAVAILABLE)))])
    status, _, err = run(
        ["replay", "--triage-topic", topic, "--dry-run", "--timeout", "20", "--bootstrap", bootstrap], capsys
    )
    assert status == 0 and "would replay 1 records" in err, err
    tail = ["tail", topic, "--from-beginning", "--json", "--max", "1", "--timeout", "20"]
    status, out, err = run([*tail, "--bootstrap", bootstrap], capsys)
    assert status == 0 and len(out.splitlines()) == 1, err


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"KAFKA_SECURITY_PROTOCOL": "TLS"},
            "KAFKA_SECURITY_PROTOCOL: Input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL' "
            "(got 'TLS')",
        ),
        ({"TOPIC_PARTITIONS": "many"}, "TOPIC_PARTITIONS: Input should be a valid integer"),
        ({"INPUT_TOPIC": "t", "EMBEDDED_BROKER_PORT": "0"}, "EMBEDDED_BROKER_PORT: Input should be greater"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "SASL_* needs KAFKA_SASL_MECHANISM"),
    ],
)
def test_a_bad_setting_the_tools_use_is_one_line_naming_it(
    variables: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    status, _, err = run(["publish", "--sample", "1", "--dry-run"], capsys)
    assert status == 2
    assert err.strip().splitlines() == [err.strip()] and message in err, err


def test_a_sasl_password_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2")
    with pytest.raises(UserError, match="KAFKA_SASL_USERNAME") as caught:
        load_tool_settings()
    assert "hunter2" not in str(caught.value)


def test_nothing_on_the_default_address_says_to_pass_bootstrap(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("EMBEDDED_BROKER_PORT", str(port))
    status, _, err = run(["publish", "--sample", "1", "--connect-timeout", "5"], capsys)
    assert status == 2 and err.strip().splitlines() == [err.strip()], err
    assert f"no broker is listening on 127.0.0.1:{port}, the default address" in err
    assert "`ticket-router run` starts its broker on another port" in err
    assert "pass it with --bootstrap HOST:PORT" in err


def test_an_explicit_address_gets_no_default_address_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    status, _, err = run(["publish", "--sample", "1", "--connect-timeout", "5"], capsys)
    assert status == 2 and f"cannot reach Kafka at 127.0.0.1:{port}" in err
    assert "default address" not in err
