"""Prometheus metrics: the names here are the ones the dashboard and alert rules may use.

Labels are bounded: queue, rule, axis and label values come from the taxonomy, tiers and error
kinds are closed sets, partitions are the input topic's. A ticket id never becomes a label.
Each service instance owns a registry, so several routers can live in one test process.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from consumer.classify.budget import WINDOW_SECONDS, SpendGuard
from consumer.classify.pipeline import PipelineResult
from consumer.classify.redact import KINDS as REDACT_KINDS
from consumer.classify.retry import RETRY_REASONS
from consumer.learn.corrections import READ_OUTCOMES, RETRAIN_RESULTS
from consumer.processing import SKIP_DUPLICATE, SKIP_REASONS, OutcomeKind
from consumer.routing import reachable_routes
from consumer.taxonomy import Taxonomy
from schemas.corrections import CorrectionSource
from schemas.events import ErrorKind, TierAttempt, TokenUsage

PREFIX = "ticket_router_"
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)


class Metrics:
    def __init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            PREFIX + "events_consumed", "Records read from the input topic", ["topic"], registry=r
        )
        self.routed = Counter(
            PREFIX + "tickets_routed", "Tickets published to a queue", ["queue", "rule"], registry=r
        )
        self.labels = Counter(
            PREFIX + "classified_labels", "Labels of routed tickets per axis", ["axis", "label"], registry=r
        )
        self.triaged = Counter(
            PREFIX + "tickets_triaged", "Tickets sent to needs-human-triage", ["error_kind"], registry=r
        )
        self.skipped = Counter(
            PREFIX + "tickets_skipped",
            "Records committed without classification (agent replies, duplicates)",
            ["reason"],
            registry=r,
        )
        self.reclassified = Counter(
            PREFIX + "reclassifications", "Customer follow-ups classified again", registry=r
        )
        self.tier_outcomes = Counter(
            PREFIX + "tier_outcomes", "What each tier concluded per ticket", ["tier", "outcome"], registry=r
        )
        self.final_tier = Counter(
            PREFIX + "final_tier", "The tier whose answer routed the ticket", ["tier"], registry=r
        )
        self.escalations = Counter(
            PREFIX + "escalations",
            "Tickets passed from one tier to the next",
            ["from_tier", "to_tier"],
            registry=r,
        )
        self.confidence = Histogram(
            PREFIX + "confidence",
            "Confidence of routed answers per axis",
            ["axis"],
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.tier_latency = Histogram(
            PREFIX + "tier_latency_seconds",
            "Time spent in one tier per ticket",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.processing_latency = Histogram(
            PREFIX + "processing_latency_seconds",
            "Record fetched to outcome published",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_requests = Counter(
            PREFIX + "llm_requests", "Messages API calls by result", ["model", "status"], registry=r
        )
        self.llm_retries = Counter(
            PREFIX + "llm_retries", "Messages API calls retried", ["model", "reason"], registry=r
        )
        self.llm_tokens = Counter(
            PREFIX + "llm_tokens",
            "Tokens billed, by kind (input, output, cache_read, cache_write; thinking is part of output)",
            ["model", "kind"],
            registry=r,
        )
        # Its own family, not a kind of llm_tokens: it is part of kind="input", and summing the kinds
        # must keep giving the billed total.
        self.llm_retrieved_tokens = Counter(
            PREFIX + "llm_retrieved_tokens",
            "Of input tokens, the estimated tokens of the retrieved similar examples sent with tickets",
            ["model"],
            registry=r,
        )
        self.llm_cost = Counter(PREFIX + "llm_cost_usd", "Estimated spend in USD", ["model"], registry=r)
        self.in_flight = Gauge(PREFIX + "in_flight", "Records being processed", registry=r)
        self.paused_partitions = Gauge(
            PREFIX + "paused_partitions",
            "Partitions paused for a keep-alive poll (the in-flight budget stayed full)",
            registry=r,
        )
        self.commit_latency = Histogram(
            PREFIX + "commit_latency_seconds",
            "Offset commit round trips",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commits = Counter(PREFIX + "commits", "Offset commits by result", ["result"], registry=r)
        self.publish_errors = Counter(
            PREFIX + "publish_errors", "Publishes that failed and were retried", ["topic_kind"], registry=r
        )
        self.consumer_lag = Gauge(
            PREFIX + "consumer_lag", "Highwater minus committed offset", ["topic", "partition"], registry=r
        )
        self.rebalances = Counter(PREFIX + "rebalances", "Partition assignment changes", ["kind"], registry=r)
        self.assigned_partitions = Gauge(
            PREFIX + "assigned_partitions", "Input partitions owned by this instance", registry=r
        )
        self.ready = Gauge(PREFIX + "ready", "1 when /readyz would answer 200", registry=r)
        # The ingestion API (API_PORT): route is the matched route's path (or "unmatched"), so bounded.
        self.api_requests = Counter(
            PREFIX + "api_requests", "Ingestion API requests by answer", ["route", "status"], registry=r
        )
        self.api_accepted_tickets = Counter(
            PREFIX + "api_accepted_tickets",
            "Tickets the ingestion API produced, once the broker acknowledged them (not repeated event ids)",
            registry=r,
        )
        self.api_classifications = Counter(
            PREFIX + "api_classifications",
            "POST /v1/classify answers by outcome (routed, triage, busy); model spend is in the tier metrics",
            ["outcome"],
            registry=r,
        )
        self.api_explanations = Counter(
            PREFIX + "api_explanations",
            "GET /v1/explain requests by outcome "
            "(streamed, not_found, bad_request, busy, model_error, unavailable)",
            ["outcome"],
            registry=r,
        )
        self.api_explanation_cost = Counter(
            PREFIX + "api_explanation_cost_usd", "Model spend on explanations, USD", registry=r
        )
        # Counted by the replica that routed the corrected ticket (it knows what it decided), once:
        # per routed ticket, the production error rate of each axis.
        self.corrections = Counter(
            PREFIX + "corrections",
            "Fields people corrected on tickets this instance routed: what it said, what they said",
            ["field", "from_label", "to_label", "source"],
            registry=r,
        )
        self.corrections_read = Counter(
            PREFIX + "corrections_read",
            "Corrections read, by what became of them (learned, no_text, incomplete, unknown_label, "
            "invalid, duplicate)",
            ["outcome"],
            registry=r,
        )
        self.learned_examples = Gauge(
            PREFIX + "learned_examples", "Labeled examples learned from corrections", registry=r
        )
        self.local_retrains = Counter(
            PREFIX + "local_model_retrains",
            "Local tier refits on corrections, by result",
            ["result"],
            registry=r,
        )
        self.info = Gauge(
            PREFIX + "build_info",
            "Versions in use",
            ["router_version", "prompt_version", "tiers"],
            registry=r,
        )
        # The triage console (consumer/console/): what people decided, and sign-ins.
        self.console_decisions = Counter(
            PREFIX + "console_decisions",
            "Console decisions by outcome (routed: published to a queue; confirmed: a low-confidence "
            "route kept; pending: published, not yet read back; lost: another person decided the "
            "record first; failed: nothing published)",
            ["outcome"],
            registry=r,
        )
        self.console_sign_ins = Counter(
            PREFIX + "console_sign_ins",
            "Console sign-in attempts by result (ok, refused, rate_limited)",
            ["result"],
            registry=r,
        )

        # What the Claude tiers were not shown, and the spend guard (consumer/classify/redact.py, budget.py)
        self.redactions = Counter(
            PREFIX + "redactions",
            "Values replaced by placeholders in user turns sent to Claude, by kind (per tier call)",
            ["kind"],
            registry=r,
        )
        for kind in REDACT_KINDS:
            self.redactions.labels(kind)
        self.llm_budget_spent = Gauge(
            PREFIX + "llm_budget_spent_usd",
            "Claude spend of this replica in the current budget window (hour, day; UTC clock)",
            ["window"],
            registry=r,
        )
        self.llm_budget_limit = Gauge(
            PREFIX + "llm_budget_limit_usd",
            "This replica's share of the window's budget (LLM_BUDGET_USD_PER_* / LLM_BUDGET_REPLICAS)",
            ["window"],
            registry=r,
        )
        self.llm_budget_exhausted = Gauge(
            PREFIX + "llm_budget_exhausted",
            "1 while the window's budget is spent and the Claude tiers are skipped",
            ["window"],
            registry=r,
        )
        for window in WINDOW_SECONDS:  # 0 from the first scrape: without a budget, never spent
            self.llm_budget_exhausted.labels(window).set(0)

    def watch_budget(self, guard: SpendGuard) -> None:
        """The guard's state as gauges read at scrape time, so a window that rolls over with no
        traffic shows as open again at once."""
        for name, window in guard.windows.items():
            self.llm_budget_limit.labels(name).set(window.limit_usd)
            self.llm_budget_spent.labels(name).set_function(functools.partial(guard.spent, name))
            self.llm_budget_exhausted.labels(name).set_function(functools.partial(guard.exhausted, name))

    def record_redactions(self, counts: Mapping[str, int]) -> None:
        for kind, count in counts.items():
            self.child(self.redactions, kind).inc(count)

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, memoised for the per-ticket path.

        prometheus_client's ``labels()`` validates and rebuilds its key under a lock on every call
        (about 2.5 µs, some 16 times a ticket). Only for children that are never removed.
        """
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def record_tiers(self, result: PipelineResult) -> None:
        for attempt in result.attempts:
            self.child(self.tier_outcomes, attempt.tier, attempt.outcome).inc()
            self.child(self.tier_latency, attempt.tier).observe(attempt.latency_ms / 1000)
            usage = attempt.usage
            for kind, count in (
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
                ("cache_read", usage.cache_read_input_tokens),
                ("cache_write", usage.cache_creation_input_tokens),
                ("thinking", usage.thinking_tokens),  # of output: not a kind to add to the others
            ):
                if count:
                    self.child(self.llm_tokens, attempt.model, kind).inc(count)
            if usage.retrieved_tokens:
                self.child(self.llm_retrieved_tokens, attempt.model).inc(usage.retrieved_tokens)
            if attempt.cost_usd:
                self.child(self.llm_cost, attempt.model).inc(attempt.cost_usd)
        tried = result.tiers_tried
        for earlier, later in itertools.pairwise(tried):
            self.child(self.escalations, earlier, later).inc()

    def record_routed(self, queue: str, rule: str, result: PipelineResult) -> None:
        self.child(self.routed, queue, rule).inc()
        if result.attempts:
            self.child(self.final_tier, result.attempts[-1].tier).inc()
        if result.classification is not None:
            for axis, prediction in result.classification.axes.items():
                self.child(self.labels, axis, prediction.label).inc()
                self.child(self.confidence, axis).observe(prediction.confidence)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def metric_names(self) -> set[str]:
        """Every sample name this registry can expose (with _total, _bucket, … suffixes)."""
        names: set[str] = set()
        for family in self.registry.collect():
            names.add(family.name)
            for sample in family.samples:
                names.add(sample.name)
        return names


