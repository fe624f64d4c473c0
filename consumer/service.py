"""Assembles the service from its settings and runs it until SIGTERM/SIGINT.

Start-up order matters for operators: configuration and the taxonomy are checked (and the local
model trained) before any connection is made, so a bad config fails fast with one line; topics
are created before the consumer joins, so nothing is published to a topic that does not exist.

With ``shadow`` set (``consume --shadow NAME``) the same service is a candidate: its own consumer
group on the same input, every decision published to ``shadow.NAME`` and nowhere else, its
metrics labelled ``shadow="NAME"``, and no queue or triage topic created.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumer import __version__
from consumer.api.classify import Classifier
from consumer.api.explain import Explainer, build_explainer
from consumer.api.health import BrokerProbe, ClaudeApiProbe, api_problem, build_app, start_http
from consumer.api.ingest import start_ingest
from consumer.classify.base import Tier
from consumer.classify.budget import SpendGuard, budget_windows
from consumer.classify.language import EnglishDetector
from consumer.classify.local import (
    LabeledText,
    LocalModel,
    LocalTier,
    fit_local_model,
    read_training_jsonl,
    train_local_model,
)
from consumer.classify.pipeline import Pipeline
from consumer.classify.prompt import set_default_redaction
from consumer.config import Settings
from consumer.console.app import Console
from consumer.console.wiring import running_console
from consumer.errors import UserError
from consumer.kafka.connection import client_options
from consumer.kafka.dedup import RecentIds
from consumer.kafka.loop import KafkaLoop, LoopSettings, OutcomeHook
from consumer.kafka.recovery import RecoveringConsumer
from consumer.kafka.topics import KEEP_FOREVER, ensure_topics, topics_to_create
from consumer.learn.corrections import RecentDecisions, decision_of, triaged_decision
from consumer.learn.dense import dense_encoder
from consumer.learn.learner import CorrectionLearner, LearnerParts
from consumer.learn.store import ExampleStore
from consumer.metrics import Metrics, ShadowMetrics, known_labels, zero_series
from consumer.processing import InputRecord, Outcome, ProcessorConfig, RecordProcessor
from consumer.taxonomy import Taxonomy, load_taxonomy
from schemas.shadow import shadow_group, shadow_name_problem, shadow_topic

if TYPE_CHECKING:
    from consumer.classify.claude import ClaudeTier

log = logging.getLogger("ticket_router")

FETCH_BYTES_HEADROOM = 2
DEFAULT_API_URL = "https://api.anthropic.com"
REBALANCE_MARGIN_S = 5.0
UNJOINED_STOP_S = 0.5


def build_tiers(settings: Settings, taxonomy: Taxonomy, metrics: Metrics | None = None) -> list[Tier]:
    """The configured tiers; with ``metrics``, Claude calls and retries are counted there.

    The Claude tiers share one set of labeled examples: the static ones in the cached prompt, and
    the example store that puts the most similar ones before each ticket.
    """
    claude = [name for name in settings.effective_tiers if name != "local"]
    by_name = dict(zip(claude, build_claude_tiers(settings, taxonomy, claude, metrics), strict=True))
    for name in settings.effective_tiers:
        if name == "local":
            by_name[name] = LocalTier(
                train_local_model(
                    taxonomy,
                    settings.local_training_path,
                    dense_encoder(settings.dense_encoder),
                    settings.local_model_cache,
                )
            )
    return [by_name[name] for name in settings.effective_tiers]


def build_claude_tiers(
    settings: Settings, taxonomy: Taxonomy, names: list[str], metrics: Metrics | None
) -> list[Tier]:
    """The fast and/or strong tiers; nothing (and no SDK import) without them."""
    if not names:
        return []
    from consumer.classify.claude import build_claude_tier, load_examples
    from consumer.learn.retriever import build_retriever

    examples = load_examples(settings.local_training_path)
    retriever = build_retriever(
        examples,
        taxonomy,
        settings.retrieved_examples,
        settings.retrieval_min_similarity,
        settings.dense_encoder,
        settings.retrieved_per_label,
    )
    on_request, on_retry = llm_call_counters(metrics) if metrics is not None else (None, None)
    on_redact = metrics.record_redactions if metrics is not None else None
    return [
        build_claude_tier(
            name,
            settings,
            taxonomy,
            examples=examples,
            on_request=on_request,
            on_retry=on_retry,
            retriever=retriever,
            retrieval=retriever.signature if retriever is not None else "",
            on_redact=on_redact,
        )
        for name in names
    ]


async def check_models(settings: Settings, tiers: list[Tier]) -> ClaudeApiProbe | None:
    """Start-up advice on the configured models, and the start-up check that the Claude API answers.

    Retired models and invalid thinking/effort settings already stopped the start-up in
    ``Settings``; legacy models are worth a log line. Each Claude model's prompt is measured with
    one ``count_tokens`` call, which is also the API check: a router whose every ticket would end
    in triage after its retries says so at start-up, at ERROR, and /readyz reports it until the
    API answers. Returns the probe that /readyz re-checks with, or None without Claude tiers.
    """
    for warning in settings.model_warnings():
        log.warning(warning)
    if not any(name in ("fast", "strong") for name in settings.effective_tiers):
        return None
    from consumer.classify.claude import ClaudeTier, measure_system_prompt

    claude_tiers = [tier for tier in tiers if isinstance(tier, ClaudeTier)]
    probe = ClaudeApiProbe(
        {tier.model: tier.count_prompt_tokens for tier in claude_tiers}, claude_api_problem
    )
    await asyncio.gather(*(measure_system_prompt(_CheckedTier(tier, probe)) for tier in claude_tiers))
    problem = probe.problem
    if problem is not None:
        log.error(
            "Claude API check failed at %s: %s; tickets go to %s after their retries until it "
            "answers (/readyz reports it)",
            settings.anthropic_base_url or DEFAULT_API_URL,
            problem,
            settings.triage_topic,
            extra={"claude_api": problem},
        )
    return probe


class _CheckedTier:
    """A Claude tier as ``measure_system_prompt`` sees it (``model``, ``count_prompt_tokens``), whose
    call goes through the API probe, so measuring the prompt is also the start-up API check."""

    def __init__(self, tier: ClaudeTier, probe: ClaudeApiProbe) -> None:
        self.model = tier.model
        self._probe = probe

    async def count_prompt_tokens(self) -> int:
        return cast(int, await self._probe.call(self.model))


def claude_api_problem(exc: BaseException) -> str | None:
    """The probe's reading of a failed check call (None: the API answered, e.g. a plain 429)."""
    from consumer.classify.claude import failure_from_exception

    if isinstance(exc, TimeoutError):
        return "unreachable: no answer in time"
    failure = failure_from_exception(exc)
    if failure is None:
        return f"failing: {type(exc).__name__}"
    return api_problem(failure)


