"""The Kubernetes manifests, dashboard and alert rules in deploy/k8s, checked offline.

There is no cluster here, so the kustomization is rendered by reading the files it lists (plus
the ConfigMaps its generators make; checked against ``kubectl kustomize`` where kubectl is
installed), the built-in kinds are validated against the
pinned Kubernetes version's OpenAPI schemas with ``kubernetes_validate``, and the custom resources
(ServiceMonitor, PrometheusRule, ScaledObject, TriggerAuthentication) get structural checks. The
cross-file invariants that would otherwise only fail in production are tested too: env names are
real settings, the grace period outlasts the drain, selectors and ports line up, KEDA never scales
past the partition count, and every metric in a PromQL expression is one the service exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from consumer.config import Settings, load_settings
from consumer.metrics import Metrics
from consumer.taxonomy import parse_taxonomy

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DASHBOARD = K8S / "grafana-dashboard.json"
RULES = K8S / "prometheus-rules.yaml"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
# Every kustomization an operator may apply: the tested base and the overlays shipped beside it.
PROFILES = (K8S, DEPLOY / "overlays" / "local-only")

KUBERNETES_VERSION = "1.31.0"
CUSTOM_API_GROUPS = ("monitoring.coreos.com/", "keda.sh/")
NAMESPACE = "ticket-router"
METRIC_TOKEN = re.compile(r"\bticket_router_[a-z_]+")
SECRET_SETTINGS = {"ANTHROPIC_API_KEY", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"}
REQUIRED_ALERTS = {
    "TicketRouterConsumerLagGrowing",
    "TicketRouterTriageRatioHigh",
    "TicketRouterLLMErrorRatioHigh",
    "TicketRouterNotConsuming",
    "TicketRouterReadinessFlapping",
    "TicketRouterNoReadyReplica",
    "TicketRouterCorrectionRateRising",
}
Manifest = dict[str, Any]


# -- rendering ---------------------------------------------------------------------------------


def load_yaml_documents(path: Path) -> list[Manifest]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def kustomization(directory: Path = K8S) -> Manifest:
    data = yaml.safe_load((directory / "kustomization.yaml").read_text("utf-8"))
    assert isinstance(data, dict)
    return data


def read_env_file(path: Path) -> dict[str, str]:
    """A kustomize env file: KEY=VALUE lines; blank lines and # comments are skipped."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text("utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not KEY=VALUE: {raw!r}"
        assert key not in values, f"{path.name}:{number}: {key} is set twice"
        values[key] = value
    return values


def generated_config_map(generator: Manifest, defaults: Manifest, directory: Path = K8S) -> Manifest:
    """The ConfigMap a configMapGenerator entry makes (without the content-hash name suffix)."""
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, source = entry.rpartition("=")
        path = directory / source
        assert path.is_file(), f"configMapGenerator {generator['name']}: {source} does not exist"
        data[key or path.name] = path.read_text("utf-8")
    for entry in generator.get("envs", []):
        path = directory / entry
        assert path.is_file(), f"configMapGenerator {generator['name']}: {entry} does not exist"
        data.update(read_env_file(path))
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    options = generator.get("options", {})
    labels = {**defaults.get("labels", {}), **options.get("labels", {})}
    annotations = {**defaults.get("annotations", {}), **options.get("annotations", {})}
    metadata: Manifest = {"name": generator["name"]}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def pod_spec(deployment: Manifest) -> Manifest:
    spec: Manifest = deployment["spec"]["template"]["spec"]
    return spec


def merge_config_map(manifests: list[Manifest], generated: Manifest) -> None:
    """``behavior: merge``: an overlay's generator adds or replaces keys of the base's ConfigMap."""
    name = generated["metadata"]["name"]
    found = [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == name]
    assert len(found) == 1, f"behavior: merge, but no ConfigMap {name} in the resources"
    found[0]["data"].update(generated["data"])