class LabeledCollector(Collector):
    """Every sample of ``source`` with one more label, added as it is collected (nothing is copied
    until a scrape asks)."""

    def __init__(self, source: CollectorRegistry, name: str, value: str) -> None:
        self.source = source
        self.name = name
        self.value = value

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            labeled = Metric(family.name, family.documentation, family.type, family.unit)
            labeled.samples = [
                sample._replace(labels={**sample.labels, self.name: self.value}) for sample in family.samples
            ]
            yield labeled


class ShadowMetrics(Metrics):
    """A shadow's metrics: the live router's, exposed with ``shadow="NAME"`` on every sample.

    A shadow is usually scraped by the same Prometheus as the live router, under the same metric
    names; the label keeps its series apart (``{shadow=""}`` selects the live router's alone). It is
    added at exposition, so the code that counts is the live router's, unchanged, and ``registry``
    still answers ``get_sample_value`` without the label.
    """

    def __init__(self, shadow: str) -> None:
        super().__init__()
        self.shadow = shadow
        self.exposed = CollectorRegistry()
        self.exposed.register(LabeledCollector(self.registry, "shadow", shadow))

    def exposition(self) -> bytes:
        return generate_latest(self.exposed)


# -- drafted replies (ticket-router draft) ------------------------------------------------------------