def llm_call_counters(metrics: Metrics) -> tuple[Callable[[str, str], None], Callable[[str, str], None]]:
    """(on_request, on_retry) hooks for the Claude tiers: llm_requests{model,status}, llm_retries."""

    def on_request(model: str, status: str) -> None:
        metrics.child(metrics.llm_requests, model, status).inc()

    def on_retry(model: str, reason: str) -> None:
        metrics.llm_retries.labels(model, reason).inc()

    return on_request, on_retry


def prompt_version_of(tiers: list[Tier], taxonomy: Taxonomy) -> str:
    """The Claude tiers' prompt hash when there are any, else the taxonomy's fingerprint."""
    for tier in tiers:
        version = getattr(tier, "prompt_version", None)
        if isinstance(version, str):
            return version
    return f"tx-{taxonomy.fingerprint()}"


def spend_guard(settings: Settings) -> SpendGuard | None:
    """The guard of LLM_BUDGET_USD_PER_HOUR/_PER_DAY (this replica's share), or None without one."""
    windows = budget_windows(
        settings.llm_budget_usd_per_hour, settings.llm_budget_usd_per_day, settings.llm_budget_replicas
    )
    if not windows or not any(name in ("fast", "strong") for name in settings.effective_tiers):
        return None
    return SpendGuard(windows)


