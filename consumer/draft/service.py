"""``ticket-router draft``: the drafter, wired from settings and run until SIGTERM/SIGINT.

It is the router's Kafka loop with another processor: it reads every queue topic the taxonomy's
routing can produce, in its own consumer group (``DRAFT_CONSUMER_GROUP``, by default
``CONSUMER_GROUP.drafter``), so team consumers and the router keep their offsets; it publishes to
``DRAFTS_TOPIC`` and, for a failed draft, to the triage topic; offsets are committed only after
that publish is acknowledged. Its /metrics, /healthz and /readyz are the router's, on
``DRAFT_METRICS_PORT``, so both can run on one host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import anthropic
from aiohttp import web

from consumer import __version__
from consumer.api.health import BrokerProbe, ClaudeApiProbe, build_app, start_http
from consumer.classify.claude import make_client, price_for
from consumer.classify.models import resolve_tier_request
from consumer.classify.prompt import set_default_redaction
from consumer.classify.retry import RetryPolicy
from consumer.config import Settings
from consumer.draft.handlers import handler_answer_tokens, handler_tier
from consumer.draft.processor import DraftConfig, DraftOutcome, DraftProcessor
from consumer.draft.prompt import draft_params, draft_system, handler_version
from consumer.draft.writer import DraftPlan, DraftWriter
from consumer.errors import UserError
from consumer.kafka.connection import client_options
from consumer.kafka.dedup import RecentIds
from consumer.kafka.loop import KafkaLoop, OutcomeHook
from consumer.kafka.topics import ensure_topics
from consumer.metrics import DraftMetrics, zero_draft_series
from consumer.processing import InputRecord, Outcome
from consumer.routing import reachable_queues
from consumer.service import (
    claude_api_problem,
    fan_out,
    fetch_bytes_for,
    freeze_start_up_heap,
    llm_call_counters,
    loop_consumer,
    loop_producer,
    loop_settings,
    stop_consumer,
)
from consumer.taxonomy import Handler, Taxonomy, load_taxonomy

log = logging.getLogger("ticket_router")

PORT_SETTING = "DRAFT_METRICS_PORT"


@dataclass
class RunningDrafter:
    """Handles on a running drafter, for tests that run it in-process."""

    loop: KafkaLoop
    metrics: DraftMetrics
    http_port: int
    topics: list[str]
    """The queue topics it reads."""


def build_plans(settings: Settings, handlers: Sequence[Handler]) -> dict[str, DraftPlan]:
    """Per handler: model, system prompt, request parameters, price and version, checked at start-up.

    Thinking and effort are the tier's (``FAST_THINKING``, ``STRONG_EFFORT``, …, validated against
    the model in ``Settings``); ``max_tokens`` is the reply's room plus the model's thinking
    allowance when it thinks, as for classification. A model without a price stops the start-up.
    """
    plans: dict[str, DraftPlan] = {}
    for handler in handlers:
        tier = handler_tier(handler, settings.draft_tier)
        model = settings.model_for(tier)
        classify = settings.tier_request(tier)
        request = resolve_tier_request(
            tier.upper(),
            model,
            classify.thinking,
            classify.effort,
            None,
            handler_answer_tokens(handler, settings.draft_max_tokens),
        )
        params = draft_params(request)
        plans[handler.name] = DraftPlan(
            handler=handler,
            tier=tier,
            model=model,
            system=draft_system(handler, settings.prompt_cache_ttl),
            params=params,
            price=price_for(model, settings.prices),
            version=handler_version(handler, model, params),
        )
    return plans


def queue_topics(settings: Settings, taxonomy: Taxonomy) -> list[str]:
    """Every queue topic the routing can produce (critical, priority and urgent ones included)."""
    return [settings.queue_topic_prefix + queue for queue in reachable_queues(taxonomy)]


def check_drafter_settings(settings: Settings, taxonomy: Taxonomy) -> None:
    """What makes drafting impossible stops the start-up with one line naming what to set."""
    if settings.anthropic_api_key is None:
        raise UserError("ANTHROPIC_API_KEY is unset: ticket-router draft writes its drafts with Claude")
    if settings.draft_deadline_s > settings.drain_timeout_s:
        # A draft still being written when SIGTERM's drain ends is cancelled and written (and paid
        # for) again after the redelivery, so it must be able to finish within the drain. Checked
        # here, not in Settings: the router shares the settings and never drafts.
        raise UserError(
            f"DRAFT_DEADLINE_S: {settings.draft_deadline_s:g} must not exceed DRAIN_TIMEOUT_S "
            f"({settings.drain_timeout_s:g}): a draft must be able to finish in a drain"
        )
    if not taxonomy.handlers:
        origin = str(settings.taxonomy_path) if settings.taxonomy_path else "the bundled taxonomy"
        raise UserError(
            f"TAXONOMY_PATH: {origin} has no handlers (add a 'handlers:' section; see README "
            "'Drafted replies')"
        )


def api_probe(client: anthropic.AsyncAnthropic, plans: dict[str, DraftPlan]) -> ClaudeApiProbe:
    """The router's Claude API check (a free ``count_tokens`` call per model) for the drafter's models."""

    def check(plan: DraftPlan) -> Callable[[], Any]:
        async def call() -> object:
            return await client.messages.count_tokens(
                model=plan.model,
                system=cast(Any, plan.system),
                messages=[{"role": "user", "content": "ticket"}],
                timeout=5.0,
            )

        return call

    by_model = {plan.model: plan for plan in plans.values()}
    return ClaudeApiProbe({model: check(plan) for model, plan in by_model.items()}, claude_api_problem)


def log_draft(record: InputRecord, outcome: Outcome, elapsed: float) -> None:
    """One log line per record: what was drafted, skipped or triaged (never the ticket's or reply's text)."""
    fields: dict[str, object] = {
        "ticket_id": outcome.ticket_id,
        "outcome": outcome.kind,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "latency_ms": round(elapsed * 1000, 2),
    }
    if isinstance(outcome, DraftOutcome):
        fields["handler"] = outcome.handler
        if outcome.draft is not None:
            fields.update(model=outcome.draft.model, cost_usd=outcome.draft.cost_usd)
    if outcome.kind == "triaged" and outcome.triage is not None:
        fields.update(error_kind=str(outcome.error_kind), reason=outcome.triage.message)
    elif outcome.kind == "skipped":
        fields["reason"] = outcome.skip_reason
    log.info("draft %s", "published" if outcome.kind == "routed" else outcome.kind, extra=fields)


async def run_drafter(
    settings: Settings,
    bootstrap_servers: str,
    stop: asyncio.Event,
    on_started: Callable[[RunningDrafter], None] | None = None,
    extra_hooks: list[OutcomeHook] | None = None,
) -> None:
    """Run until ``stop`` is set; drains, commits and closes everything before returning."""
    taxonomy = load_taxonomy(settings.taxonomy_path)
    check_drafter_settings(settings, taxonomy)
    set_default_redaction(settings.redaction_policy)  # drafts follow REDACT like every prompt
    plans = build_plans(settings, taxonomy.handlers)
    metrics = DraftMetrics()
    zero_draft_series(metrics, {plan.handler.name: plan.model for plan in plans.values()})
    versions = ",".join(sorted({plan.version for plan in plans.values()}))
    metrics.info.labels(__version__, versions, ",".join(sorted({plan.tier for plan in plans.values()}))).set(
        1
    )
    on_request, on_retry = llm_call_counters(metrics)
    client = make_client(settings)
    writer = DraftWriter(
        client,
        RetryPolicy(settings.llm_max_attempts, settings.llm_backoff_initial_s, settings.llm_backoff_max_s),
        deadline_s=settings.draft_deadline_s,
        body_char_limit=settings.body_char_limit,
        on_request=on_request,
        on_retry=on_retry,
    )
    processor = DraftProcessor(
        DraftConfig(
            drafts_topic=settings.drafts_topic,
            triage_topic=settings.triage_topic,
            max_record_bytes=fetch_bytes_for(settings),
            drafter_version=__version__,
        ),
        taxonomy.handlers,
        plans,
        writer,
        metrics,
        RecentIds(settings.dedup_window),
    )
    probe = api_probe(client, plans)
    try:
        await _serve(
            settings, bootstrap_servers, stop, taxonomy, processor, metrics, probe, on_started, extra_hooks
        )
    finally:
        await probe.close()
        await writer.close()


async def _serve(
    settings: Settings,
    bootstrap_servers: str,
    stop: asyncio.Event,
    taxonomy: Taxonomy,
    processor: DraftProcessor,
    metrics: DraftMetrics,
    probe: ClaudeApiProbe,
    on_started: Callable[[RunningDrafter], None] | None,
    extra_hooks: list[OutcomeHook] | None,
) -> None:
    problem = await probe.check()
    if problem is not None:
        log.error(
            "Claude API check failed: %s; drafts go to %s after their retries until it answers",
            problem,
            settings.triage_topic,
            extra={"claude_api": problem},
        )
    options = client_options(settings, bootstrap_servers)
    topics = queue_topics(settings, taxonomy)
    if settings.create_topics:
        created = await ensure_topics(
            [*topics, settings.drafts_topic, settings.triage_topic],
            settings.topic_partitions,
            settings.topic_replication_factor,
            options,
        )
        if created:
            log.info("created %d topics", len(created), extra={"topics": created})
    consumer = loop_consumer(settings, options, settings.drafter_group)
    producer = loop_producer(settings, options)
    loop = KafkaLoop(
        loop_settings(settings, settings.draft_max_in_flight),
        consumer,
        producer,
        processor,
        metrics,
        on_outcome=fan_out([log_draft, *(extra_hooks or [])]),
    )
    loop_task: asyncio.Task[None] | None = None
    runner: web.AppRunner | None = None
    try:
        runner, http_port = await start_metrics(
            build_app(metrics, loop.state, lambda: loop_task, BrokerProbe(consumer.topics), probe), settings
        )
        await producer.start()
        consumer.subscribe(topics, listener=loop.listener)
        await consumer.start()
        log.info(
            "drafting for %d queue topics as group %s, publishing to %s",
            len(topics),
            settings.drafter_group,
            settings.drafts_topic,
            extra={"handlers": [handler.name for handler in taxonomy.handlers], "http_port": http_port},
        )
        freeze_start_up_heap()
        loop_task = asyncio.create_task(loop.run(stop), name="draft-loop")
        if on_started is not None:
            on_started(RunningDrafter(loop, metrics, http_port, topics))
        await loop_task
    finally:
        await stop_consumer(consumer, joined=loop_task is not None)
        await producer.stop()
        if runner is not None:
            await runner.cleanup()
        log.info("drafter stopped")


async def start_metrics(app: web.Application, settings: Settings) -> tuple[web.AppRunner, int]:
    """The health server on ``DRAFT_METRICS_PORT``; a port that cannot be bound is blamed on it."""
    return await start_http(app, settings.metrics_host, settings.draft_metrics_port, PORT_SETTING)
