"""A promtool unit test per alert of deploy/k8s/prometheus-rules.yaml (issue 17, item 3).

An alert rule is code nobody runs until the night it matters: a threshold on the wrong side, a
`for:` that never elapses, a ratio that turns into NaN, or a shadow's or the drafter's series
counted as the live router's all look fine in review. Every alert here has at least one scenario
where it fires (exact labels, annotations rendered from the file's templates) and realistic near
misses where it must stay quiet; `test_every_alert_has_a_firing_and_a_quiet_case` makes a new alert
without both fail the suite.

Series carry the target labels the Prometheus Operator adds (namespace, pod, container, service,
job, endpoint, instance) and the labels consumer/metrics.py exports; a shadow's samples add
`shadow="NAME"` and the drafter's container is `drafter`, as in production.

One promtool process runs every case (a few seconds in all), one test file per case, so a failure
is reported against the case and the alert it belongs to, with promtool's expected-and-got text.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

import pytest
import yaml

from tests.test_deploy import Manifest, alert_rules, the
from tests.test_deploy_defaults import NO_READY_CASES, PROMTOOL, drafts_failing_case, no_ready_case

NAMESPACE = "ticket-router"
OTHER_NAMESPACE = "staging"
HAIKU = "claude-haiku-5-5"
SONNET = "claude-sonnet-5-5"


# -- series as the Prometheus Operator scrapes them -------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One scraped container: the labels the operator puts on every series it scrapes from it."""

    namespace: str
    pod: str
    container: str
    service: str
    address: str
    port: int
    shadow: str = ""

    def labels(self) -> dict[str, str]:
        labels = {
            "namespace": self.namespace,
            "pod": self.pod,
            "container": self.container,
            "service": self.service,
            "job": self.service,
            "endpoint": "metrics",
            "instance": f"{self.address}:{self.port}",
        }
        # ShadowMetrics adds the label to every sample; the live router's samples have none.
        return {**labels, "shadow": self.shadow} if self.shadow else labels

    def series(self, metric: str, **labels: str) -> str:
        """The promtool series text of ``metric`` scraped from this target."""
        pairs = {**self.labels(), **labels}
        return metric + "{" + ", ".join(f'{name}="{value}"' for name, value in pairs.items()) + "}"


def router(pod: str = "x2k4q", namespace: str = NAMESPACE, address: str = "10.42.0.17") -> Target:
    return Target(
        namespace, f"ticket-router-6f7c9d8b5-{pod}", "ticket-router", "ticket-router", address, 9000
    )


def drafter(namespace: str = NAMESPACE) -> Target:
    return Target(
        namespace,
        "ticket-router-drafter-5b8d7f6c4-m9p2r",
        "drafter",
        "ticket-router-drafter",
        "10.42.0.31",
        9001,
    )


def shadow(namespace: str = NAMESPACE) -> Target:
    return Target(
        namespace,
        "ticket-router-shadow-haiku-only-7c6b5d4f8-q7w3e",
        "ticket-router",
        "ticket-router-shadow-haiku-only",
        "10.42.0.44",
        9000,
        shadow="haiku-only",
    )


def counter(*segments: tuple[int, int]) -> str:
    """promtool values of a counter that starts at 0 and, for each ``(samples, increase)``, grows by
    ``increase`` at each of the next ``samples`` samples: bursts and stalls read as what they are."""
    values = [0]
    for samples, increase in segments:
        for _ in range(samples):
            values.append(values[-1] + increase)
    return " ".join(str(value) for value in values)


# -- cases ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One promtool test group, named by the alert it is about and the situation it stands for."""

    alert: str
    situation: str
    group: Manifest
    evaluation_interval: str = "1m"

    @property
    def id(self) -> str:
        return f"{self.alert}: {self.situation}"

    @property
    def expects_alert(self) -> bool:
        """Whether the case expects its alert to fire at some point (a near miss never does)."""
        return any(check["exp_alerts"] for check in self.group["alert_rule_test"])


def rule(alert: str) -> Manifest:
    """The rule as the kustomization renders it: annotations are read from it, never copied here."""
    found = [r for r in alert_rules() if r["alert"] == alert]
    assert len(found) == 1, f"expected one alert {alert} in prometheus-rules.yaml, found {len(found)}"
    return found[0]