def render(directory: Path = K8S) -> list[Manifest]:
    """What `kustomize build DIRECTORY` yields, minus generated-name hashes.

    Only what these kustomizations use: files and other kustomizations (an overlay's base) as
    resources, ConfigMap generators (new, or merged into the base's), ``namespace`` and ``images``.
    ``test_renderer_agrees_with_kubectl_kustomize`` holds it to the real thing.
    """
    kz = kustomization(directory)
    manifests: list[Manifest] = []
    for resource in kz["resources"]:
        path = (directory / resource).resolve()
        if path.is_dir():
            manifests.extend(render(path))
            continue
        assert path.is_file(), f"kustomization resource {resource} does not exist"
        manifests.extend(load_yaml_documents(path))
    defaults = kz.get("generatorOptions", {})
    for generator in kz.get("configMapGenerator", []):
        generated = generated_config_map(generator, defaults, directory)
        if generator.get("behavior", "create") == "merge":
            merge_config_map(manifests, generated)
        else:
            manifests.append(generated)
    images = {image["name"]: image for image in kz.get("images", [])}
    for manifest in manifests:
        if manifest["kind"] != "Namespace" and "namespace" in kz:
            manifest["metadata"]["namespace"] = kz["namespace"]
        if manifest["kind"] != "Deployment":
            continue
        for spec in pod_spec(manifest)["containers"]:
            image = images.get(spec["image"])
            if image is not None:
                spec["image"] = f"{image['newName']}:{image['newTag']}"
    return manifests


RENDERED = render()


def the(kind: str, name: str | None = None) -> Manifest:
    found = [m for m in RENDERED if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(deployment: Manifest) -> Manifest:
    containers: list[Manifest] = pod_spec(deployment)["containers"]
    assert len(containers) == 1
    return containers[0]


def env_config() -> dict[str, str]:
    data: dict[str, str] = the("ConfigMap", "ticket-router-env")["data"]
    return data


def setting_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def setting(name: str) -> str:
    """The ConfigMap's value, or the Settings default when the ConfigMap leaves it unset."""
    config = env_config()
    if name in config:
        return config[name]
    return str(Settings.model_fields[name.lower()].default)


def is_builtin(manifest: Manifest) -> bool:
    return not str(manifest["apiVersion"]).startswith(CUSTOM_API_GROUPS)


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


# -- metric names --------------------------------------------------------------------------------

SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}


def exposable_series_names(metrics: Metrics) -> set[str]:
    """Every series name the registry can put in a scrape.

    ``Metrics.metric_names()`` lists family names plus the samples present *now*; a labelled
    counter with no child yet has no ``_total`` sample and a counter family's bare name is not a
    series Prometheus stores. So the names come from each family's type, the way prometheus_client
    names samples (counter ``x`` → ``x_total``; histogram ``x`` → ``x_bucket``/``x_sum``/``x_count``).
    """
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def metric_names_in(text: str) -> set[str]:
    return set(METRIC_TOKEN.findall(text))


def dashboard() -> Manifest:
    data = json.loads(DASHBOARD.read_text("utf-8"))
    assert isinstance(data, dict)
    return data


def dashboard_exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_exprs(item)


def alert_rules() -> list[Manifest]:
    rule = the("PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


def used_metric_names() -> dict[str, set[str]]:
    """Metric names the dashboard and the alert rules use, per file (whole text, not just exprs)."""
    return {
        DASHBOARD.name: metric_names_in(DASHBOARD.read_text("utf-8")),
        RULES.name: metric_names_in(RULES.read_text("utf-8")),
    }


# -- the kustomization ---------------------------------------------------------------------------


def test_kustomization_lists_existing_files_and_not_the_secret_example() -> None:
    kz = kustomization()
    assert kz["namespace"] == NAMESPACE
    listed = set(kz["resources"])
    for generator in kz.get("configMapGenerator", []):
        listed.update(entry.rpartition("=")[2] for entry in generator.get("files", []))
        listed.update(generator.get("envs", []))
    for name in listed:
        assert (K8S / name).is_file(), name
    assert SECRET_EXAMPLE.name not in listed, "the example Secret must not be applied"
    assert SECRET_EXAMPLE.is_file()
    kinds = {m["kind"] for m in RENDERED}
    assert {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
        "ScaledObject",
    } <= kinds
    assert "Secret" not in kinds


# The generated ConfigMaps whose names kustomize suffixes with a content hash.
GENERATED_NAME_HASH = re.compile(r"\b(ticket-router-(?:env|taxonomy))-[a-z0-9]{10}\b")


def kubectl_kustomize(directory: Path) -> list[Manifest]:
    """``kubectl kustomize DIRECTORY`` (kustomize built into kubectl), hash suffixes removed."""
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(GENERATED_NAME_HASH.sub(r"\1", result.stdout)) if doc]


