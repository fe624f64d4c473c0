"""``ticket-tools costs``: what 10,000 tickets cost per model pair, measured through the fake Messages API.

The README's cost table comes from this command, not from arithmetic on guesses: every ticket goes
through the router's own pipeline (the default system prompt, the default per-model thinking and
effort, the real SDK) against the fake API, which counts tokens with each model's tokenizer and
follows the prompt-cache rules. The fake's usage is then priced with the model table's prices.

Each model pair is measured with every ticket on the fast model and with every ticket on the strong
model, each with the prompt cache working and never hitting (the fake's cache minimum raised out of
reach). "Cheap first" is then the fast run plus the strong run's cost for the escalated share
(``--escalation-rate``, default 15%): an escalated ticket makes exactly the strong model's call, so
this gives the stated rate exactly, where scripting low confidence on a hash of each ticket's text
would give whatever share of the generated texts happened to fall under it.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import orjson
from rich.console import Console
from rich.table import Table

from consumer.config import Settings, load_settings
from consumer.service import build_pipeline, build_tiers
from consumer.taxonomy import Taxonomy, load_taxonomy
from producer_tools.bench.scenarios import bench_tickets
from producer_tools.evaluation.dataset import LabeledTicket
from producer_tools.evaluation.runner import classify_all
from producer_tools.fake_api.scenario import ModelScript, Scenario
from producer_tools.fake_api.server import FakeApiServer
from schemas.events import TokenUsage

PAIRS: tuple[tuple[str, str], ...] = (
    ("claude-haiku-4-5", "claude-sonnet-4-6"),
    ("claude-haiku-5-5", "claude-sonnet-5-5"),
)
ESCALATION_RATE = 0.15
NEVER_CACHED = 10**9
PER = 10_000
DUMMY_KEY = "costs-dummy-key"
CONCURRENCY = 16


@dataclass(frozen=True)
class CostRun:
    """One configuration's figures, per 10,000 tickets."""

    fast_model: str
    strong_model: str
    mode: str
    cached: bool
    tickets: int
    strong_share: float
    usd_per_10k: float
    tokens_per_ticket: dict[str, float]


def fake_scenario(fast: str, strong: str, cached: bool) -> Scenario:
    """Confident, valid answers; uncached: no prefix is ever long enough to be cached."""
    minimum = None if cached else NEVER_CACHED
    script = ModelScript(min_cacheable_tokens=minimum)
    return Scenario(models={fast: script, strong: script}, max_recorded_requests=0)


def cheap_first(fast: CostRun, strong: CostRun, rate: float) -> CostRun:
    """Every ticket on the fast model, and ``rate`` of them also on the strong model."""
    tokens = {
        kind: fast.tokens_per_ticket[kind] + rate * strong.tokens_per_ticket[kind]
        for kind in fast.tokens_per_ticket
    }
    return replace(
        fast,
        mode="cheap first",
        strong_share=rate,
        usd_per_10k=fast.usd_per_10k + rate * strong.usd_per_10k,
        tokens_per_ticket=tokens,
    )


def tokens_per_ticket(usage: TokenUsage, tickets: int) -> dict[str, float]:
    kinds = {
        "input": usage.input_tokens,
        "cache_read": usage.cache_read_input_tokens,
        "cache_write": usage.cache_creation_input_tokens,
        "output": usage.output_tokens,
    }
    return {kind: count / tickets for kind, count in kinds.items()}


