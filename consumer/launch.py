"""The console-script entry points: Ctrl-C while the program is still importing exits quietly.

Importing the service (scikit-learn, the SDK, aiokafka) takes a second or two; a Ctrl-C in that
window would otherwise print a KeyboardInterrupt traceback from the middle of some library. Until
the command's own code runs (which handles Ctrl-C itself), it means "never mind": exit 130.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType

INTERRUPTED = 130


def _exit_quietly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(INTERRUPTED)


def _launch(load: Callable[[], Callable[[], int]]) -> int:
    previous = signal.signal(signal.SIGINT, _exit_quietly)
    try:
        main = load()
    finally:
        signal.signal(signal.SIGINT, previous)
    return main()


def _router_main() -> Callable[[], int]:
    from consumer.cli import main

    return main


def _tools_main() -> Callable[[], int]:
    from producer_tools.cli import main

    return main


def ticket_router() -> int:
    """``ticket-router``."""
    return _launch(_router_main)


def ticket_tools() -> int:
    """``ticket-tools``."""
    return _launch(_tools_main)


if __name__ == "__main__":
    sys.exit(ticket_router())