LABEL_REFERENCE = re.compile(r"\{\{ \$labels\.(\w+) \}\}")
VALUE_REFERENCE = re.compile(r"\{\{ \$value(?: \| [^}]+)? \}\}")


def rendered(template: str, labels: Mapping[str, str], value: str) -> str:
    """``template`` with its label references filled in and ``{{ $value ... }}`` replaced by ``value``,
    the text the case expects the value to read as (so "15%" fails a rule that prints "150m")."""
    text = LABEL_REFERENCE.sub(lambda match: labels[match.group(1)], template)
    text = VALUE_REFERENCE.sub(lambda _: value, text)
    assert "{{" not in text, f"a template construct this test cannot render: {text}"
    return text


def firing(alert: str, labels: Mapping[str, str], value: str) -> Manifest:
    """The exp_alerts entry of ``alert`` with exactly ``labels``, its annotations rendered."""
    annotations = {name: rendered(text, labels, value) for name, text in rule(alert)["annotations"].items()}
    return {"exp_labels": dict(labels), "exp_annotations": annotations}


def group(
    series: Mapping[str, str], checks: list[tuple[str, str, list[Manifest]]], interval: str
) -> Manifest:
    """A promtool test group: ``series`` sampled every ``interval``, and (alert, eval_time,
    exp_alerts) checks; promtool compares the firing alerts at each time with exp_alerts exactly."""
    return {
        "interval": interval,
        "input_series": [{"series": name, "values": values} for name, values in series.items()],
        "alert_rule_test": [
            {"eval_time": time, "alertname": alert, "exp_alerts": expected}
            for alert, time, expected in checks
        ],
    }


def fires(
    alert: str,
    situation: str,
    series: Mapping[str, str],
    *,
    quiet_at: str,
    fires_at: str,
    alerts: list[Manifest],
    interval: str = "1m",
    evaluation_interval: str = "1m",
) -> Case:
    """A case where ``alert`` is still pending at ``quiet_at`` (its ``for:`` has not elapsed, or the
    condition is not met yet) and fires with exactly ``alerts`` at ``fires_at``."""
    checks = [(alert, quiet_at, []), (alert, fires_at, alerts)]
    return Case(alert, situation, group(series, checks, interval), evaluation_interval)


def quiet(
    alert: str,
    situation: str,
    series: Mapping[str, str],
    *,
    at: tuple[str, ...],
    interval: str = "1m",
    evaluation_interval: str = "1m",
) -> Case:
    """A near miss: ``alert`` has no firing alert at any of the times ``at``."""
    checks: list[tuple[str, str, list[Manifest]]] = [(alert, time, []) for time in at]
    return Case(alert, situation, group(series, checks, interval), evaluation_interval)


# TicketRouterConsumerLagGrowing: total lag of a topic trends up for 10 minutes and is above 100.

LAG = "ticket_router_consumer_lag"
LAG_GROWING = "TicketRouterConsumerLagGrowing"


def lag(target: Target, partition: int, values: str, topic: str = "tickets") -> tuple[str, str]:
    return target.series(LAG, topic=topic, partition=str(partition)), values


def lag_alert(namespace: str, total: int) -> Manifest:
    labels = {"severity": "warning", "namespace": namespace, "topic": "tickets"}
    return firing(LAG_GROWING, labels, str(total))


