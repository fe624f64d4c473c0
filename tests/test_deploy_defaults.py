"""Deployment defaults of deploy/ that only fail in production (issue 11), checked offline.

Each test names the production failure it stands for: the key-less profile triaging almost
everything, a node drain evicting the only consumer, a CPU limit throttling the event loop that
heartbeats the group, KEDA and the router disagreeing on where a new group starts, egress to the
cloud metadata service, an alert tied to one namespace, a version label nobody updates, comments
citing a document that does not exist, and monitoring objects Prometheus never selects.
The pure helpers (PDB arithmetic, Kubernetes quantities, ipBlock matching) are tested on their own.
"""

from __future__ import annotations

import ipaddress
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.config import ConfigError, Settings, load_settings
from tests.test_deploy import (
    API_SECRET_SETTINGS,
    DEPLOY,
    DRAFTER,
    K8S,
    PROFILES,
    RENDERED,
    ROOT,
    ROUTER,
    SECRET_SETTINGS,
    Manifest,
    alert_rules,
    container,
    render,
    the,
)

README = ROOT / "README.md"
LOCAL_ONLY = DEPLOY / "overlays" / "local-only"
SASL_SETTINGS = SECRET_SETTINGS - {"ANTHROPIC_API_KEY"}

# `ticket-tools bench` figures of scenario (e), the router with the Claude tiers and latency, as
# the README's "Benchmark" section reports them: (CPU ms a ticket, tickets/s) of each measured run.
BENCH_ROUTER_RUNS = ((1.62, 573.0), (1.63, 570.0), (1.97, 482.0))
# Highest peak RSS of the router in the bench (MB; scenario b, whose start fits the local tier) and
# in the hostile-input fault test (case d), as the README reports them.
BENCH_PEAK_RSS_MB = 566
FAULT_PEAK_RSS_MB = 366
# Address ranges a pod must never reach through the Claude API egress rule.
NON_PUBLIC_RANGES = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
)
CLOUD_METADATA = "169.254.169.254"
# Peak RSS of `python -c "import consumer.draft.service"` (ru_maxrss, MB): the drafter before any work.
DRAFTER_IMPORT_RSS_MB = 221


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def profile_env(directory: Path) -> dict[str, str]:
    data: dict[str, str] = find(render(directory), "ConfigMap", "ticket-router-env")["data"]
    return data


def settings_of(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, *, with_key: bool) -> Settings:
    """Settings as the pod would load them: the ConfigMap plus the Secret's keys it has."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in SASL_SETTINGS | ({"ANTHROPIC_API_KEY"} if with_key else set()):
        monkeypatch.setenv(name, "placeholder")
    return load_settings()


# -- 1. a profile without a key, and what low confidence does there ------------------------------


def low_confidence_floods_triage(tiers: list[str], action: str) -> bool:
    """Whether most tickets would end in triage by design, not by fault.

    The local tier is below its thresholds for ~97% of tickets (``ticket-tools evaluate
    tests/data/eval_labeled.jsonl --tiers local``); with it last and ``triage``, nearly everything
    goes to needs-human-triage and the > 5% triage alert never stops firing.
    """
    return tiers[-1] == "local" and action == "triage"


def test_low_confidence_floods_triage_only_with_the_local_tier_last() -> None:
    assert low_confidence_floods_triage(["local"], "triage")
    assert not low_confidence_floods_triage(["local"], "route_flagged")
    assert not low_confidence_floods_triage(["local", "fast", "strong"], "triage")
    assert not low_confidence_floods_triage(["fast", "strong"], "triage")


@pytest.mark.parametrize("directory", PROFILES, ids=lambda d: d.name)
def test_no_shipped_profile_sends_most_tickets_to_triage(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(profile_env(directory), monkeypatch, with_key=True)
    assert not low_confidence_floods_triage(settings.effective_tiers, settings.low_confidence_action), (
        f"{directory.name}: TIERS={','.join(settings.effective_tiers)} with "
        f"LOW_CONFIDENCE_ACTION={settings.low_confidence_action}"
    )


def test_local_only_profile_runs_without_a_key_and_routes_low_confidence_flagged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (LOCAL_ONLY / "kustomization.yaml").is_file(), "the key-less profile is not shipped"
    settings = settings_of(profile_env(LOCAL_ONLY), monkeypatch, with_key=False)
    assert settings.effective_tiers == ["local"]
    assert settings.low_confidence_action == "route_flagged"
    assert settings.anthropic_api_key is None


def test_local_only_profile_changes_nothing_but_the_two_settings_and_drops_the_drafter() -> None:
    """Every draft is a Claude call: without a key the drafter could only fail to start."""
    base = {(m["kind"], m["metadata"]["name"]): m for m in RENDERED}
    overlay = {(m["kind"], m["metadata"]["name"]): m for m in render(LOCAL_ONLY)}
    drafter = {key for key in base if key[1] == DRAFTER}
    assert {kind for kind, _ in drafter} == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "ScaledObject",
    }
    assert base.keys() - overlay.keys() == drafter
    assert overlay.keys() <= base.keys()
    env_key = ("ConfigMap", "ticket-router-env")
    assert all(overlay[key] == base[key] for key in overlay if key != env_key)
    base_env, overlay_env = base[env_key]["data"], overlay[env_key]["data"]
    changed = {
        name for name in base_env.keys() | overlay_env.keys() if base_env.get(name) != overlay_env.get(name)
    }
    assert changed == {"TIERS", "LOW_CONFIDENCE_ACTION"}


def test_base_profile_without_a_key_stops_with_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Secret key is optional, so this refusal is what stops a Claude profile with no key."""
    with pytest.raises(ConfigError) as caught:
        settings_of(profile_env(K8S), monkeypatch, with_key=False)
    message = str(caught.value)
    assert "ANTHROPIC_API_KEY" in message and "\n" not in message