def build_pipeline(
    settings: Settings, taxonomy: Taxonomy, tiers: list[Tier], budget: SpendGuard | None = None
) -> Pipeline:
    detector = (
        EnglishDetector() if "strong" in settings.effective_tiers and settings.non_english_to_strong else None
    )
    return Pipeline(
        tiers,
        taxonomy.thresholds(),
        tier_thresholds={"local": taxonomy.thresholds("local")},
        low_confidence_action=settings.low_confidence_action,
        non_english_to_strong=settings.non_english_to_strong,
        deadline_s=settings.ticket_deadline_s,
        is_english=detector.is_english if detector else (lambda _ticket: True),
        budget=budget,
    )


def remember_decisions(decisions: RecentDecisions, triage_topic: str) -> OutcomeHook:
    """Keep each decision's text and labels, so a correction that names only the event can teach."""

    def hook(_record: InputRecord, outcome: Outcome, _elapsed: float) -> None:
        if outcome.kind == "routed" and outcome.routed is not None:
            decisions.remember(outcome.routed.ticket.event_id, decision_of(outcome.routed))
        elif outcome.kind == "triaged" and outcome.ticket is not None:
            triage = outcome.triage
            decision = triaged_decision(
                outcome.ticket,
                triage.partial_classification if triage is not None else None,
                triage_topic,
                triage.message if triage is not None else "",
                tuple(triage.tiers_tried) if triage is not None else (),
            )
            decisions.remember(outcome.ticket.event_id, decision)

    return hook


def example_store_of(tiers: list[Tier]) -> ExampleStore | None:
    """The store the Claude tiers retrieve from (one, shared), or None without retrieval."""
    for tier in tiers:
        store = getattr(getattr(tier, "retriever", None), "store", None)
        if isinstance(store, ExampleStore):
            return store
    return None


def build_learner(
    settings: Settings,
    taxonomy: Taxonomy,
    tiers: list[Tier],
    decisions: RecentDecisions,
    metrics: Metrics,
    shadow: bool = False,
) -> CorrectionLearner | None:
    """The corrections learner, or None when ``LEARN_FROM_CORRECTIONS`` is off; a shadow's learns
    without counting or republishing corrections."""
    if not settings.learn_from_corrections:
        return None
    local = next((tier for tier in tiers if isinstance(tier, LocalTier)), None)
    dense = dense_encoder(settings.dense_encoder) if local is not None else None
    base: list[LabeledText] = read_training_jsonl(settings.local_training_path) if local is not None else []

    def refit(examples: Sequence[LabeledText]) -> LocalModel:
        return fit_local_model(taxonomy, examples, dense, settings.local_model_cache)

    parts = LearnerParts(
        topic=settings.corrections_topic,
        taxonomy=taxonomy,
        decisions=decisions,
        store=example_store_of(tiers),
        local=local,
        base_training=base,
        refit=refit,
        retrain_after=settings.retrain_after,
        metrics=metrics,
        shadow=shadow,
    )
    return CorrectionLearner(parts, producer=None)


def log_outcome(log_text: bool, shadow: str | None = None) -> OutcomeHook:
    def hook(record: InputRecord, outcome: Outcome, elapsed: float) -> None:
        fields: dict[str, object] = {"shadow": shadow} if shadow is not None else {}
        fields |= {
            "ticket_id": outcome.ticket_id,
            "outcome": outcome.kind,
            "partition": record.partition,
            "offset": record.offset,
            "latency_ms": round(elapsed * 1000, 2),
        }
        if outcome.kind == "routed" and outcome.routed is not None:
            fields.update(
                queue=outcome.queue, tier=outcome.routed.tiers_tried[-1], cost_usd=outcome.routed.cost_usd
            )
        elif outcome.kind == "triaged":
            fields.update(
                error_kind=str(outcome.error_kind), reason=outcome.triage.message if outcome.triage else ""
            )
        else:
            fields.update(reason=outcome.skip_reason)
        if log_text and outcome.ticket is not None:
            fields.update(subject=outcome.ticket.subject, body=outcome.ticket.body)
        log.info("ticket %s", outcome.kind, extra=fields)

    return hook