def by_identity(manifests: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    keyed = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    assert len(keyed) == len(manifests), "two resources with the same kind and name"
    return keyed


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its kustomize) is not installed")
@pytest.mark.parametrize("directory", PROFILES, ids=lambda d: d.name)
def test_renderer_agrees_with_kubectl_kustomize(directory: Path) -> None:
    """Every other test reads ``render()``; it must be what ``kubectl apply -k`` would apply."""
    assert by_identity(kubectl_kustomize(directory)) == by_identity(render(directory))


@pytest.mark.parametrize(
    "manifest",
    [m for m in RENDERED if is_builtin(m)] + load_yaml_documents(SECRET_EXAMPLE),
    ids=lambda m: f"{m['kind']}/{m['metadata']['name']}",
)
def test_builtin_kinds_validate_against_pinned_kubernetes(manifest: Manifest) -> None:
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_every_resource_carries_the_standard_labels() -> None:
    for manifest in RENDERED:
        labels = manifest["metadata"].get("labels", {})
        where = f"{manifest['kind']}/{manifest['metadata']['name']}"
        assert labels.get("app.kubernetes.io/name") == "ticket-router", where
        assert labels.get("app.kubernetes.io/part-of") == "ticket-router", where
        assert labels.get("app.kubernetes.io/managed-by") == "kustomize", where


def test_image_is_a_pinned_placeholder_set_by_kustomize() -> None:
    image = container(the("Deployment"))["image"]
    name, _, tag = image.rpartition(":")
    assert name.endswith("/ticket-router") and tag and tag != "latest", image


# -- the Deployment --------------------------------------------------------------------------------