def secret_refs(deployment: str) -> dict[str, Manifest]:
    return {
        entry["name"]: entry["valueFrom"]["secretKeyRef"]
        for entry in container(the("Deployment", deployment))["env"]
        if "secretKeyRef" in entry.get("valueFrom", {})
    }


def test_only_the_anthropic_key_and_api_credentials_are_optional_secret_references() -> None:
    refs = secret_refs(ROUTER)
    assert refs["ANTHROPIC_API_KEY"].get("optional") is True
    for name in API_SECRET_SETTINGS:
        assert refs[name].get("optional") is True, f"{name}: a deployment may use only some credential kinds"
    for name in SASL_SETTINGS:
        assert not refs[name].get("optional", False), f"{name} is needed with SASL_*; keep it required"


def test_drafter_requires_every_secret_it_reads() -> None:
    """The drafter cannot work without the key: Kubernetes should refuse the pod, not start it."""
    refs = secret_refs(DRAFTER)
    assert set(refs) == SECRET_SETTINGS
    assert not any(ref.get("optional", False) for ref in refs.values())


# -- 2. replicas and the disruption budget ----------------------------------------------------------


def disruptions_allowed(pdb_spec: Manifest, replicas: int) -> int:
    """Evictions the budget allows with ``replicas`` healthy pods (integer budgets only)."""
    if "minAvailable" in pdb_spec:
        required = pdb_spec["minAvailable"]
    else:
        required = replicas - pdb_spec["maxUnavailable"]
    assert isinstance(required, int), "percentage budgets are not used here"
    return max(0, replicas - required)


def test_disruptions_allowed_follows_the_kubernetes_arithmetic() -> None:
    assert disruptions_allowed({"maxUnavailable": 1}, 1) == 1
    assert disruptions_allowed({"maxUnavailable": 1}, 6) == 1
    assert disruptions_allowed({"minAvailable": 1}, 1) == 0
    assert disruptions_allowed({"minAvailable": 1}, 6) == 5


def test_a_drain_never_evicts_the_last_consumer_and_is_never_blocked() -> None:
    scaled = the("ScaledObject", ROUTER)["spec"]
    pdb = the("PodDisruptionBudget", ROUTER)["spec"]
    assert scaled["minReplicaCount"] >= 2
    for replicas in range(scaled["minReplicaCount"], scaled["maxReplicaCount"] + 1):
        allowed = disruptions_allowed(pdb, replicas)
        assert allowed >= 1, f"{replicas} replicas: a node drain would wait forever"
        assert replicas - allowed >= 1, f"{replicas} replicas: a drain may evict every consumer"
        assert allowed == 1, f"{replicas} replicas: evictions should come one rebalance at a time"