LAG_CASES = [
    fires(
        LAG_GROWING,
        "two pods' partitions fall behind by 10 records a minute each; the description gives the lag",
        dict([lag(router("x2k4q"), 0, "0+10x60"), lag(router("h7t2n", address="10.42.1.9"), 3, "0+10x60")]),
        quiet_at="12m",
        fires_at="30m",
        alerts=[lag_alert(NAMESPACE, 600)],
    ),
    fires(
        LAG_GROWING,
        "staging falls behind while production's backlog holds steady: one alert, for staging",
        dict([lag(router(), 0, "500x60"), lag(router(namespace=OTHER_NAMESPACE), 0, "0+20x60")]),
        quiet_at="12m",
        fires_at="30m",
        alerts=[lag_alert(OTHER_NAMESPACE, 600)],
    ),
    quiet(
        LAG_GROWING,
        "lag grows but stays under 100 records",
        dict([lag(router(), 0, "0+1x60"), lag(router(), 1, "0+1x60")]),
        at=("30m", "45m"),
    ),
    quiet(LAG_GROWING, "a large backlog that holds steady", dict([lag(router(), 0, "800x60")]), at=("30m",)),
    quiet(
        LAG_GROWING, "a large backlog being worked off", dict([lag(router(), 0, "2000-20x60")]), at=("30m",)
    ),
    quiet(
        LAG_GROWING,
        "a spike of 300 records in 6 minutes, then steady: growth shorter than for",
        dict([lag(router(), 0, "0+50x6 300x54")]),
        at=("10m", "20m"),
    ),
    quiet(
        LAG_GROWING,
        "only the drafter's lag on a queue topic grows",
        dict([lag(router(), 0, "0x60"), lag(drafter(), 0, "0+20x60", topic="billing-normal")]),
        at=("30m",),
    ),
    quiet(
        LAG_GROWING,
        "only a shadow falls behind",
        dict([lag(router(), 0, "0x60"), lag(shadow(), 0, "0+20x60")]),
        at=("30m",),
    ),
]


# TicketRouterTriageRatioHigh: triaged / consumed above 5% over 15 minutes, for 15 minutes.

TRIAGE_RATIO = "TicketRouterTriageRatioHigh"
CONSUMED = "ticket_router_events_consumed_total"
TRIAGED = "ticket_router_tickets_triaged_total"


def traffic(
    target: Target, consumed: str, triaged: str, error_kind: str = "llm_unavailable"
) -> dict[str, str]:
    return {
        target.series(CONSUMED, topic="tickets"): consumed,
        target.series(TRIAGED, error_kind=error_kind): triaged,
    }


def triage_alert(percent: str) -> Manifest:
    return firing(TRIAGE_RATIO, {"severity": "warning", "namespace": NAMESPACE}, percent)


TRIAGE_CASES = [
    fires(
        TRIAGE_RATIO,
        "8% of consumed tickets are triaged",
        traffic(router(), counter((60, 100)), counter((60, 8))),
        quiet_at="10m",
        fires_at="40m",
        alerts=[triage_alert("8%")],
    ),
    fires(
        TRIAGE_RATIO,
        "the drafter's consumption does not dilute the router's 8%",
        {
            **traffic(router(), counter((60, 100)), counter((60, 8)), error_kind="schema_invalid"),
            drafter().series(CONSUMED, topic="billing-normal"): counter((60, 1000)),
        },
        quiet_at="10m",
        fires_at="40m",
        alerts=[triage_alert("8%")],
    ),
    quiet(
        TRIAGE_RATIO,
        "4% triaged, under the threshold",
        traffic(router(), counter((60, 100)), counter((60, 4))),
        at=("40m",),
    ),
    quiet(
        TRIAGE_RATIO,
        "a shadow triages half while the live router triages 1%",
        {
            **traffic(router(), counter((60, 100)), counter((60, 1))),
            **traffic(shadow(), counter((60, 100)), counter((60, 50)), error_kind="low_confidence"),
        },
        at=("40m",),
    ),
    quiet(
        TRIAGE_RATIO,
        "the drafter's series show a high ratio while the router triages 1%",
        {
            **traffic(router(), counter((60, 100)), counter((60, 1))),
            **traffic(drafter(), counter((60, 100)), counter((60, 20)), error_kind="draft_failed"),
        },
        at=("40m",),
    ),
    quiet(
        TRIAGE_RATIO,
        "an 8-minute burst of triage (an upstream producer's bad deploy, rolled back)",
        traffic(
            router(), counter((60, 100)), counter((20, 0), (8, 12), (32, 0)), error_kind="schema_invalid"
        ),
        at=("37m", "45m"),
    ),
]


# TicketRouterCorrectionRateRising: corrections per routed ticket over 6 h above 10% and 1.5x the
# rate a week earlier, for 1 h. A week of hourly samples; the pods of a week ago are long gone.

CORRECTION_RISING = "TicketRouterCorrectionRateRising"
ROUTED = "ticket_router_tickets_routed_total"
CORRECTIONS = "ticket_router_corrections_total"
WEEK_H = 168
OLD_POD = router("a1b2c", address="10.42.3.3")
NEW_POD = router("z9y8x", address="10.42.5.5")
HOURS = 200


