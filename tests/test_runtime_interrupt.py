"""Ctrl-C during ``ticket-router run`` / ``make run`` (issue 11, bug 7): at any point of the start-up
it stops at once (the start-up is cancelled, not waited for), prints at most one line, exits 130
without a traceback, and make adds no ``*** Interrupt`` of its own.

Each case runs the real command in its own session and sends SIGINT to its process group, as a
terminal does; output lines are the events waited on, each wait bounded.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from consumer.kafka.embedded_broker import EmbeddedBroker, free_port, port_is_free
from tests.kafka_helpers import unique

REPO = Path(__file__).resolve().parents[1]
INTERRUPTED = "ticket-router: interrupted during start-up"


def demo_env(bootstrap: str | None, **extra: str) -> dict[str, str]:
    """The demo on its own topics and group, local tier, any free metrics port."""
    tag = unique("ctrlc")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "ANTHROPIC_", "TIERS", "METRICS"))
    }
    env.update(
        INPUT_TOPIC=f"{tag}-in",
        TRIAGE_TOPIC=f"{tag}-triage",
        QUEUE_TOPIC_PREFIX=f"{tag}.",
        CONSUMER_GROUP=tag,
        METRICS_PORT="0",
        EMBEDDED_BROKER_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    if bootstrap is not None:
        env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env.update(extra)
    return env


@dataclass
class Interactive:
    """A command in its own session, its merged output read line by line on a thread."""

    command: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] = field(init=False)
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue, init=False)
    seen: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, wanted: Callable[[str], bool], timeout_s: float = 90.0) -> str:
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"exited ({self.process.wait()}) before the line: {self.seen[-20:]}")
            self.seen.append(line)
            if wanted(line):
                return line
        self.stop()
        raise AssertionError(f"no such line within {timeout_s}s: {self.seen[-20:]}")

    def interrupt(self, timeout_s: float = 30.0) -> tuple[int, float, list[str]]:
        """SIGINT to the process group (a terminal's Ctrl-C); (exit status, seconds, lines after it)."""
        sent = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            status = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"still running {timeout_s}s after Ctrl-C: {self.seen[-20:]}") from None
        took = time.monotonic() - sent
        after: list[str] = []
        while (line := self.lines.get(timeout=10)) is not None:
            after.append(line)
        return status, took, after

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def run_demo(env: dict[str, str], *flags: str) -> Interactive:
    return Interactive([sys.executable, "-m", "consumer.cli", "run", *flags], env)


def assert_quiet_stop(status: int, after: list[str], last: str) -> None:
    assert status == 130, after
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in after), after
    assert after[-1:] == [last], after


@pytest.mark.integration
def test_ctrl_c_while_the_service_starts_cancels_it_and_stops_the_broker() -> None:
    demo = run_demo(demo_env(None))
    banner = demo.wait_for(lambda line: "embedded Kafka-protocol broker" in line)
    broker_port = int(banner.rsplit(":", 1)[1].split()[0])
    status, _took, after = demo.interrupt()
    assert_quiet_stop(status, after, INTERRUPTED)
    assert after == [INTERRUPTED], "one line, nothing else"
    assert port_is_free(broker_port), "the embedded broker outlived the demo"


@pytest.mark.integration
def test_ctrl_c_during_the_group_join_does_not_wait_for_it(bootstrap: str) -> None:
    # Tansu holds a join for about half the session timeout: 15 s here, the old wait.
    demo = run_demo(demo_env(bootstrap, SESSION_TIMEOUT_MS="30000"), "--verbose")
    demo.wait_for(lambda line: '"msg":"created ' in line)  # the last step before the join
    status, took, after = demo.interrupt()
    assert_quiet_stop(status, after, INTERRUPTED)
    assert not any("service up" in line for line in after), after
    assert took < 8, f"Ctrl-C waited {took:.1f}s, as if for the join"


@pytest.mark.integration
def test_ctrl_c_after_start_up_drains_and_exits_130(bootstrap: str) -> None:
    demo = run_demo(demo_env(bootstrap, SESSION_TIMEOUT_MS="1000", HEARTBEAT_INTERVAL_MS="200"))
    demo.wait_for(lambda line: "service up" in line)
    status, _took, after = demo.interrupt()
    assert status == 130 and not any("Traceback" in line for line in after), after
    assert after[-1].startswith("handled ") and " events: " in after[-1], after


@pytest.mark.integration
def test_make_run_adds_no_interrupt_message_of_its_own(bootstrap: str) -> None:
    # -o: never rebuild the venv here, whatever the timestamps say.
    make = Interactive(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "run"],
        demo_env(bootstrap, SESSION_TIMEOUT_MS="1000", HEARTBEAT_INTERVAL_MS="200"),
    )
    make.wait_for(lambda line: "service up" in line)
    status, _took, after = make.interrupt()
    assert status == -signal.SIGINT, after  # make ends as interrupted, as a shell expects
    assert not any("***" in line or "Traceback" in line for line in after), after
    assert after[-1].startswith("handled "), after


@pytest.mark.integration
def test_make_run_still_fails_with_the_demo_s_status(bootstrap: str) -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "run"],
        cwd=REPO,
        env=demo_env(bootstrap, TIERS="turbo"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "ticket-router: error: TIERS: unknown tier 'turbo'" in done.stderr


async def test_a_cancelled_broker_start_leaves_no_broker_behind() -> None:
    broker = EmbeddedBroker(port=free_port())
    start = asyncio.create_task(broker.start_async())
    await asyncio.sleep(0)  # one step of the task: it spawns the process, then waits for it
    process = broker.process
    assert process is not None
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert process.poll() is not None and broker.process is None and broker.workdir is None


def test_ctrl_c_while_the_program_is_still_importing_exits_130_quietly() -> None:
    """The console scripts go through consumer.launch: a SIGINT during the imports (here raised by
    the loader itself, so it lands in that window every time) ends the program with 130, not with
    a KeyboardInterrupt traceback from inside some library."""
    from consumer.launch import INTERRUPTED, _launch

    def slow_import() -> Callable[[], int]:
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("the SIGINT should have stopped the import")

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as caught:
        _launch(slow_import)
    assert caught.value.code == INTERRUPTED
    assert signal.getsignal(signal.SIGINT) is before, "the command's own Ctrl-C handling is restored"
    assert _launch(lambda: lambda: 7) == 7