def test_drafter_drains_one_pod_at_a_time_and_never_blocks_a_drain() -> None:
    """Drafts wait for a replacement (offsets are committed after publishing), so the only drafter
    may go; never more than one at a time, and a drain is never blocked."""
    scaled = the("ScaledObject", DRAFTER)["spec"]
    pdb = the("PodDisruptionBudget", DRAFTER)["spec"]
    assert pdb.get("unhealthyPodEvictionPolicy") == "AlwaysAllow"
    for replicas in range(scaled["minReplicaCount"], scaled["maxReplicaCount"] + 1):
        assert disruptions_allowed(pdb, replicas) == 1, f"{replicas} replicas"


# -- 3. resources from the bench ------------------------------------------------------------------

CPU_QUANTITY = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<milli>m?)")
MEMORY_QUANTITY = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>Ki|Mi|Gi|k|M|G|)")
MEMORY_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def cpu_cores(quantity: str | int | float) -> float:
    match = CPU_QUANTITY.fullmatch(str(quantity))
    assert match, f"not a CPU quantity: {quantity!r}"
    return float(match["number"]) / (1000 if match["milli"] else 1)


def memory_bytes(quantity: str | int) -> int:
    match = MEMORY_QUANTITY.fullmatch(str(quantity))
    assert match, f"not a memory quantity: {quantity!r}"
    return int(float(match["number"]) * MEMORY_UNITS[match["unit"]])


def test_quantities_parse_as_kubernetes_reads_them() -> None:
    assert cpu_cores("250m") == 0.25 and cpu_cores("1") == 1 and cpu_cores(2) == 2
    assert memory_bytes("512Mi") == 512 * 2**20 and memory_bytes("1Gi") == 2**30
    assert memory_bytes("300M") == 300 * 10**6


def test_cpu_is_sized_so_the_event_loop_is_never_starved_or_throttled() -> None:
    resources = container(the("Deployment", ROUTER))["resources"]
    busy_cores = max(ms * rate / 1000 for ms, rate in BENCH_ROUTER_RUNS)
    assert busy_cores > 0.9, "the bench says a busy replica uses a whole core"
    request = cpu_cores(resources["requests"]["cpu"])
    assert request >= math.ceil(busy_cores), f"cpu request {request} for a {busy_cores:.2f}-core process"
    limit = resources.get("limits", {}).get("cpu")
    # The loop uses at most one core; a limit of at least 2 leaves the other threads a core too.
    assert limit is None or cpu_cores(limit) >= 2, f"cpu limit {limit} throttles the event loop"


def test_memory_is_sized_from_the_measured_peak() -> None:
    resources = container(the("Deployment", ROUTER))["resources"]
    request = memory_bytes(resources["requests"]["memory"])
    assert request >= 1.5 * max(FAULT_PEAK_RSS_MB, BENCH_PEAK_RSS_MB) * 10**6
    assert memory_bytes(resources["limits"]["memory"]) == request, "memory limit should equal the request"


def test_drafter_memory_covers_its_start_up_and_cpu_bounds_a_runaway() -> None:
    resources = container(the("Deployment", DRAFTER))["resources"]
    request = memory_bytes(resources["requests"]["memory"])
    assert request >= 2 * DRAFTER_IMPORT_RSS_MB * 10**6, "start-up alone is ~221 MB; leave room for drafts"
    assert memory_bytes(resources["limits"]["memory"]) == request, "memory limit should equal the request"
    assert cpu_cores(resources["requests"]["cpu"]) <= cpu_cores(resources["limits"]["cpu"])


# -- 4. where a new consumer group starts ---------------------------------------------------------


@pytest.mark.parametrize("directory", PROFILES, ids=lambda d: d.name)
def test_keda_starts_a_new_group_where_the_router_does(directory: Path) -> None:
    manifests = render(directory)
    env = find(manifests, "ConfigMap", "ticket-router-env")["data"]
    assert env.get("AUTO_OFFSET_RESET") in {"earliest", "latest"}, "set AUTO_OFFSET_RESET in config.env"
    (trigger,) = find(manifests, "ScaledObject", "ticket-router")["spec"]["triggers"]
    assert trigger["metadata"]["offsetResetPolicy"] == env["AUTO_OFFSET_RESET"]