DRAFT_LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60)
"""A draft is a few hundred output tokens: seconds, not the classifier's milliseconds."""


class DraftMetrics(Metrics):
    """The drafter's metrics: the Kafka loop's and the Messages API call counters it shares with the
    router (``llm_requests``, ``llm_retries``), and its own ``ticket_router_draft…`` families.

    Handler names come from the taxonomy and models from the settings, so the labels stay bounded.
    """

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.drafts = Counter(
            PREFIX + "drafts",
            "Routed tickets a handler drafted for, by outcome (drafted, unavailable, invalid_output)",
            ["handler", "outcome"],
            registry=r,
        )
        self.drafts_skipped = Counter(
            PREFIX + "drafts_skipped",
            "Routed tickets given no draft, by reason (no_handler, duplicate)",
            ["reason"],
            registry=r,
        )
        self.drafts_unreadable = Counter(
            PREFIX + "drafts_unreadable",
            "Queue records that are not a routed ticket, sent to triage (by error_kind)",
            ["error_kind"],
            registry=r,
        )
        self.draft_latency = Histogram(
            PREFIX + "draft_latency_seconds",
            "Time to write one draft, retries included",
            ["handler"],
            buckets=DRAFT_LATENCY_BUCKETS,
            registry=r,
        )
        self.draft_cost = Counter(
            PREFIX + "draft_cost_usd",
            "Estimated spend on drafts in USD (failed answers that were billed included)",
            ["handler", "model"],
            registry=r,
        )
        self.draft_tokens = Counter(
            PREFIX + "draft_tokens",
            "Tokens billed for drafts by kind (input, output, cache_read, cache_write; thinking: of output)",
            ["handler", "model", "kind"],
            registry=r,
        )

    def record_draft(
        self, handler: str, model: str, outcome: str, latency_s: float, usage: TokenUsage, cost_usd: float
    ) -> None:
        """One draft attempt's outcome, time and spend (a failure may still have been billed)."""
        self.child(self.drafts, handler, outcome).inc()
        self.child(self.draft_latency, handler).observe(latency_s)
        if cost_usd:
            self.child(self.draft_cost, handler, model).inc(cost_usd)
        for kind, count in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_input_tokens),
            ("cache_write", usage.cache_creation_input_tokens),
            ("thinking", usage.thinking_tokens),
        ):
            if count:
                self.child(self.draft_tokens, handler, model, kind).inc(count)