async def measure(settings: Settings, taxonomy: Taxonomy, items: Sequence[LabeledTicket]) -> CostRun:
    """Runs ``items`` through the pipeline ``settings`` describe and prices what the fake billed."""
    tiers = build_tiers(settings, taxonomy)
    pipeline = build_pipeline(settings, taxonomy, tiers)
    try:
        outcomes = await classify_all(pipeline, items, taxonomy.axis_names, CONCURRENCY)
    finally:
        await pipeline.close()
    usage = TokenUsage()
    for outcome in outcomes:
        for call in outcome.model_calls:
            usage = usage + call.usage
    n = len(outcomes)
    [tier] = settings.effective_tiers
    return CostRun(
        fast_model=settings.fast_model,
        strong_model=settings.strong_model,
        mode=f"{tier} only",
        cached=True,
        tickets=n,
        strong_share=1.0 if tier == "strong" else 0.0,
        usd_per_10k=sum(outcome.cost_usd for outcome in outcomes) / n * PER,
        tokens_per_ticket=tokens_per_ticket(usage, n),
    )


async def run_pair(
    fast: str, strong: str, items: Sequence[LabeledTicket], taxonomy: Taxonomy, rate: float
) -> list[CostRun]:
    """Per cache mode: fast only, strong only, and cheap first derived from the two."""
    runs = []
    for cached in (True, False):
        async with FakeApiServer(fake_scenario(fast, strong, cached)) as server:
            measured = []
            for tier in ("fast", "strong"):
                settings = load_settings(
                    anthropic_api_key=DUMMY_KEY,
                    anthropic_base_url=server.base_url,
                    tiers=[tier],
                    fast_model=fast,
                    strong_model=strong,
                    non_english_to_strong=False,
                )
                measured.append(replace(await measure(settings, taxonomy, items), cached=cached))
        fast_run, strong_run = measured
        runs.extend([cheap_first(fast_run, strong_run, rate), strong_run, fast_run])
    return runs


def labeled(count: int) -> list[LabeledTicket]:
    """English customer tickets (the bench's), so no ticket skips the fast tier for its language."""
    return [
        LabeledTicket(ticket=ticket, gold={}, language="en", account_tier=ticket.account_tier.value)
        for ticket in bench_tickets(count)
    ]


async def all_runs(count: int, rate: float = ESCALATION_RATE) -> list[CostRun]:
    taxonomy = load_taxonomy()
    items = labeled(count)
    runs: list[CostRun] = []
    for fast, strong in PAIRS:
        runs.extend(await run_pair(fast, strong, items, taxonomy, rate))
    return runs


def model_label(run: CostRun) -> str:
    if run.mode == "cheap first":
        return f"{run.fast_model} → {run.strong_model}"
    return run.strong_model if run.mode == "strong only" else run.fast_model


def table(runs: Sequence[CostRun]) -> Table:
    out = Table(title=f"Cost of {PER:,} tickets (fake Messages API usage, list prices)")
    for column in (
        "models",
        "mode",
        "prompt cache",
        "escalated",
        "USD / 10k",
        "input",
        "cache read",
        "output",
    ):
        out.add_column(column, justify="left" if column in ("models", "mode", "prompt cache") else "right")
    for run in runs:
        tokens = run.tokens_per_ticket
        out.add_row(
            model_label(run),
            run.mode,
            "cached" if run.cached else "uncached",
            f"{run.strong_share:.0%}",
            f"${run.usd_per_10k:,.2f}",
            f"{tokens['input']:,.0f}",
            f"{tokens['cache_read']:,.0f}",
            f"{tokens['output']:,.0f}",
        )
    return out


def handle(args: argparse.Namespace) -> int:
    runs = asyncio.run(all_runs(args.tickets, args.escalation_rate))
    if args.json:
        print(orjson.dumps([asdict(run) for run in runs], option=orjson.OPT_INDENT_2).decode())
    else:
        Console(width=140).print(table(runs))
    return 0


if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


def add_parser(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser(
        "costs",
        help="cost of 10k tickets per model pair, from the fake API's usage",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument(
        "--tickets", type=_positive, default=400, help="tickets per run (default: %(default)s)"
    )
    parser.add_argument(
        "--escalation-rate",
        type=_rate,
        default=ESCALATION_RATE,
        help="share of tickets the strong model also sees in cheap-first (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(handler=handle)


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return rate


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number
