"""Running the fake API on its own thread and event loop, for sync tests and other processes' clients.

The server's state is only ever touched from its own loop: the handle's control methods hop onto
that loop instead of mutating from the caller's thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from producer_tools.fake_api.scenario import Scenario
from producer_tools.fake_api.server import Clock, FakeApiServer, WallClock, utc_now

T = TypeVar("T")

_START_TIMEOUT_S = 10.0


class ThreadedFakeApi:
    """A running server on a background thread; ``close()`` (or leaving the ``with``) stops it."""

    def __init__(
        self, server: FakeApiServer, loop: asyncio.AbstractEventLoop, thread: threading.Thread
    ) -> None:
        self.server = server
        self.base_url = server.base_url
        self._loop = loop
        self._thread = thread

    def _call(self, function: Callable[[], T]) -> T:
        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=_START_TIMEOUT_S)

    def set_scenario(self, scenario: Scenario) -> None:
        self._call(lambda: self.server.set_scenario(scenario))

    def requests(self) -> list[dict[str, Any]]:
        return self._call(self.server.requests)

    def reset(self) -> None:
        self._call(self.server.reset)

    def batch_creations(self) -> list[dict[str, Any]]:
        return self._call(self.server.batch_creations)

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()

    def __enter__(self) -> ThreadedFakeApi:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def run_in_thread(
    scenario: Scenario | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Clock = time.monotonic,
    wall_clock: WallClock = utc_now,
) -> ThreadedFakeApi:
    """Starts a server on a daemon thread and returns once it accepts connections."""
    server = FakeApiServer(scenario, clock=clock, wall_clock=wall_clock)
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[str] = concurrent.futures.Future()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            started.set_result(loop.run_until_complete(server.start(host, port)))
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(server.stop())
            loop.close()

    thread = threading.Thread(target=main, name="fake-anthropic-api", daemon=True)
    thread.start()
    started.result(timeout=_START_TIMEOUT_S)
    return ThreadedFakeApi(server, loop, thread)