def test_config_env_explains_auto_offset_reset() -> None:
    lines = (K8S / "config.env").read_text("utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("AUTO_OFFSET_RESET="))
    comment = " ".join(line for line in lines[max(0, index - 8) : index] if line.startswith("#"))
    for needle in ("earliest", "latest", "skips", "offsetResetPolicy"):
        assert needle in comment, needle


# -- 5. egress -----------------------------------------------------------------------------------------


def peers_allow(peers: list[Manifest], address: str) -> bool:
    """Whether one of a rule's ipBlock peers lets ``address`` through (CIDR minus its excepts)."""
    ip = ipaddress.ip_address(address)
    for peer in peers:
        block = peer.get("ipBlock")
        if block is None or ip not in ipaddress.ip_network(block["cidr"]):
            continue
        if not any(ip in ipaddress.ip_network(cidr) for cidr in block.get("except", [])):
            return True
    return False


def test_peers_allow_reads_cidr_and_except() -> None:
    peers = [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]
    assert peers_allow(peers, "8.8.8.8")
    assert not peers_allow(peers, "10.1.2.3")
    assert not peers_allow([{"namespaceSelector": {}}], "8.8.8.8")


def https_egress_peers(policy: str) -> list[Manifest]:
    rules = [
        r for r in the("NetworkPolicy", policy)["spec"]["egress"] if any(p["port"] == 443 for p in r["ports"])
    ]
    assert len(rules) == 1
    peers: list[Manifest] = rules[0]["to"]
    assert all(set(peer) == {"ipBlock"} for peer in peers), "443 is for the public Claude API only"
    return peers


@pytest.mark.parametrize("policy", [ROUTER, DRAFTER])
def test_https_egress_reaches_public_addresses_only(policy: str) -> None:
    peers = https_egress_peers(policy)
    assert peers_allow(peers, "160.79.104.10"), "a public address (the Claude API) must be reachable"
    assert not peers_allow(peers, CLOUD_METADATA), "the cloud metadata service is reachable"
    for cidr in NON_PUBLIC_RANGES:
        network = ipaddress.ip_network(cidr)
        for address in (network[1], network[-2]):
            assert not peers_allow(peers, str(address)), f"{address} ({cidr}) is reachable on 443"


# -- 6. alerts in any namespace ---------------------------------------------------------------------

NAMESPACE_MATCHER = re.compile(r"\bnamespace\s*(=|!=|=~|!~)")


def test_no_alert_is_tied_to_one_namespace() -> None:
    for alert in alert_rules():
        assert not NAMESPACE_MATCHER.search(alert["expr"]), f"{alert['alert']} names a namespace"
        for name, text in alert["annotations"].items():
            assert "-n ticket-router" not in text, f"{alert['alert']} {name} names a namespace"
    by_name = {a["alert"]: a["expr"] for a in alert_rules()}
    assert "by (namespace)" in by_name["TicketRouterNoReadyReplica"]


PROMTOOL = shutil.which("promtool")


def no_ready_case(series: dict[str, str], eval_minutes: int, namespace: str | None) -> Manifest:
    """A promtool test case: input series, and the one NoReadyReplica alert expected."""
    alert = next(a for a in alert_rules() if a["alert"] == "TicketRouterNoReadyReplica")
    where = f"in namespace {namespace}" if namespace else "in any namespace"
    labels = {"severity": "critical", **({"namespace": namespace} if namespace else {})}
    expected = {
        "exp_labels": labels,
        "exp_annotations": {
            "summary": "No ticket-router replica is ready",
            "description": (
                f"For 5 minutes no ticket-router pod {where} reported ready: no tickets are being routed."
            ),
            "runbook": alert["annotations"]["runbook"],
        },
    }
    return {
        "interval": "1m",
        "input_series": [{"series": name, "values": values} for name, values in series.items()],
        "alert_rule_test": [
            {"eval_time": "4m", "alertname": "TicketRouterNoReadyReplica", "exp_alerts": []},
            {
                "eval_time": f"{eval_minutes}m",
                "alertname": "TicketRouterNoReadyReplica",
                "exp_alerts": [expected],
            },
        ],
    }


NO_READY_CASES = [
    # Namespace b's pods stop being ready at 20m while a stays ready: b alerts, a does not.
    (
        {
            'ticket_router_ready{namespace="a", pod="a-1"}': "1x60",
            'ticket_router_ready{namespace="b", pod="b-1"}': "1x19 0x40",
        },
        30,
        "b",
    ),
    # Namespace b's only pod disappears at 10m (crash loop, eviction, unschedulable): same alert.
    (
        {
            'ticket_router_ready{namespace="a", pod="a-1"}': "1x60",
            'ticket_router_ready{namespace="b", pod="b-1"}': "1x10",
        },
        30,
        "b",
    ),
    # No router has ever exported metrics: one alert, with no namespace to name.
    ({"unrelated_metric": "1x20"}, 10, None),
    # Namespace b's router stops being ready while b's drafter stays ready: the drafter's
    # ticket_router_ready (container="drafter") must not count as a ready router.
    (
        {
            'ticket_router_ready{namespace="a", pod="a-1", container="ticket-router"}': "1x60",
            'ticket_router_ready{namespace="b", pod="b-1", container="ticket-router"}': "1x19 0x40",
            'ticket_router_ready{namespace="b", pod="b-drafter-1", container="drafter"}': "1x60",
        },
        30,
        "b",
    ),
]


def drafts_failing_case() -> Manifest:
    """20% of b's drafts fail and 2% of a's: only b alerts."""
    alert = next(a for a in alert_rules() if a["alert"] == "TicketRouterDraftsFailing")
    per_minute = {
        ("a", "drafted"): 98,
        ("a", "unavailable"): 2,
        ("b", "drafted"): 80,
        ("b", "unavailable"): 20,
    }
    series = {
        f'ticket_router_drafts_total{{namespace="{namespace}", container="drafter", handler="outage", '
        f'outcome="{outcome}"}}': f"0+{count}x60"
        for (namespace, outcome), count in per_minute.items()
    }
    return {
        "interval": "1m",
        "input_series": [{"series": name, "values": values} for name, values in series.items()],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "TicketRouterDraftsFailing", "exp_alerts": []},
            {
                "eval_time": "40m",
                "alertname": "TicketRouterDraftsFailing",
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": "warning", "namespace": "b"},
                        "exp_annotations": {
                            "summary": alert["annotations"]["summary"],
                            "description": (
                                "20% of the drafts attempted in b over 15 minutes failed after their "
                                "retries: agents get those tickets without a draft."
                            ),
                            "runbook": alert["annotations"]["runbook"].replace(
                                "{{ $labels.namespace }}", "b"
                            ),
                        },
                    }
                ],
            },
        ],
    }


