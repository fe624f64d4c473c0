"""``ticket-tools bench``: throughput, CPU and memory of the router, next to the ceilings that bound it.

Six scenarios on the embedded broker and the fake Messages API, in one run: the Kafka client's
passthrough ceiling (a), the router with the local tier (b), the router with the fake at 0 ms (c)
against the SDK alone making the same calls (d), and the router with realistic model latency (e)
against the same service one ticket at a time (f). Ratios and targets are in ``report``; each
scenario is measured in its own process (``worker``) for a clean CPU clock and peak RSS.
"""

from producer_tools.bench.command import add_parser, handle

__all__ = ["add_parser", "handle"]