def freeze_start_up_heap() -> None:
    """Exclude everything built at start-up from garbage collection from now on.

    Imports (the SDK, aiokafka, scikit-learn), the trained local model and the prompt are some
    250,000 objects that live as long as the process. Python's collector would walk them again in
    every full collection (about 110 ms each, here) and in part on each younger one; frozen, they
    are skipped. Collected first, so nothing that was already garbage is kept forever.
    """
    gc.collect()
    gc.freeze()


def fan_out(hooks: list[OutcomeHook]) -> OutcomeHook:
    def call_all(record: InputRecord, outcome: Outcome, elapsed: float) -> None:
        for hook in hooks:
            hook(record, outcome, elapsed)

    return call_all


@dataclass
class RunningService:
    """Handles on a running service, for the demo and for tests that run it in-process."""

    loop: KafkaLoop
    metrics: Metrics
    http_port: int
    claude: ClaudeApiProbe | None = None
    """Whether the Claude API answers; None when no tier uses it."""
    learner: CorrectionLearner | None = None
    """What corrections taught this instance; None with ``LEARN_FROM_CORRECTIONS=false``."""
    api_port: int | None = None
    """The ingestion API's bound port; None when API_PORT is unset (or for a shadow)."""
    console: Console | None = None
    """The triage console on the API's port; None unless CONSOLE_USERS or CONSOLE_TRUSTED_HEADER is set."""


def record_outcome_metrics(metrics: Metrics) -> OutcomeHook:
    def hook(_record: InputRecord, outcome: Outcome, _elapsed: float) -> None:
        if outcome.result is not None:
            metrics.record_tiers(outcome.result)
        if outcome.kind == "routed" and outcome.routed is not None and outcome.result is not None:
            metrics.record_routed(outcome.routed.queue, outcome.routed.rule, outcome.result)
            if outcome.routed.reclassification:
                metrics.reclassified.inc()
        elif outcome.kind == "triaged":
            metrics.child(metrics.triaged, str(outcome.error_kind)).inc()
        else:
            metrics.child(metrics.skipped, outcome.skip_reason or "other").inc()

    return hook


def topics_of(settings: Settings, taxonomy: Taxonomy, shadow: str | None) -> list[str]:
    """The topics this instance reads and publishes to: a shadow's are the input and its own."""
    if shadow is None:
        return topics_to_create(settings, taxonomy)
    return [settings.input_topic, shadow_topic(shadow)]


def check_shadow_name(shadow: str | None) -> None:
    """A name that cannot be part of a topic name stops the start-up with one line."""
    problem = shadow_name_problem(shadow) if shadow is not None else None
    if problem is not None:
        raise UserError(f"--shadow {shadow!r}: {problem}")


def fetch_bytes_for(settings: Settings) -> int:
    """Room for the largest record the loop must read, with headroom over MAX_EVENT_BYTES."""
    return max(1_048_576, settings.max_event_bytes * FETCH_BYTES_HEADROOM)


def loop_consumer(settings: Settings, options: dict[str, Any], group: str) -> AIOKafkaConsumer:
    """The consumer a ``KafkaLoop`` reads with (the router's, a shadow's, the drafter's): manual
    commits only, and group timeouts that let a drain finish before the member rejoins. A member
    still unassigned a rebalance timeout plus a session after its revoke checks whether the group
    can form at all (``RecoveringConsumer``: Tansu can keep a departed leader)."""
    fetch_bytes = fetch_bytes_for(settings)
    # Revoked partitions are drained (up to DRAIN_TIMEOUT_S) before the member rejoins; the
    # coordinator must wait that long, or the drain costs the member its place in the group.
    rebalance_timeout_ms = int((settings.drain_timeout_s + REBALANCE_MARGIN_S) * 1000)
    return RecoveringConsumer(
        **options,
        stuck_after_s=(rebalance_timeout_ms + settings.session_timeout_ms) / 1000,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        rebalance_timeout_ms=rebalance_timeout_ms,
        max_partition_fetch_bytes=fetch_bytes,
        fetch_max_bytes=max(fetch_bytes, 52_428_800),
    )