def test_pod_runs_unprivileged_with_a_read_only_root() -> None:
    deployment = the("Deployment", "ticket-router")
    spec = pod_spec(deployment)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] > 0
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    security = container(deployment)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security.get("runAsUser", pod_security["runAsUser"]) == pod_security["runAsUser"]
    assert spec["automountServiceAccountToken"] is False
    account = the("ServiceAccount", spec["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    tmp = [m for m in container(deployment)["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert len(tmp) == 1
    volume = next(v for v in spec["volumes"] if v["name"] == tmp[0]["name"])
    assert "emptyDir" in volume


def test_dockerfile_user_matches_the_pod_security_context() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text("utf-8")
    users = re.findall(r"^USER\s+(\d+)(?::(\d+))?\s*$", dockerfile, flags=re.MULTILINE)
    assert users, "the final stage must set a numeric USER"
    uid, gid = users[-1]
    spec = pod_spec(the("Deployment"))
    assert int(uid) == spec["securityContext"]["runAsUser"]
    assert not gid or int(gid) == spec["securityContext"]["runAsGroup"]
    assert 'ENTRYPOINT ["ticket-router", "consume"]' in dockerfile
    assert "[embedded" not in dockerfile and "calfkit" not in dockerfile
    assert len(re.findall(r"^FROM\s", dockerfile, flags=re.MULTILINE)) >= 2


def test_resources_have_requests_and_limits() -> None:
    resources = container(the("Deployment"))["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), kind


def test_probes_hit_health_endpoints_on_the_metrics_port() -> None:
    main = container(the("Deployment"))
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    metrics_port = int(setting("METRICS_PORT"))
    assert ports["metrics"] == metrics_port == 9000

    def port_of(probe: Manifest) -> int:
        port = probe["httpGet"]["port"]
        return ports[port] if isinstance(port, str) else int(port)

    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in main:
            assert port_of(main[probe]) == metrics_port, probe


def test_grace_period_outlasts_the_drain_timeout() -> None:
    grace = pod_spec(the("Deployment"))["terminationGracePeriodSeconds"]
    drain = float(setting("DRAIN_TIMEOUT_S"))
    # Drain, then a final commit and closing the clients: leave them at least 10 seconds.
    assert grace >= drain + 10, f"terminationGracePeriodSeconds {grace} vs DRAIN_TIMEOUT_S {drain}"


def test_configmap_sets_only_real_settings_and_no_secrets() -> None:
    known = setting_names()
    config = env_config()
    unknown = sorted(set(config) - known)
    assert not unknown, f"not Settings fields (typo?): {unknown}"
    assert not SECRET_SETTINGS & set(config), "secrets belong in the Secret, not the ConfigMap"
    env = container(the("Deployment"))["env"]
    assert {e["name"] for e in env} <= known
    from_secret = {e["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
    assert from_secret == SECRET_SETTINGS
    refs = [r["configMapRef"]["name"] for r in container(the("Deployment"))["envFrom"]]
    assert refs == ["ticket-router-env"]


def test_configmap_is_a_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment the pod gets (ConfigMap + Secret placeholders) passes Settings validation."""
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env_config().items():
        monkeypatch.setenv(name, value)
    for name in SECRET_SETTINGS:
        monkeypatch.setenv(name, "placeholder")
    settings = load_settings()
    assert settings.metrics_port == 9000
    assert settings.kafka_bootstrap_servers


def test_secret_references_match_the_example_secret() -> None:
    example = {
        s["metadata"]["name"]: set(s.get("stringData", {})) for s in load_yaml_documents(SECRET_EXAMPLE)
    }
    deployment = the("Deployment")
    for entry in container(deployment)["env"]:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["key"] in example.get(ref["name"], set()), ref
    for volume in pod_spec(deployment)["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["secretName"] in example, volume
    trigger_auth = the("TriggerAuthentication")
    for ref in trigger_auth["spec"]["secretTargetRef"]:
        assert ref["key"] in example.get(ref["name"], set()), ref


def test_kafka_tls_files_come_from_the_mounted_secret() -> None:
    config = env_config()
    deployment = the("Deployment")
    mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
    secret_dirs: dict[str, str] = {}
    for volume in pod_spec(deployment)["volumes"]:
        if "secret" in volume:
            secret_dirs[mounts[volume["name"]]["mountPath"]] = volume["secret"]["secretName"]
    example = {
        s["metadata"]["name"]: set(s.get("stringData", {})) for s in load_yaml_documents(SECRET_EXAMPLE)
    }
    for name in ("KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE"):
        if name not in config:
            continue
        path = Path(config[name])
        assert str(path.parent) in secret_dirs, f"{name}={path} is not in a mounted Secret"
        assert path.name in example[secret_dirs[str(path.parent)]], f"{name}: no key {path.name}"
    protocol = config.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    if protocol.startswith("SASL"):
        assert config.get("KAFKA_SASL_MECHANISM") in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}


def test_taxonomy_configmap_parses_and_is_mounted_at_taxonomy_path() -> None:
    taxonomy_map = the("ConfigMap", "ticket-router-taxonomy")
    (key, text), *rest = taxonomy_map["data"].items()
    assert not rest
    taxonomy = parse_taxonomy(yaml.safe_load(text), source=key)
    assert taxonomy.axes
    deployment = the("Deployment")
    volume = next(v for v in pod_spec(deployment)["volumes"] if "configMap" in v and v["name"] == "taxonomy")
    assert volume["configMap"]["name"] == "ticket-router-taxonomy"
    mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == volume["name"])
    mounted_file = mount["mountPath"] if mount.get("subPath") == key else f"{mount['mountPath']}/{key}"
    assert env_config()["TAXONOMY_PATH"] == mounted_file == "/etc/ticket-router/taxonomy.yaml"


# -- Service, monitoring, disruption, network --------------------------------------------------------


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = the("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def test_deployment_selector_matches_its_pods() -> None:
    assert selector_matches(the("Deployment")["spec"]["selector"]["matchLabels"], pod_labels())


def test_service_exposes_the_metrics_port_by_name() -> None:
    service = the("Service", "ticket-router")
    assert selector_matches(service["spec"]["selector"], pod_labels())
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["port"] == 9000
    container_ports = {p["name"] for p in container(the("Deployment"))["ports"]}
    assert port["targetPort"] in container_ports


def test_service_monitor_scrapes_the_service() -> None:
    monitor = the("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = the("Service", "ticket-router")
    assert selector_matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"]
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint.get("path", "/metrics") == "/metrics"


def test_pod_disruption_budget_selects_the_pods() -> None:
    pdb = the("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert selector_matches(pdb["spec"]["selector"]["matchLabels"], pod_labels())


def test_network_policy_allows_only_scrapes_in_and_kafka_dns_https_out() -> None:
    policy = the("NetworkPolicy")
    spec = policy["spec"]
    assert selector_matches(spec["podSelector"]["matchLabels"], pod_labels())
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = spec["ingress"]
    assert [p["port"] for p in ingress["ports"]] == [9000]
    (source,) = ingress["from"]
    assert source["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    egress_ports = {(p["port"], p.get("protocol", "TCP")) for rule in spec["egress"] for p in rule["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (9092, "TCP"), (9093, "TCP"), (443, "TCP")}
    bootstrap_ports = {
        int(server.rpartition(":")[2]) for server in setting("KAFKA_BOOTSTRAP_SERVERS").split(",")
    }
    assert bootstrap_ports <= {port for port, _ in egress_ports}


def test_scaled_object_scales_on_lag_up_to_the_partition_count() -> None:
    scaled = the("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    deployment = the("Deployment")
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    assert spec["maxReplicaCount"] == int(setting("TOPIC_PARTITIONS")) == 6
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert metadata["topic"] == setting("INPUT_TOPIC") == "tickets"
    assert metadata["consumerGroup"] == setting("CONSUMER_GROUP")
    assert metadata["bootstrapServers"] == setting("KAFKA_BOOTSTRAP_SERVERS")
    assert all(isinstance(value, str) for value in metadata.values()), "KEDA metadata values are strings"
    assert int(metadata["lagThreshold"]) > 0
    protocol = setting("KAFKA_SECURITY_PROTOCOL")
    assert (metadata.get("tls") == "enable") == protocol.endswith("SSL")
    if protocol.startswith("SASL"):
        keda_sasl = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
        assert metadata["sasl"] == keda_sasl[setting("KAFKA_SASL_MECHANISM")]
    auth = the("TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["apiVersion"] == "keda.sh/v1alpha1"


# -- dashboard and alert rules ------------------------------------------------------------------------


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar() -> None:
    generated = the("ConfigMap", "ticket-router-dashboard")
    assert generated["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = generated["data"].values()
    assert json.loads(text)["uid"] == dashboard()["uid"]
    kz = kustomization()
    generator = next(g for g in kz["configMapGenerator"] if g["name"] == "ticket-router-dashboard")
    assert generator["options"]["disableNameSuffixHash"] is True


def test_dashboard_has_the_panels_operators_need() -> None:
    data = dashboard()
    assert data["uid"] and data["title"]
    panels = [p for p in data["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in data["panels"]}) == len(data["panels"]), "panel ids must be unique"
    for panel in panels:
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    exprs = list(dashboard_exprs(data["panels"]))
    joined = "\n".join(exprs)
    for quantile in ("0.5", "0.95", "0.99"):
        assert re.search(
            rf"histogram_quantile\({quantile}, sum by \(tier, le\) "
            r"\(rate\(ticket_router_tier_latency_seconds_bucket",
            joined,
        ), f"tier latency p{quantile}"
    for needle in (
        "sum by (queue) (rate(ticket_router_tickets_routed_total",
        "sum by (error_kind) (rate(ticket_router_tickets_triaged_total",
        "ticket_router_escalations_total",
        "ticket_router_final_tier_total",
        "ticket_router_llm_tokens_total",
        "ticket_router_llm_cost_usd_total",
        'kind="cache_read"',
        "by (topic, partition) (ticket_router_consumer_lag",
        "ticket_router_llm_retries_total",
        "ticket_router_in_flight",
        "ticket_router_paused_partitions",
        "ticket_router_commit_latency_seconds_bucket",
    ):
        assert needle in joined, needle


def test_alert_rules_are_complete() -> None:
    rule = the("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"]
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
    alerts = alert_rules()
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS
    for alert in alerts:
        assert alert["expr"].strip(), alert["alert"]
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}, alert["alert"]
        for annotation in ("summary", "description", "runbook"):
            assert alert["annotations"].get(annotation, "").strip(), f"{alert['alert']}: {annotation}"
        assert alert["annotations"]["runbook"].startswith("Check first"), alert["alert"]
        if "for" in alert:
            assert re.fullmatch(r"\d+[smh]", alert["for"]), alert["alert"]
    by_name = {a["alert"]: a["expr"] for a in alerts}
    assert "ticket_router_consumer_lag" in by_name["TicketRouterConsumerLagGrowing"]
    assert "> 0.05" in by_name["TicketRouterTriageRatioHigh"]
    assert 'status!="ok"' in by_name["TicketRouterLLMErrorRatioHigh"]
    assert "ticket_router_events_consumed_total" in by_name["TicketRouterNotConsuming"]
    assert 'changes(ticket_router_ready{shadow=""}[' in by_name["TicketRouterReadinessFlapping"]
    rising = by_name["TicketRouterCorrectionRateRising"]
    assert "ticket_router_corrections_total" in rising and "offset 1w" in rising and "> 0.10" in rising


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_promql_brackets_balance(source: str) -> None:
    exprs = (
        list(dashboard_exprs(dashboard())) if source == "dashboard" else [a["expr"] for a in alert_rules()]
    )
    assert exprs
    pairs = {")": "(", "]": "[", "}": "{"}
    for expr in exprs:
        stack: list[str] = []
        for char in re.sub(r'"[^"]*"', '""', expr):
            if char in "([{":
                stack.append(char)
            elif char in pairs:
                assert stack and stack.pop() == pairs[char], expr
        assert not stack, expr


def test_exposable_names_follow_prometheus_client_naming() -> None:
    names = exposable_series_names(Metrics())
    assert "ticket_router_events_consumed_total" in names
    assert "ticket_router_tier_latency_seconds_bucket" in names
    assert "ticket_router_consumer_lag" in names
    assert "ticket_router_events_consumed" not in names, "a counter's bare family name is not a series"


def test_dashboard_and_alerts_use_only_exported_metrics() -> None:
    exposable = exposable_series_names(Metrics())
    used = used_metric_names()
    for source, names in used.items():
        assert names, f"no ticket_router_ metric found in {source}"
        unknown = sorted(names - exposable)
        assert not unknown, f"{source} uses metrics the service does not export: {unknown}"


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_query_describes_the_live_router_not_a_shadow(source: str) -> None:
    """A shadow's samples carry shadow="NAME"; every selector must keep them out with shadow=""."""
    exprs = (
        list(dashboard_exprs(dashboard())) if source == "dashboard" else [a["expr"] for a in alert_rules()]
    )
    for expr in exprs:
        for match in re.finditer(r"(ticket_router_[a-z_]+)(\{[^}]*\})?", expr):
            assert match.group(2) and 'shadow=""' in match.group(2), f"{match.group(1)} in {expr}"