def correction(target: Target, field: str = "team") -> str:
    return target.series(
        CORRECTIONS, field=field, from_label="billing", to_label="technical", source="console"
    )


def weeks(last_week: int | None, this_week: int | None, field: str = "team") -> dict[str, str]:
    """100 tickets routed an hour, with ``last_week`` corrections an hour by the pod of a week ago
    and ``this_week`` by today's pod (None: that pod's corrections series never appeared)."""
    series = {
        OLD_POD.series(ROUTED, queue="billing-normal", rule="default"): counter((100, 100)),
        NEW_POD.series(
            ROUTED, queue="billing-normal", rule="default"
        ): f"_x100 {counter((HOURS - 101, 100))}",
    }
    if last_week is not None:
        series[correction(OLD_POD, field)] = counter((100, last_week))
    if this_week is not None:
        series[correction(NEW_POD, field)] = f"_x100 {counter((HOURS - 101, this_week))}"
    return series


def correction_alert(percent: str) -> Manifest:
    return firing(CORRECTION_RISING, {"severity": "warning", "namespace": NAMESPACE}, percent)


WEEKLY = {"interval": "1h", "evaluation_interval": "30m"}
CORRECTION_CASES = [
    fires(
        CORRECTION_RISING,
        "5% of tickets corrected a week ago, 15% now; a shadow on the same traffic does not dilute it",
        {
            **weeks(5, 15),
            shadow().series(ROUTED, queue="billing-normal", rule="default"): counter((HOURS, 100)),
        },
        quiet_at=f"{WEEK_H}h",
        fires_at=f"{WEEK_H + 22}h",
        alerts=[correction_alert("15%")],
        **WEEKLY,
    ),
    fires(
        CORRECTION_RISING,
        "no correction at all a week ago (its series never appeared), 15% now",
        weeks(None, 15),
        quiet_at=f"{WEEK_H}h",
        fires_at=f"{WEEK_H + 22}h",
        alerts=[correction_alert("15%")],
        **WEEKLY,
    ),
    quiet(
        CORRECTION_RISING,
        "15% both weeks: high but not rising",
        weeks(15, 15),
        at=(f"{WEEK_H + 22}h",),
        **WEEKLY,
    ),
    quiet(
        CORRECTION_RISING,
        "5% a week ago, 9% now: rising but under 10%",
        weeks(5, 9),
        at=(f"{WEEK_H + 22}h",),
        **WEEKLY,
    ),
    quiet(
        CORRECTION_RISING,
        "only queue overrides rise (5% of other fields both weeks)",
        {**weeks(5, 5), correction(NEW_POD, "queue"): f"_x100 {counter((HOURS - 101, 20))}"},
        at=(f"{WEEK_H + 22}h",),
        **WEEKLY,
    ),
]


# TicketRouterLLMErrorRatioHigh: non-ok calls / all calls per model above 10% over 10 m, for 10 m.

LLM_ERRORS = "TicketRouterLLMErrorRatioHigh"
LLM_REQUESTS = "ticket_router_llm_requests_total"


def calls(target: Target, model: str, **per_status: str) -> dict[str, str]:
    return {
        target.series(LLM_REQUESTS, model=model, status=status): values
        for status, values in per_status.items()
    }


LLM_CASES = [
    fires(
        LLM_ERRORS,
        "a fifth of Haiku calls are rate limited while Sonnet answers",
        {
            **calls(router(), HAIKU, ok=counter((60, 80)), **{"429": counter((60, 20))}),
            **calls(router(), SONNET, ok=counter((60, 10))),
        },
        quiet_at="8m",
        fires_at="30m",
        alerts=[firing(LLM_ERRORS, {"severity": "warning", "namespace": NAMESPACE, "model": HAIKU}, "20%")],
    ),
    quiet(
        LLM_ERRORS,
        "8% of calls overloaded, under the threshold",
        calls(router(), HAIKU, ok=counter((60, 92)), **{"529": counter((60, 8))}),
        at=("30m",),
    ),
    quiet(
        LLM_ERRORS,
        "a 5-minute burst of timeouts, shorter than for",
        calls(router(), HAIKU, ok=counter((60, 100)), timeout=counter((20, 0), (5, 30), (35, 0))),
        at=("30m", "33m", "40m"),
    ),
    quiet(
        LLM_ERRORS,
        "only the drafter's calls fail",
        {
            **calls(router(), SONNET, ok=counter((60, 50))),
            **calls(drafter(), SONNET, ok=counter((60, 10)), **{"429": counter((60, 10))}),
        },
        at=("30m",),
    ),
    quiet(
        LLM_ERRORS,
        "only a shadow's calls fail",
        {
            **calls(router(), HAIKU, ok=counter((60, 50))),
            **calls(shadow(), HAIKU, ok=counter((60, 10)), timeout=counter((60, 10))),
        },
        at=("30m",),
    ),
]