# -- every series from the first scrape ---------------------------------------------------------------

TOKEN_KINDS = ("input", "output", "cache_read", "cache_write", "thinking")
LLM_STATUSES = ("ok", "invalid_output", "429", "529", "500", "timeout", "connection", "spend_limit")
"""The ``status`` values of ``llm_requests`` worth a zero series (others appear when they happen)."""


@dataclass(frozen=True)
class KnownLabels:
    """The label values a running router can produce, known at start-up from its taxonomy and
    settings. Exported at zero before the first event, so a panel shows 0 rather than "No data"
    and an ``increase()`` alert sees the first occurrence (a series born at 1 has no increase)."""

    routes: tuple[tuple[str, str], ...]
    axes: Mapping[str, tuple[str, ...]]
    tiers: tuple[str, ...]
    models: tuple[str, ...]
    input_topic: str


def known_labels(
    taxonomy: Taxonomy, tiers: Sequence[str], models: Sequence[str], input_topic: str
) -> KnownLabels:
    return KnownLabels(
        routes=tuple((decision.queue, decision.rule) for decision in reachable_routes(taxonomy)),
        axes={name: tuple(axis.labels) for name, axis in taxonomy.axes.items()},
        tiers=tuple(tiers),
        models=tuple(dict.fromkeys(models)),
        input_topic=input_topic,
    )


