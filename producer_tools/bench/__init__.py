"""``ticket-tools bench``: throughput, CPU and memory of the router, next to the ceilings that bound it.

Seven scenarios on the embedded broker and the fake Messages API, in one run: the Kafka client's
passthrough ceiling (a), the router with the local tier (b), the router with the fake at 0 ms (c)
against the SDK alone making the same calls (d), the router with realistic model latency (e)
against the same service one ticket at a time (f) and against two processes in one group (g).
Ratios and targets are in ``report``; each scenario is measured in its own process (``worker``)
for a clean CPU clock and peak RSS. ``--soak`` runs only the soak (s): one long router run with
its resident memory read throughout.
"""

from producer_tools.bench.command import add_parser, handle

__all__ = ["add_parser", "handle"]