# TicketRouterNotConsuming: nothing consumed over 5 minutes while lag is above zero, for 10 minutes.

NOT_CONSUMING = "TicketRouterNotConsuming"
NOT_CONSUMING_ALERT = firing(NOT_CONSUMING, {"severity": "critical", "namespace": NAMESPACE}, "0")


def consumer(target: Target, consumed: str | None, lag_values: str, topic: str = "tickets") -> dict[str, str]:
    """A consumer's lag on one partition, and its consumed counter unless None (never created)."""
    series = dict([lag(target, 0, lag_values, topic)])
    if consumed is not None:
        series[target.series(CONSUMED, topic=topic)] = consumed
    return series


NOT_CONSUMING_CASES = [
    fires(
        NOT_CONSUMING,
        "consumption stops at 20m while tickets keep arriving",
        consumer(router(), counter((20, 50), (40, 0)), "5x20 5+40x40"),
        quiet_at="30m",
        fires_at="45m",
        alerts=[NOT_CONSUMING_ALERT],
    ),
    fires(
        NOT_CONSUMING,
        "nothing consumed since start-up, so the consumed counter never appeared",
        consumer(router(), None, "200x40"),
        quiet_at="5m",
        fires_at="20m",
        alerts=[NOT_CONSUMING_ALERT],
    ),
    quiet(
        NOT_CONSUMING,
        "slow consumption with a backlog",
        consumer(router(), counter((60, 1)), "300x60"),
        at=("30m",),
    ),
    quiet(
        NOT_CONSUMING,
        "no traffic: nothing consumed, no lag",
        consumer(router(), counter((60, 0)), "0x60"),
        at=("30m",),
    ),
    quiet(
        NOT_CONSUMING,
        "a 12-minute stall, shorter than 5m of rate plus 10m of for",
        consumer(router(), counter((20, 50), (12, 0), (28, 50)), "100x60"),
        at=("30m", "33m", "45m"),
    ),
    quiet(
        NOT_CONSUMING,
        "only the drafter is stuck on its queue topic",
        {
            **consumer(router(), counter((60, 0)), "0x60"),
            **consumer(drafter(), counter((60, 0)), "50x60", topic="billing-normal"),
        },
        at=("30m",),
    ),
    quiet(
        NOT_CONSUMING,
        "only a shadow is stuck",
        {**consumer(router(), counter((60, 0)), "0x60"), **consumer(shadow(), counter((60, 0)), "50x60")},
        at=("30m",),
    ),
]


# TicketRouterReadinessFlapping: a pod's readiness changed more than 4 times in 15 minutes.

FLAPPING = "TicketRouterReadinessFlapping"
READY = "ticket_router_ready"

FLAPPING_CASES = [
    fires(
        FLAPPING,
        "one pod changes 6 times in 10 minutes while the other stays ready",
        {
            router().series(READY): "1 0 1 0 1 0 1x30",
            router("h7t2n", address="10.42.1.9").series(READY): "1x30",
        },
        quiet_at="4m",
        fires_at="10m",
        alerts=[firing(FLAPPING, {"severity": "warning", **router().labels()}, "6")],
    ),
    quiet(FLAPPING, "4 changes in 15 minutes", {router().series(READY): "1 0 1 0 1x30"}, at=("10m",)),
    quiet(
        FLAPPING,
        "6 changes spread over 42 minutes (a rebalance now and then)",
        {router().series(READY): "1x6 0x6 1x6 0x6 1x6 0x6 1x6"},
        at=("20m", "30m", "45m"),
    ),
    quiet(
        FLAPPING,
        "only the drafter flaps",
        {router().series(READY): "1x30", drafter().series(READY): "1 0 1 0 1 0 1x30"},
        at=("10m",),
    ),
    quiet(
        FLAPPING,
        "only a shadow flaps",
        {router().series(READY): "1x30", shadow().series(READY): "1 0 1 0 1 0 1x30"},
        at=("10m",),
    ),
]