def zero_series(metrics: Metrics, known: KnownLabels) -> None:
    """Create every series of ``known`` at zero (creating a child is all it takes)."""
    metrics.events_consumed.labels(known.input_topic)
    for queue, rule in known.routes:
        metrics.routed.labels(queue, rule)
    for axis, labels in known.axes.items():
        metrics.confidence.labels(axis)
        for label in labels:
            metrics.labels.labels(axis, label)
    for error_kind in ErrorKind:
        metrics.triaged.labels(error_kind.value)
    for reason in SKIP_REASONS:
        metrics.skipped.labels(reason)
    for outcome_kind in get_args(OutcomeKind):
        metrics.processing_latency.labels(outcome_kind)
    for kind in ("routed", "triaged"):
        metrics.publish_errors.labels(kind)
    for result in ("ok", "failed"):
        metrics.commits.labels(result)
    for kind in ("assigned", "revoked"):
        metrics.rebalances.labels(kind)
    zero_tier_series(metrics, known)
    zero_correction_series(metrics, known)
    for outcome in READ_OUTCOMES:
        metrics.corrections_read.labels(outcome)
    for result in RETRAIN_RESULTS:
        metrics.local_retrains.labels(result)


def zero_tier_series(metrics: Metrics, known: KnownLabels) -> None:
    for tier in known.tiers:
        metrics.final_tier.labels(tier)
        metrics.tier_latency.labels(tier)
        for outcome in get_args(TierAttempt.model_fields["outcome"].annotation):
            metrics.tier_outcomes.labels(tier, outcome)
    for earlier, later in itertools.combinations(known.tiers, 2):  # a tier may be skipped, never reordered
        metrics.escalations.labels(earlier, later)
    for model in known.models:
        metrics.llm_cost.labels(model)
        metrics.llm_retrieved_tokens.labels(model)
        for kind in TOKEN_KINDS:
            metrics.llm_tokens.labels(model, kind)
        for status in LLM_STATUSES:
            metrics.llm_requests.labels(model, status)
        for reason in RETRY_REASONS:
            metrics.llm_retries.labels(model, reason)


def zero_correction_series(metrics: Metrics, known: KnownLabels) -> None:
    """Corrections per axis, label change and source: bounded by the taxonomy (a queue override's
    labels are queues, too many to pre-create; they appear when they happen)."""
    for axis, labels in known.axes.items():
        for wrong, right in itertools.permutations(labels, 2):
            for source in CorrectionSource:
                metrics.corrections.labels(axis, wrong, right, source.value)


DRAFT_OUTCOMES = ("drafted", "unavailable", "invalid_output")
SKIP_NO_HANDLER = "no_handler"
DRAFT_SKIP_REASONS = (SKIP_NO_HANDLER, SKIP_DUPLICATE)
UNREADABLE_KINDS = (ErrorKind.TOO_LARGE, ErrorKind.MALFORMED_JSON, ErrorKind.SCHEMA_INVALID)


def zero_draft_series(metrics: DraftMetrics, models_by_handler: Mapping[str, str]) -> None:
    """The drafter's series at zero from the start: its handlers (from the taxonomy) and their models."""
    for reason in DRAFT_SKIP_REASONS:
        metrics.drafts_skipped.labels(reason)
    for unreadable in UNREADABLE_KINDS:
        metrics.drafts_unreadable.labels(unreadable.value)
    for handler, model in models_by_handler.items():
        metrics.draft_latency.labels(handler)
        metrics.draft_cost.labels(handler, model)
        for outcome in DRAFT_OUTCOMES:
            metrics.drafts.labels(handler, outcome)
        for kind in TOKEN_KINDS:
            metrics.draft_tokens.labels(handler, model, kind)
    for model in set(models_by_handler.values()):
        for status in LLM_STATUSES:
            metrics.llm_requests.labels(model, status)
        for reason in RETRY_REASONS:
            metrics.llm_retries.labels(model, reason)