def budget_exhausted_case() -> Manifest:
    """b's router spends its hour budget at 10m; a's shadow has spent its own (not the live router's
    business) and so has a's drafter series (it has no guard): only b alerts, for its hour window."""
    alert = next(a for a in alert_rules() if a["alert"] == "TicketRouterLLMBudgetExhausted")
    router = 'container="ticket-router"'
    per_series = [
        ("a", router, "", "hour", "0x60"),
        ("a", router, "", "day", "0x60"),
        ("a", router, "haiku-only", "hour", "1x60"),
        ("a", 'container="drafter"', "", "hour", "1x60"),
        ("b", router, "", "hour", "0x9 1x50"),
        ("b", router, "", "day", "0x60"),
    ]
    series = {
        f'ticket_router_llm_budget_exhausted{{namespace="{namespace}", {container}, '
        f'window="{window}"{f", shadow={shadow!r}" if shadow else ""}}}'.replace("'", '"'): values
        for namespace, container, shadow, window, values in per_series
    }
    expected = {
        "exp_labels": {"severity": "warning", "namespace": "b", "window": "hour"},
        "exp_annotations": {
            "summary": "ticket-router has spent its hour LLM budget",
            "description": (
                "A ticket-router replica in b has spent its share of the hour budget: Claude is not "
                "called until the window rolls over (UTC), and tickets the local tier cannot route "
                "wait in needs-human-triage as budget_exhausted."
            ),
            "runbook": alert["annotations"]["runbook"],
        },
    }
    return {
        "interval": "1m",
        "input_series": [{"series": name, "values": values} for name, values in series.items()],
        "alert_rule_test": [
            {"eval_time": "9m", "alertname": "TicketRouterLLMBudgetExhausted", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "TicketRouterLLMBudgetExhausted", "exp_alerts": [expected]},
        ],
    }