# TicketRouterNoReadyReplica: no router pod of a namespace ready for 5 minutes. The firing cases
# of tests/test_deploy_defaults.py, and one more.

NO_READY = "TicketRouterNoReadyReplica"


def as_case(situation: str, series: dict[str, str], eval_minutes: int, namespace: str | None) -> Case:
    return Case(NO_READY, situation, no_ready_case(series, eval_minutes, namespace))


NO_READY_SITUATIONS = [
    "b's pods stop being ready while a's stay ready",
    "b's only pod disappears",
    "no router has ever exported metrics",
    "b's router is not ready while b's drafter is",
]
NO_READY_FIRING = [
    as_case(situation, *case) for situation, case in zip(NO_READY_SITUATIONS, NO_READY_CASES, strict=True)
]

NO_READY_CASES_HERE = [
    *NO_READY_FIRING,
    as_case(
        "the router is not ready while a shadow of it is",
        {router().series(READY): "1x19 0x40", shadow().series(READY): "1x60"},
        30,
        NAMESPACE,
    ),
    quiet(
        NO_READY,
        "one of two pods not ready (a rolling update)",
        {router().series(READY): "1x60", router("h7t2n", address="10.42.1.9").series(READY): "1x19 0x40"},
        at=("30m",),
    ),
    quiet(
        NO_READY,
        "the only pod restarts and is not ready for 3 minutes",
        {router().series(READY): "1x10 0x3 1x40"},
        at=("13m", "20m"),
    ),
    quiet(
        NO_READY,
        "the router is ready, the drafter and a shadow are not",
        {router().series(READY): "1x60", drafter().series(READY): "0x60", shadow().series(READY): "0x60"},
        at=("30m",),
    ),
]


# TicketRouterDraftsFailing: more than 10% of drafts fail over 15 minutes, for 15 minutes.

DRAFTS_FAILING = "TicketRouterDraftsFailing"
DRAFTS = "ticket_router_drafts_total"


def drafts(target: Target, **per_outcome: str) -> dict[str, str]:
    return {
        target.series(DRAFTS, handler="outage", outcome=outcome): values
        for outcome, values in per_outcome.items()
    }


DRAFTS_CASES = [
    Case(DRAFTS_FAILING, "20% of b's drafts fail, 2% of a's", drafts_failing_case()),
    quiet(
        DRAFTS_FAILING,
        "8% of drafts fail, under the threshold",
        drafts(drafter(), drafted=counter((60, 92)), invalid_output=counter((60, 8))),
        at=("40m",),
    ),
    quiet(
        DRAFTS_FAILING,
        "a 10-minute outage of the Messages API, shorter than for",
        drafts(
            drafter(),
            drafted=counter((20, 100), (10, 80), (30, 100)),
            unavailable=counter((20, 0), (10, 20), (30, 0)),
        ),
        at=("35m", "40m", "50m"),
    ),
]


# TicketRouterLLMBudgetExhausted: a router replica's spend guard reports a window spent, for 1 m.

BUDGET = "TicketRouterLLMBudgetExhausted"


def guard(target: Target, window: str, exhausted: str, spent: str, limit: str = "2.5x40") -> dict[str, str]:
    """The spend guard's gauges of one window (consumer/metrics.py, watch_budget)."""
    return {
        target.series("ticket_router_llm_budget_exhausted", window=window): exhausted,
        target.series("ticket_router_llm_budget_spent_usd", window=window): spent,
        target.series("ticket_router_llm_budget_limit_usd", window=window): limit,
    }


