"""``ticket-router run`` (issue 11, bugs 6 and the demo's defaults): the table fits an 80×24
terminal and counts every event it handled, the busy-port broker says which --bootstrap the tools
need, /metrics stays on loopback unless METRICS_HOST is set, and bad --exit-after values are one line.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys

import pytest
from rich.console import Console

from consumer.cli import main
from consumer.config import load_settings
from consumer.demo import (
    OutcomeTable,
    Row,
    broker_banner,
    claude_advice,
    columns_for,
    demo_endpoint,
    demo_settings,
    row_for,
)
from consumer.kafka.embedded_broker import port_is_free
from consumer.processing import Outcome
from tests.test_runtime_interrupt import REPO, demo_env
from tests.test_tools_cli import routed, ticket

LONG_SUBJECT = "SSO enforcement broke logins for our whole Sales org this morning"


def filled_table(events: int) -> OutcomeTable:
    table = OutcomeTable(samples=40)
    for index in range(events):
        table.rows.append(
            Row(
                "routed",
                f"T-{1000 + index}",
                LONG_SUBJECT,
                "critical-infrastructure",
                "strong*",
                "x" * 80,
                "12",
            )
        )
    return table


def rendered(table: OutcomeTable, width: int, height: int) -> list[str]:
    out = io.StringIO()
    console = Console(width=width, height=height, file=out, color_system=None, legacy_windows=False)
    console.print(table.render(console.width, console.height))
    return out.getvalue().splitlines()


def test_the_table_fits_80_columns_and_keeps_the_ticket_text() -> None:
    lines = rendered(filled_table(50), width=80, height=24)
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if "subject" in line)
    assert "ticket" in header
    assert "queue" in header and "tier" in header
    row = next(line for line in lines if "T-1049" in line)
    assert LONG_SUBJECT[:24] in row, "the subject column must not shrink to nothing"
    assert "critical-infrastructure" in row and "strong*" in row
    assert len(lines) <= 24 - 2, "the newest rows must not be cut off below the terminal"
    assert any("* low confidence, routed flagged" in line for line in lines)


def test_a_wide_terminal_shows_every_column() -> None:
    assert columns_for(200) == ["ticket", "subject", "queue", "tier", "detail", "ms"]
    lines = rendered(filled_table(3), width=200, height=50)
    assert any("labels (weakest confidence)" in line and "ms" in line for line in lines)
    assert max(len(line) for line in lines) <= 200


@pytest.mark.parametrize("width", [60, 80, 100, 120, 140])
def test_columns_are_dropped_least_useful_first(width: int) -> None:
    columns = columns_for(width)
    assert columns[:3] == ["ticket", "subject", "queue"]
    assert max(len(line) for line in rendered(filled_table(3), width, 30)) <= max(width, 66)


def test_the_title_counts_every_event_not_only_the_samples() -> None:
    table = filled_table(90)
    assert table.title() == "ticket-router: 90 events handled (40 samples published)"
    assert table.summary() == "handled 90 events: 90 routed, 0 triaged or skipped"


def test_rows_show_the_last_tier_with_a_low_confidence_mark() -> None:
    flagged = routed(7, "billing-normal").model_copy(update={"low_confidence": True})
    outcome = Outcome("routed", "q", b"k", b"v", ticket_id="T-0007", queue="billing-normal", routed=flagged)
    row = row_for(outcome, 0.0123)
    assert (row.queue, row.tier, row.ms) == ("billing-normal", "local*", "12")
    skipped = Outcome(
        "skipped", None, None, None, ticket_id="T-8", ticket=ticket(8), skip_reason="agent_reply"
    )
    assert row_for(skipped, 0.0).queue == "(not classified)"


def test_the_broker_banner_gives_the_tools_flag_only_when_the_port_moved() -> None:
    assert broker_banner(9092, "127.0.0.1:9092") == "embedded Kafka-protocol broker (Tansu) on 127.0.0.1:9092"
    moved = broker_banner(9092, "127.0.0.1:40123")
    assert "(port 9092 is busy)" in moved and "--bootstrap 127.0.0.1:40123" in moved


@pytest.mark.integration
async def test_a_busy_broker_port_moves_the_broker_and_says_where(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = load_settings(kafka_bootstrap_servers=None, embedded_broker_port=port)
        async with demo_endpoint(settings) as bootstrap:
            moved_to = int(bootstrap.rsplit(":", 1)[1])
            assert moved_to != port
            with socket.create_connection(("127.0.0.1", moved_to), timeout=5):
                pass  # the broker it names is the one that answers
    assert port_is_free(moved_to), "the broker is stopped with the demo"
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(
        f"(port {port} is busy): give the tools --bootstrap {bootstrap}, "
        f"e.g. ticket-tools tail --bootstrap {bootstrap}"
    )


def test_the_demo_serves_metrics_on_loopback_unless_metrics_host_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("METRICS_HOST", raising=False)
    assert load_settings().metrics_host == "0.0.0.0"  # the service (the pod) keeps every interface
    assert demo_settings(load_settings()).metrics_host == "127.0.0.1"
    monkeypatch.setenv("METRICS_HOST", "0.0.0.0")
    assert demo_settings(load_settings()).metrics_host == "0.0.0.0"


def test_claude_advice_tells_a_bad_key_from_an_unreachable_api() -> None:
    settings = load_settings(anthropic_api_key="sk-ant-x", anthropic_base_url=None)
    key = claude_advice("rejected the key: 401 authentication_error: invalid x-api-key", settings)
    assert key.startswith("Claude API at https://api.anthropic.com: rejected the key: 401")
    assert "check ANTHROPIC_API_KEY" in key and "'needs-human-triage'" in key
    assert "unset ANTHROPIC_API_KEY" in key
    pinned = load_settings(anthropic_api_key="sk-ant-x", tiers="fast,strong", anthropic_base_url="http://h:1")
    down = claude_advice("unreachable: connection error", pinned)
    assert "check ANTHROPIC_BASE_URL" in down and "set TIERS=local" in down


@pytest.mark.parametrize("value", ["-5", "0", "nan", "inf"])
def test_exit_after_must_be_positive(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--exit-after", value]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("ticket-router: error: --exit-after must be a positive number of seconds")


def run_with(bootstrap: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", "run", "--exit-after", "1"],
        cwd=REPO,
        env={**demo_env(bootstrap), **settings},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.integration
def test_a_bad_metrics_host_is_one_line_naming_it(bootstrap: str) -> None:
    done = run_with(bootstrap, METRICS_HOST="256.1.1.1")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("ticket-router: error: METRICS_HOST=256.1.1.1: not an address of this")
    assert "expected an IP address or host name" in done.stderr


@pytest.mark.integration
def test_a_taken_metrics_port_is_one_line_naming_it(bootstrap: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # where the demo serves /metrics: loopback
        taken.listen()
        port = taken.getsockname()[1]
        done = run_with(bootstrap, METRICS_PORT=str(port))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"ticket-router: error: METRICS_PORT={port}: the port is already in use")
