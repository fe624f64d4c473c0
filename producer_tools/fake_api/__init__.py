"""A fake Anthropic Messages API for tests, benchmarks and demos, since no real API is reachable here.

The real ``anthropic`` SDK talks to it unchanged (``base_url=server.base_url``); a ``Scenario``
scripts labels, confidences, latency, faults, malformed answers, refusals and prompt-cache minimums
per model. What a model is and accepts (tokenizer, cache minimum, thinking, effort, prefill, forced
tools, retirement) comes from ``consumer.classify.models.MODELS``; ``contract`` enforces today's
API version (2026-10-21) with the real error messages, and ``thinking`` spends ``max_tokens`` on
thinking the way the 5.x models do. ``"stream": true`` gets the same reply as server-sent events
(``streaming``), and a request with neither an output schema nor a forced tool gets prose.
"""

from producer_tools.fake_api.cli import add_cli_parser, add_parser, handle_cli, read_scenario, serve_forever
from producer_tools.fake_api.scenario import (
    FixedLabel,
    HashLabels,
    KeywordLabels,
    KeywordRule,
    Latency,
    ModelScript,
    Scenario,
    TicketIdLabels,
    load_scenario,
    parse_scenario,
)
from producer_tools.fake_api.server import FakeApiServer
from producer_tools.fake_api.threaded import ThreadedFakeApi, run_in_thread

__all__ = [
    "FakeApiServer",
    "FixedLabel",
    "HashLabels",
    "KeywordLabels",
    "KeywordRule",
    "Latency",
    "ModelScript",
    "Scenario",
    "ThreadedFakeApi",
    "TicketIdLabels",
    "add_cli_parser",
    "add_parser",
    "handle_cli",
    "load_scenario",
    "parse_scenario",
    "read_scenario",
    "run_in_thread",
    "serve_forever",
]