BUDGET_CASES = [
    fires(
        BUDGET,
        "one of two replicas spends its hour's share at 20m; the day's budget holds",
        {
            **guard(router(), "hour", "0x19 1x20", "0+0.125x20 2.5x19"),
            **guard(router(), "day", "0x40", "10+0.125x40", limit="60x40"),
            **guard(router("h7t2n", address="10.42.1.9"), "hour", "0x40", "0+0.05x40"),
        },
        quiet_at="20m",
        fires_at="25m",
        alerts=[firing(BUDGET, {"severity": "warning", "namespace": NAMESPACE, "window": "hour"}, "1")],
    ),
    quiet(
        BUDGET,
        "99% of the hour's share spent",
        guard(router(), "hour", "0x40", "0+0.2x12 2.475x27"),
        at=("20m", "30m"),
    ),
    quiet(
        BUDGET,
        "spent 30 seconds before the hour rolled over (one sample)",
        guard(router(), "hour", "0x9 1 0x30", "2.4x9 2.5 0x30"),
        interval="30s",
        at=("5m", "6m", "10m"),
    ),
    quiet(
        BUDGET,
        "only a shadow's guard is spent",
        {**guard(router(), "hour", "0x40", "1x40"), **guard(shadow(), "hour", "1x40", "2.5x40")},
        at=("20m",),
    ),
]


CASES = [
    *LAG_CASES,
    *TRIAGE_CASES,
    *CORRECTION_CASES,
    *LLM_CASES,
    *NOT_CONSUMING_CASES,
    *FLAPPING_CASES,
    *NO_READY_CASES_HERE,
    *DRAFTS_CASES,
    *BUDGET_CASES,
]


# -- running promtool once ------------------------------------------------------------------------


def case_file(index: int, case: Case) -> str:
    return f"{index:03d}-{case.alert}.yaml"


SECTION = re.compile(r"^Unit Testing:\s+(\S+)$", re.MULTILINE)


def sections(output: str) -> dict[str, str]:
    """promtool's output split per test file: ``Unit Testing:  FILE`` opens each file's section."""
    starts = list(SECTION.finditer(output))
    ends = [match.start() for match in starts[1:]] + [len(output)]
    return {
        match.group(1): output[match.end() : end].strip() for match, end in zip(starts, ends, strict=True)
    }


def test_sections_split_promtool_output_per_file() -> None:
    output = "Unit Testing:  a.yaml\n  SUCCESS\n\nUnit Testing:  b.yaml\n  FAILED:\n    alertname: X\n"
    assert sections(output) == {"a.yaml": "SUCCESS", "b.yaml": "FAILED:\n    alertname: X"}


@pytest.fixture(scope="module")
def promtool_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every case through one promtool process: its section of the output, by case file."""
    assert PROMTOOL is not None, "promtool (Debian package prometheus) is installed by `make test`"
    directory = tmp_path_factory.mktemp("alert-rules")
    (directory / "rules.yaml").write_text(yaml.safe_dump(the("PrometheusRule")["spec"]), "utf-8")
    files = []
    for index, case in enumerate(CASES):
        scenario = {
            "rule_files": ["rules.yaml"],
            "evaluation_interval": case.evaluation_interval,
            "tests": [case.group],
        }
        files.append(case_file(index, case))
        (directory / files[-1]).write_text(yaml.safe_dump(scenario), "utf-8")
    # stderr (the failures) merged into stdout (the file names) keeps each failure under its file.
    result = subprocess.run(
        [PROMTOOL, "test", "rules", *files],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=180,
        check=False,
    )
    found = sections(result.stdout)
    assert set(found) == set(files), f"promtool did not report every case file:\n{result.stdout}"
    return found


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case.id for case in CASES])
def test_alert_case(index: int, promtool_results: dict[str, str]) -> None:
    case = CASES[index]
    output = promtool_results[case_file(index, case)]
    assert output == "SUCCESS", f"{case.id}\n{output}"


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = {a["alert"] for a in alert_rules()}
    covered = {(case.alert, case.expects_alert) for case in CASES}
    missing = sorted(
        f"{alert} ({'firing' if fires else 'quiet'})"
        for alert in alerts
        for fires in (True, False)
        if (alert, fires) not in covered
    )
    assert not missing, f"alerts without a promtool case here: {', '.join(missing)}"
    assert {case.alert for case in CASES} <= alerts, "a case names an alert the rules no longer have"
    for case in CASES:
        checked = {check["alertname"] for check in case.group["alert_rule_test"]}
        assert checked == {case.alert}, f"{case.id} checks {checked}"