def test_rules_pass_promtool_and_no_ready_replica_alerts_per_namespace(tmp_path: Path) -> None:
    assert PROMTOOL is not None, "promtool (Debian package prometheus) is installed by `make test`"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(the("PrometheusRule")["spec"]), "utf-8")
    tests = [no_ready_case(series, minutes, namespace) for series, minutes, namespace in NO_READY_CASES]
    tests.append(drafts_failing_case())
    tests.append(budget_exhausted_case())
    scenario = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(scenario), "utf-8")
    for command in (["check", "rules", "rules.yaml"], ["test", "rules", "test.yaml"]):
        result = subprocess.run(
            [PROMTOOL, *command], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


# -- 7. no version label to forget ----------------------------------------------------------------


def all_label_sets(manifest: Manifest) -> list[dict[str, Any]]:
    labels = [manifest["metadata"].get("labels", {})]
    template = manifest.get("spec", {}).get("template")
    if isinstance(template, dict):
        labels.append(template.get("metadata", {}).get("labels", {}))
    return labels


@pytest.mark.parametrize("directory", PROFILES, ids=lambda d: d.name)
def test_no_version_label_that_the_image_tag_does_not_set(directory: Path) -> None:
    """Nothing ties a literal version label to the tag `images:` pins, so none is written."""
    for manifest in render(directory):
        for labels in all_label_sets(manifest):
            assert "app.kubernetes.io/version" not in labels, (
                f"{manifest['kind']}/{manifest['metadata']['name']}"
            )


# -- 8. documents the manifests cite --------------------------------------------------------------

MARKDOWN_PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
README_SECTION = re.compile(r'README(?:\.md|\'s)?(?:,|:)?\s+(?:section\s+)?"([^"]+)"')
COMMENT_CONTINUATION = re.compile(r"\n\s*#\s*")


def deploy_texts() -> dict[str, str]:
    """Every text file under deploy/, comment lines joined so a reference may wrap."""
    texts: dict[str, str] = {}
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.suffix in {".yaml", ".env", ".json", ""}:
            texts[str(path.relative_to(ROOT))] = COMMENT_CONTINUATION.sub(" ", path.read_text("utf-8"))
    return texts


def readme_headings() -> list[str]:
    return [
        line.lstrip("#").strip() for line in README.read_text("utf-8").splitlines() if line.startswith("#")
    ]


def test_reference_patterns_find_what_they_should() -> None:
    text = COMMENT_CONTINUATION.sub(
        " ", '# see docs/x.md and (README.md, section\n#   "Deploying on Kubernetes")'
    )
    assert MARKDOWN_PATH.findall(text) == ["docs/x.md", "README.md"]
    assert README_SECTION.findall(text) == ["Deploying on Kubernetes"]
    assert README_SECTION.findall('(README, "Benchmark")') == ["Benchmark"]
    assert README_SECTION.findall('see the README\'s "Claude models" section') == ["Claude models"]


def test_cited_documents_and_readme_sections_exist() -> None:
    headings = readme_headings()
    texts = deploy_texts()
    assert any(README_SECTION.search(text) for text in texts.values())
    for source, text in texts.items():
        for cited in MARKDOWN_PATH.findall(text):
            assert (ROOT / cited).is_file(), f"{source} cites {cited}, which does not exist"
        for section in README_SECTION.findall(text):
            assert any(h.startswith(section) for h in headings), f"{source} cites README section {section!r}"


# -- 9. labels Prometheus selects on --------------------------------------------------------------


def test_service_monitor_and_rules_carry_the_same_release_label() -> None:
    monitor = the("ServiceMonitor", ROUTER)["metadata"]["labels"].get("release")
    rules = the("PrometheusRule")["metadata"]["labels"].get("release")
    assert monitor, "kube-prometheus-stack selects ServiceMonitors by `release`"
    assert rules == monitor, "the PrometheusRule must be selected by the same Prometheus"
    drafter = the("ServiceMonitor", DRAFTER)["metadata"]["labels"].get("release")
    assert drafter == monitor, "the drafter's ServiceMonitor must be selected by the same Prometheus"