def loop_producer(settings: Settings, options: dict[str, Any]) -> AIOKafkaProducer:
    """The producer a ``KafkaLoop`` publishes outcomes with: ``acks=all``, since an offset is
    committed only once its outcome is acknowledged."""
    return AIOKafkaProducer(
        **options,
        acks="all",
        linger_ms=5,
        max_batch_size=1_048_576,
        max_request_size=fetch_bytes_for(settings) + 262_144,
        enable_idempotence=False,
    )


def loop_settings(settings: Settings, max_in_flight: int) -> LoopSettings:
    """The loop's budget, commit cadence and drain from settings; the keep-alive poll comes at a
    quarter of ``MAX_POLL_INTERVAL_MS``, well before the group would drop the member."""
    return LoopSettings(
        max_in_flight=max_in_flight,
        commit_interval_s=settings.commit_interval_ms / 1000,
        drain_timeout_s=settings.drain_timeout_s,
        lag_refresh_s=settings.lag_refresh_s,
        keepalive_s=settings.max_poll_interval_ms / 1000 / 4,
    )


async def run_service(
    settings: Settings,
    bootstrap_servers: str,
    stop: asyncio.Event,
    on_started: Callable[[RunningService], None] | None = None,
    extra_hooks: list[OutcomeHook] | None = None,
    shadow: str | None = None,
) -> None:
    """Run until ``stop`` is set; drains, commits and closes everything before returning.

    ``shadow`` names a candidate: see the module's docstring."""
    check_shadow_name(shadow)
    taxonomy = load_taxonomy(settings.taxonomy_path)
    metrics = Metrics() if shadow is None else ShadowMetrics(shadow)
    set_default_redaction(settings.redaction_policy)  # explanations follow REDACT too
    tiers = build_tiers(settings, taxonomy, metrics)
    claude = await check_models(settings, tiers)
    if "local" in settings.effective_tiers and settings.anthropic_api_key is None:
        log.info("using the local tier only: ANTHROPIC_API_KEY is unset")
    budget = spend_guard(settings)
    if budget is not None:
        metrics.watch_budget(budget)
    pipeline = build_pipeline(settings, taxonomy, tiers, budget)
    prompt_version = prompt_version_of(tiers, taxonomy)
    metrics.info.labels(__version__, prompt_version, ",".join(settings.effective_tiers)).set(1)
    models = [model for _, model in settings.model_settings()]
    zero_series(metrics, known_labels(taxonomy, settings.effective_tiers, models, settings.input_topic))
    processor = RecordProcessor(
        ProcessorConfig.of(settings, prompt_version, shadow),
        taxonomy,
        pipeline,
        RecentIds(settings.dedup_window),
    )
    options = client_options(settings, bootstrap_servers)
    if settings.create_topics:
        created = await ensure_topics(
            topics_of(settings, taxonomy, shadow),
            settings.topic_partitions,
            settings.topic_replication_factor,
            options,
        )
        if settings.learn_from_corrections:
            created += await ensure_topics(
                [settings.corrections_topic],
                settings.topic_partitions,
                settings.topic_replication_factor,
                options,
                KEEP_FOREVER,
            )
        if created:
            log.info("created %d topics", len(created), extra={"topics": created})
    group = settings.consumer_group if shadow is None else shadow_group(settings.consumer_group, shadow)
    consumer = loop_consumer(settings, options, group)
    producer = loop_producer(settings, options)
    decisions = RecentDecisions(settings.recent_decisions)
    learner = build_learner(settings, taxonomy, tiers, decisions, metrics, shadow=shadow is not None)
    learner_consumer = (
        AIOKafkaConsumer(**options, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest")
        if learner is not None
        else None
    )
    hooks = [
        record_outcome_metrics(metrics),
        log_outcome(settings.log_ticket_text, shadow),
        remember_decisions(decisions, settings.triage_topic),
        *(extra_hooks or []),
    ]
    loop = KafkaLoop(
        loop_settings(settings, settings.max_in_flight),
        consumer,
        producer,
        processor,
        metrics,
        on_outcome=fan_out(hooks),
    )
    loop_task: asyncio.Task[None] | None = None
    learner_task: asyncio.Task[None] | None = None
    runner: web.AppRunner | None = None
    api_runner: web.AppRunner | None = None
    api_port: int | None = None
    explainer: Explainer | None = None
    console: Console | None = None
    console_exits = contextlib.AsyncExitStack()
    try:
        runner, http_port = await start_http(
            build_app(metrics, loop.state, lambda: loop_task, BrokerProbe(consumer.topics), claude),
            settings.metrics_host,
            settings.metrics_port,
        )
        await producer.start()
        if settings.api_port is not None and shadow is None:  # a shadow publishes only its decisions
            explainer = build_explainer(settings, taxonomy, decisions, options, metrics, pipeline.budget)
            classifier = Classifier(
                pipeline.classify, taxonomy, settings.queue_topic_prefix, settings.triage_topic, metrics
            )
            if settings.console_enabled:
                console = await console_exits.enter_async_context(
                    running_console(
                        settings, taxonomy, prompt_version, producer, metrics, explainer, options, stop
                    )
                )
            api_runner, api_port = await start_ingest(
                settings,
                settings.api_port,
                producer,
                metrics,
                classifier,
                explainer,
                console.app() if console is not None else None,
            )
        if learner is not None and learner_consumer is not None:
            learner.producer = producer
            await learner_consumer.start()
            learner_task = asyncio.create_task(learner.run(learner_consumer, stop), name="corrections")
        consumer.subscribe([settings.input_topic], listener=loop.listener)
        await consumer.start()
        log.info(
            "consuming %s as group %s%s",
            settings.input_topic,
            group,
            f", publishing to {shadow_topic(shadow)} only" if shadow is not None else "",
            extra={
                **({"shadow": shadow} if shadow is not None else {}),
                "tiers": settings.effective_tiers,
                "prompt_version": prompt_version,
                "http_port": http_port,
                **({"api_port": api_port} if api_port is not None else {}),
            },
        )
        freeze_start_up_heap()
        loop_task = asyncio.create_task(loop.run(stop), name="kafka-loop")
        if on_started is not None:
            on_started(RunningService(loop, metrics, http_port, claude, learner, api_port, console))
        await loop_task
    finally:
        if api_runner is not None:  # first: no request may be accepted once the producer stops
            await api_runner.cleanup()
        await console_exits.aclose()  # before the producer it publishes with stops
        if explainer is not None:
            await explainer.close()
        if learner_task is not None:
            learner_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await learner_task
        if learner_consumer is not None:
            await learner_consumer.stop()
        if claude is not None:
            await claude.close()
        await stop_consumer(consumer, joined=loop_task is not None)
        await producer.stop()
        await pipeline.close()
        if runner is not None:
            await runner.cleanup()
        log.info("stopped")


async def stop_consumer(consumer: AIOKafkaConsumer, joined: bool) -> None:
    """Stop the consumer; if it never finished joining its group, without waiting for the join.

    aiokafka's ``stop()`` first lets an unfinished JoinGroup round end (half the session timeout
    on Tansu, longer while other members drain), so a start-up cancelled by Ctrl-C would wait for
    a membership it is giving up. A member that never joined has nothing to commit: its stop is
    bounded instead, and the broker forgets it when its session times out.
    """
    if joined:
        await consumer.stop()
        return
    try:
        await asyncio.wait_for(consumer.stop(), UNJOINED_STOP_S)
    except TimeoutError:
        # The cut-short stop() leaves the client's connections open, and Tansu's own SIGTERM
        # waits for its clients to hang up; aiokafka has no public call for just this step.
        await consumer._client.close()


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
