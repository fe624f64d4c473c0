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

from consumer.config import ConfigError, Settings, load_settings
from consumer.metrics import DraftMetrics, Metrics
from consumer.routing import reachable_queues
from consumer.taxonomy import parse_taxonomy

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DASHBOARD = K8S / "grafana-dashboard.json"
RULES = K8S / "prometheus-rules.yaml"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
INGRESS_EXAMPLE = K8S / "ingress.example.yaml"
# Files beside the kustomization that must never be applied by it.
EXAMPLES = (SECRET_EXAMPLE, INGRESS_EXAMPLE)
# Every kustomization an operator may apply: the tested base and the overlays shipped beside it.
PROFILES = (K8S, DEPLOY / "overlays" / "local-only")

KUBERNETES_VERSION = "1.31.0"
CUSTOM_API_GROUPS = ("monitoring.coreos.com/", "keda.sh/")
NAMESPACE = "ticket-router"
METRIC_TOKEN = re.compile(r"\bticket_router_[a-z_]+")
SECRET_SETTINGS = {"ANTHROPIC_API_KEY", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"}
# The HTTP API's credentials: in the Secret, read by the router only, each optional.
API_SECRET_SETTINGS = {"API_TOKENS", "API_HMAC_SECRETS", "API_ZENDESK_SECRETS", "API_INTERCOM_SECRETS"}
# A well-formed client:credential value for a placeholder API secret (16+ characters).
API_CREDENTIAL_PLACEHOLDER = "helpdesk:0123456789abcdef0123456789abcdef"
ROUTER = "ticket-router"
DRAFTER = "ticket-router-drafter"
# The drafter's container name: the `container` label the dashboard and rules tell it apart by.
DRAFTER_CONTAINER = "drafter"
REQUIRED_ALERTS = {
    "TicketRouterConsumerLagGrowing",
    "TicketRouterTriageRatioHigh",
    "TicketRouterLLMErrorRatioHigh",
    "TicketRouterNotConsuming",
    "TicketRouterReadinessFlapping",
    "TicketRouterNoReadyReplica",
    "TicketRouterCorrectionRateRising",
    "TicketRouterDraftsFailing",
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


def deleted_by_patches(kz: Manifest) -> set[tuple[str, str]]:
    """(kind, name) of every resource a ``$patch: delete`` patch removes; any other patch fails,
    so the renderer never silently differs from kustomize."""
    deleted: set[tuple[str, str]] = set()
    for entry in kz.get("patches", []):
        patch = yaml.safe_load(entry.get("patch", "")) if isinstance(entry, dict) else None
        assert isinstance(patch, dict) and patch.get("$patch") == "delete", f"unsupported patch {entry}"
        deleted.add((patch["kind"], patch["metadata"]["name"]))
    return deleted


def render(directory: Path = K8S) -> list[Manifest]:
    """What `kustomize build DIRECTORY` yields, minus generated-name hashes.

    Only what these kustomizations use: files and other kustomizations (an overlay's base) as
    resources, ConfigMap generators (new, or merged into the base's), ``$patch: delete`` patches,
    ``namespace`` and ``images``. ``test_renderer_agrees_with_kubectl_kustomize`` holds it to the
    real thing.
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
    deleted = deleted_by_patches(kz)
    manifests = [m for m in manifests if (m["kind"], m["metadata"]["name"]) not in deleted]
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


def pod_environment(deployment: str = ROUTER) -> dict[str, str]:
    """The non-secret environment of a Deployment's container: its ConfigMaps in ``envFrom``
    order, then its literal ``env`` values, which Kubernetes lets win."""
    spec = container(the("Deployment", deployment))
    environment: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        environment.update(the("ConfigMap", source["configMapRef"]["name"])["data"])
    environment.update({e["name"]: e["value"] for e in spec.get("env", []) if "value" in e})
    return environment


def secret_env_names(deployment: str) -> set[str]:
    env = container(the("Deployment", deployment)).get("env", [])
    return {e["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}


def setting_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def setting(name: str, deployment: str = ROUTER) -> str:
    """The value a Deployment's pods get, or the Settings default when nothing sets it."""
    config = pod_environment(deployment)
    if name in config:
        return config[name]
    return str(Settings.model_fields[name.lower()].default)


def pod_settings(deployment: str, monkeypatch: pytest.MonkeyPatch, secrets: dict[str, str]) -> Settings:
    """Settings exactly as a Deployment's pods load them: their environment plus ``secrets``."""
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in {**pod_environment(deployment), **secrets}.items():
        monkeypatch.setenv(name, value)
    return load_settings()


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


def template_queries() -> list[str]:
    """The PromQL of the dashboard's query variables (namespace, pod)."""
    variables = dashboard()["templating"]["list"]
    return [v["query"]["query"] for v in variables if isinstance(v.get("query"), dict)]


def used_metric_names(container_matcher: str = 'container!="drafter"') -> dict[str, set[str]]:
    """Metric names the dashboard and the alert rules use, per file: by default those of the
    router's queries (the ones that exclude the drafter's container), which a scrape of a router
    must show; ``container="drafter"`` gives the drafter's."""
    queries = {
        DASHBOARD.name: [*dashboard_exprs(dashboard()), *template_queries()],
        RULES.name: [a["expr"] for a in alert_rules()],
    }
    return {
        source: {
            match.group(1)
            for query in texts
            for match in re.finditer(r"(ticket_router_[a-z_]+)(\{[^}]*\})?", query)
            if container_matcher in (match.group(2) or "")
        }
        for source, texts in queries.items()
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
    for example in EXAMPLES:
        assert example.name not in listed, f"{example.name} is an example and must not be applied"
        assert example.is_file()
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
    assert "Secret" not in kinds and "Ingress" not in kinds


# The generated ConfigMaps whose names kustomize suffixes with a content hash.
GENERATED_NAME_HASH = re.compile(r"\b(ticket-router-(?:env|api-env|taxonomy))-[a-z0-9]{10}\b")


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
    [m for m in RENDERED if is_builtin(m)] + [m for path in EXAMPLES for m in load_yaml_documents(path)],
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
    image = container(the("Deployment", ROUTER))["image"]
    name, _, tag = image.rpartition(":")
    assert name.endswith("/ticket-router") and tag and tag != "latest", image
    assert container(the("Deployment", DRAFTER))["image"] == image, "the drafter runs the router's image"


# -- the Deployment --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [ROUTER, DRAFTER])
def test_pod_runs_unprivileged_with_a_read_only_root(name: str) -> None:
    deployment = the("Deployment", name)
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
    spec = pod_spec(the("Deployment", ROUTER))
    assert int(uid) == spec["securityContext"]["runAsUser"]
    assert not gid or int(gid) == spec["securityContext"]["runAsGroup"]
    assert 'ENTRYPOINT ["ticket-router", "consume"]' in dockerfile
    assert "[embedded" not in dockerfile and "calfkit" not in dockerfile
    assert len(re.findall(r"^FROM\s", dockerfile, flags=re.MULTILINE)) >= 2


@pytest.mark.parametrize("name", [ROUTER, DRAFTER])
def test_resources_have_requests_and_limits(name: str) -> None:
    resources = container(the("Deployment", name))["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), kind


@pytest.mark.parametrize(
    ("name", "port_setting", "port"), [(ROUTER, "METRICS_PORT", 9000), (DRAFTER, "DRAFT_METRICS_PORT", 9001)]
)
def test_probes_hit_health_endpoints_on_the_metrics_port(name: str, port_setting: str, port: int) -> None:
    main = container(the("Deployment", name))
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    metrics_port = int(setting(port_setting, name))
    assert ports["metrics"] == metrics_port == port

    def port_of(probe: Manifest) -> int:
        port = probe["httpGet"]["port"]
        return ports[port] if isinstance(port, str) else int(port)

    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in main:
            assert port_of(main[probe]) == metrics_port, probe


@pytest.mark.parametrize("name", [ROUTER, DRAFTER])
def test_grace_period_outlasts_the_drain_timeout(name: str) -> None:
    grace = pod_spec(the("Deployment", name))["terminationGracePeriodSeconds"]
    drain = float(setting("DRAIN_TIMEOUT_S", name))
    # Drain, then a final commit and closing the clients: leave them at least 10 seconds.
    assert grace >= drain + 10, f"terminationGracePeriodSeconds {grace} vs DRAIN_TIMEOUT_S {drain}"


@pytest.mark.parametrize("config_map", ["ticket-router-env", "ticket-router-api-env"])
def test_configmap_sets_only_real_settings_and_no_secrets(config_map: str) -> None:
    config: dict[str, str] = the("ConfigMap", config_map)["data"]
    unknown = sorted(set(config) - setting_names())
    assert not unknown, f"not Settings fields (typo?): {unknown}"
    secrets = SECRET_SETTINGS | API_SECRET_SETTINGS
    assert not secrets & set(config), "secrets belong in the Secret, not the ConfigMap"


@pytest.mark.parametrize(
    ("name", "config_maps", "secrets"),
    [
        (ROUTER, ["ticket-router-env", "ticket-router-api-env"], SECRET_SETTINGS | API_SECRET_SETTINGS),
        (DRAFTER, ["ticket-router-env"], SECRET_SETTINGS),
    ],
)
def test_deployment_reads_its_settings_and_secrets(
    name: str, config_maps: list[str], secrets: set[str]
) -> None:
    """The API's settings and credentials reach the router only; the drafter serves no API."""
    env = container(the("Deployment", name))["env"]
    assert {e["name"] for e in env} <= setting_names()
    assert secret_env_names(name) == secrets
    refs = [r["configMapRef"]["name"] for r in container(the("Deployment", name))["envFrom"]]
    assert refs == config_maps


def test_router_environment_is_a_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """The router pod's environment (ConfigMaps + Secret placeholders) passes Settings validation,
    with the API listening on every interface of the port its Service targets."""
    placeholders = {name: "placeholder" for name in SECRET_SETTINGS}
    settings = pod_settings(ROUTER, monkeypatch, {**placeholders, "API_TOKENS": API_CREDENTIAL_PLACEHOLDER})
    assert settings.metrics_port == 9000
    assert settings.kafka_bootstrap_servers
    ports = {p["name"]: p["containerPort"] for p in container(the("Deployment", ROUTER))["ports"]}
    assert settings.api_port == ports["api"] == 8080
    assert settings.api_host == "0.0.0.0", "the Service reaches the pod on its pod IP, not loopback"


def test_router_without_api_credentials_stops_with_one_line_naming_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API secrets are optional references; this refusal is what stops an API nobody can call."""
    with pytest.raises(ConfigError) as caught:
        pod_settings(ROUTER, monkeypatch, {name: "placeholder" for name in SECRET_SETTINGS})
    message = str(caught.value)
    assert "API_TOKENS" in message and "API_HMAC_SECRETS" in message and "\n" not in message


def test_drafter_environment_is_a_valid_configuration_without_api_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The drafter loads the same Settings; with API_PORT in its environment it would need the API's
    credentials (see api.env), which it is never given."""
    settings = pod_settings(DRAFTER, monkeypatch, {name: "placeholder" for name in secret_env_names(DRAFTER)})
    assert settings.api_port is None
    assert settings.draft_metrics_port == 9001
    assert settings.draft_deadline_s <= settings.drain_timeout_s
    assert settings.auto_offset_reset == "latest"


def test_secret_references_match_the_example_secret() -> None:
    example = {
        s["metadata"]["name"]: set(s.get("stringData", {})) for s in load_yaml_documents(SECRET_EXAMPLE)
    }
    for deployment in (the("Deployment", ROUTER), the("Deployment", DRAFTER)):
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


@pytest.mark.parametrize("name", [ROUTER, DRAFTER])
def test_kafka_tls_files_come_from_the_mounted_secret(name: str) -> None:
    config = pod_environment(name)
    deployment = the("Deployment", name)
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


@pytest.mark.parametrize("name", [ROUTER, DRAFTER])
def test_taxonomy_configmap_parses_and_is_mounted_at_taxonomy_path(name: str) -> None:
    taxonomy_map = the("ConfigMap", "ticket-router-taxonomy")
    (key, text), *rest = taxonomy_map["data"].items()
    assert not rest
    taxonomy = parse_taxonomy(yaml.safe_load(text), source=key)
    assert taxonomy.axes
    if name == DRAFTER:
        assert taxonomy.handlers, "the drafter refuses to start on a taxonomy without handlers"
    deployment = the("Deployment", name)
    volume = next(v for v in pod_spec(deployment)["volumes"] if "configMap" in v and v["name"] == "taxonomy")
    assert volume["configMap"]["name"] == "ticket-router-taxonomy"
    mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == volume["name"])
    mounted_file = mount["mountPath"] if mount.get("subPath") == key else f"{mount['mountPath']}/{key}"
    assert env_config()["TAXONOMY_PATH"] == mounted_file == "/etc/ticket-router/taxonomy.yaml"


# -- Service, monitoring, disruption, network --------------------------------------------------------


def pod_labels(deployment: str = ROUTER) -> dict[str, str]:
    labels: dict[str, str] = the("Deployment", deployment)["spec"]["template"]["metadata"]["labels"]
    return labels


def selected_deployments(selector: dict[str, str]) -> set[str]:
    """The Deployments whose pods a label selector picks."""
    return {
        m["metadata"]["name"]
        for m in RENDERED
        if m["kind"] == "Deployment"
        and selector_matches(selector, m["spec"]["template"]["metadata"]["labels"])
    }


def pod_selectors() -> Iterator[tuple[str, str, dict[str, str]]]:
    """(kind, name, selector) of everything that selects pods."""
    for m in RENDERED:
        spec = m.get("spec", {})
        where = (m["kind"], m["metadata"]["name"])
        if m["kind"] in {"Deployment", "PodDisruptionBudget"}:
            yield *where, spec["selector"]["matchLabels"]
        elif m["kind"] == "Service":
            yield *where, spec["selector"]
        elif m["kind"] == "NetworkPolicy":
            yield *where, spec["podSelector"]["matchLabels"]
        if m["kind"] == "Deployment":
            for constraint in pod_spec(m).get("topologySpreadConstraints", []):
                yield *where, constraint["labelSelector"]["matchLabels"]


def owner(name: str) -> str:
    """The Deployment an object belongs to: the drafter's carry its name, the rest are the router's."""
    return DRAFTER if name.startswith(DRAFTER) else ROUTER


def test_every_selector_picks_the_pods_of_its_own_deployment_only() -> None:
    """A drafter pod selected by the router's Service, budget or policy would get API traffic,
    count against the router's evictions, or get the router's ports opened."""
    checked = 0
    for kind, name, selector in pod_selectors():
        assert selected_deployments(selector) == {owner(name)}, f"{kind}/{name} selects {selector}"
        checked += 1
    assert checked >= 12


def test_service_exposes_the_metrics_port_by_name() -> None:
    service = the("Service", ROUTER)
    assert selector_matches(service["spec"]["selector"], pod_labels())
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["port"] == 9000
    container_ports = {p["name"] for p in container(the("Deployment", ROUTER))["ports"]}
    assert port["targetPort"] in container_ports


def test_drafter_service_exposes_its_metrics_port() -> None:
    service = the("Service", DRAFTER)
    assert selector_matches(service["spec"]["selector"], pod_labels(DRAFTER))
    (port,) = service["spec"]["ports"]
    ports = {p["name"]: p["containerPort"] for p in container(the("Deployment", DRAFTER))["ports"]}
    assert port["name"] == "metrics" and port["targetPort"] == "metrics"
    assert port["port"] == ports["metrics"] == int(setting("DRAFT_METRICS_PORT", DRAFTER))


def test_api_service_reaches_the_routers_api_port() -> None:
    service = the("Service", "ticket-router-api")
    assert service["spec"]["type"] == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80 and port["name"] == "http", "plain HTTP behind the TLS-ending controller"
    ports = {p["name"]: p["containerPort"] for p in container(the("Deployment", ROUTER))["ports"]}
    assert port["targetPort"] == "api"
    assert ports["api"] == int(setting("API_PORT")) != ports["metrics"]


@pytest.mark.parametrize(("monitor", "service"), [(ROUTER, ROUTER), (DRAFTER, DRAFTER)])
def test_service_monitor_scrapes_the_service(monitor: str, service: str) -> None:
    scrape = the("ServiceMonitor", monitor)
    assert scrape["apiVersion"] == "monitoring.coreos.com/v1"
    selected = [
        m["metadata"]["name"]
        for m in RENDERED
        if m["kind"] == "Service"
        and selector_matches(scrape["spec"]["selector"]["matchLabels"], m["metadata"]["labels"])
    ]
    assert selected == [service], "a ServiceMonitor scrapes exactly its own Service"
    service_ports = {p["name"] for p in the("Service", service)["spec"]["ports"]}
    assert scrape["spec"]["endpoints"]
    for endpoint in scrape["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint.get("path", "/metrics") == "/metrics"


def test_every_metrics_port_is_scraped() -> None:
    scraped = {
        (s["metadata"]["name"], endpoint["port"])
        for monitor in (m for m in RENDERED if m["kind"] == "ServiceMonitor")
        for s in RENDERED
        if s["kind"] == "Service"
        and selector_matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        for endpoint in monitor["spec"]["endpoints"]
    }
    services = [m for m in RENDERED if m["kind"] == "Service"]
    with_metrics = {
        (s["metadata"]["name"], "metrics")
        for s in services
        if any(p["name"] == "metrics" for p in s["spec"]["ports"])
    }
    assert with_metrics == {(ROUTER, "metrics"), (DRAFTER, "metrics")}
    assert with_metrics <= scraped


@pytest.mark.parametrize("name", [ROUTER, DRAFTER])
def test_pod_disruption_budget_selects_the_pods(name: str) -> None:
    pdb = the("PodDisruptionBudget", name)
    assert pdb["apiVersion"] == "policy/v1"
    assert selector_matches(pdb["spec"]["selector"]["matchLabels"], pod_labels(name))


def policies_for(deployment: str) -> list[Manifest]:
    return [
        m
        for m in RENDERED
        if m["kind"] == "NetworkPolicy"
        and selector_matches(m["spec"]["podSelector"]["matchLabels"], pod_labels(deployment))
    ]


def allowed_ingress(deployment: str) -> set[tuple[str, int]]:
    """(source namespace, port) pairs every NetworkPolicy selecting the pods adds up to."""
    allowed: set[tuple[str, int]] = set()
    for policy in policies_for(deployment):
        for rule in policy["spec"].get("ingress", []):
            sources = [
                peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                for peer in rule["from"]
            ]
            allowed.update((source, port["port"]) for source in sources for port in rule["ports"])
    return allowed


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (ROUTER, {("monitoring", 9000), ("ingress-nginx", 8080)}),
        (DRAFTER, {("monitoring", 9001)}),
    ],
)
def test_network_policy_allows_only_scrapes_and_api_in_and_kafka_dns_https_out(
    name: str, expected: set[tuple[str, int]]
) -> None:
    policies = policies_for(name)
    assert all("Ingress" in p["spec"]["policyTypes"] for p in policies), "default deny in"
    assert allowed_ingress(name) == expected
    ports = {p["name"]: p["containerPort"] for p in container(the("Deployment", name))["ports"]}
    assert {port for _, port in expected} == set(ports.values()), "exactly the container's ports"
    if name == ROUTER:
        assert ("ingress-nginx", int(setting("API_PORT"))) in expected
    (policy,) = [p for p in policies if "Egress" in p["spec"]["policyTypes"]]
    spec = policy["spec"]
    egress_ports = {(p["port"], p.get("protocol", "TCP")) for rule in spec["egress"] for p in rule["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (9092, "TCP"), (9093, "TCP"), (443, "TCP")}
    bootstrap_ports = {
        int(server.rpartition(":")[2]) for server in setting("KAFKA_BOOTSTRAP_SERVERS", name).split(",")
    }
    assert bootstrap_ports <= {port for port, _ in egress_ports}


def check_kafka_trigger(metadata: Manifest, deployment: str) -> None:
    """What a KEDA kafka trigger shares with the pods it scales: brokers and transport security."""
    assert metadata["bootstrapServers"] == setting("KAFKA_BOOTSTRAP_SERVERS", deployment)
    assert all(isinstance(value, str) for value in metadata.values()), "KEDA metadata values are strings"
    assert int(metadata["lagThreshold"]) > 0
    protocol = setting("KAFKA_SECURITY_PROTOCOL", deployment)
    assert (metadata.get("tls") == "enable") == protocol.endswith("SSL")
    if protocol.startswith("SASL"):
        keda_sasl = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
        assert metadata["sasl"] == keda_sasl[setting("KAFKA_SASL_MECHANISM", deployment)]


def test_scaled_object_scales_on_lag_up_to_the_partition_count() -> None:
    scaled = the("ScaledObject", ROUTER)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    deployment = the("Deployment", ROUTER)
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
    check_kafka_trigger(metadata, ROUTER)
    auth = the("TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["apiVersion"] == "keda.sh/v1alpha1"


def queue_topic_count() -> int:
    """Queue topics the drafter reads: every queue the shipped taxonomy's routing can produce."""
    (text,) = the("ConfigMap", "ticket-router-taxonomy")["data"].values()
    return len(reachable_queues(parse_taxonomy(yaml.safe_load(text), source="taxonomy.yaml")))


def test_drafter_scales_on_its_groups_lag_over_every_queue_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    scaled = the("ScaledObject", DRAFTER)["spec"]
    deployment = the("Deployment", DRAFTER)
    assert scaled["scaleTargetRef"]["name"] == DRAFTER
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert "topic" not in metadata, "no topic: the lag of every topic the group reads (all queue topics)"
    settings = pod_settings(DRAFTER, monkeypatch, {name: "placeholder" for name in secret_env_names(DRAFTER)})
    assert metadata["consumerGroup"] == settings.drafter_group == "ticket-router.drafter"
    assert metadata["offsetResetPolicy"] == settings.auto_offset_reset
    check_kafka_trigger(metadata, DRAFTER)
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    assert scaled["maxReplicaCount"] <= queue_topic_count() * settings.topic_partitions, "idle replicas"
    # Its concurrent Claude calls at full scale stay within one router replica's.
    assert scaled["maxReplicaCount"] * settings.draft_max_in_flight <= settings.max_in_flight
    assert the("TriggerAuthentication", trigger["authenticationRef"]["name"])


def test_drafter_runs_the_draft_command_in_the_drafter_container() -> None:
    main = container(the("Deployment", DRAFTER))
    assert main["name"] == DRAFTER_CONTAINER, 'the dashboard and rules select container="drafter"'
    assert main["command"] == ["ticket-router", "draft"], "the image's ENTRYPOINT is `consume`"
    assert container(the("Deployment", ROUTER))["name"] != DRAFTER_CONTAINER


# -- the API's Ingress example -------------------------------------------------------------------------

NGINX_SIZE = re.compile(r"(?P<number>\d+)(?P<unit>[kKmMgG]?)")
NGINX_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def nginx_size_bytes(size: str) -> int:
    """An nginx size (``client_max_body_size`` syntax: k and m are powers of 1024) in bytes."""
    match = NGINX_SIZE.fullmatch(size.strip())
    assert match, f"not an nginx size: {size!r}"
    return int(match["number"]) * NGINX_UNITS[match["unit"].lower()]


def test_nginx_sizes_are_powers_of_1024() -> None:
    assert nginx_size_bytes("1m") == 1_048_576
    assert nginx_size_bytes("512k") == 524_288 and nginx_size_bytes("1G") == 2**30
    assert nginx_size_bytes("100") == 100


def ingresses() -> dict[str, Manifest]:
    found = {m["metadata"]["name"]: m for m in load_yaml_documents(INGRESS_EXAMPLE) if m["kind"] == "Ingress"}
    assert found
    return found


def ingress_backends(ingress: Manifest) -> Iterator[tuple[str, str, Manifest]]:
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            yield rule["host"], path["path"], path


def test_ingress_example_terminates_tls_for_its_hosts_and_targets_the_api_service() -> None:
    service = the("Service", "ticket-router-api")
    port_names = {p["name"] for p in service["spec"]["ports"]}
    issuers = []
    for name, ingress in ingresses().items():
        tls_hosts = {host for entry in ingress["spec"]["tls"] for host in entry["hosts"]}
        for host, _, path in ingress_backends(ingress):
            assert host in tls_hosts, f"{name}: {host} has no TLS"
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"]["name"] in port_names
        if "cert-manager.io/cluster-issuer" in ingress["metadata"].get("annotations", {}):
            issuers.append(name)
    assert len(issuers) == 1, "one Ingress asks cert-manager for the shared TLS Secret, not two"


def test_ingress_example_body_limit_equals_the_routers() -> None:
    limit = int(setting("API_MAX_BODY_BYTES"))
    for name, ingress in ingresses().items():
        size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
        assert nginx_size_bytes(size) == limit, (
            f"{name}: proxy-body-size {size} vs API_MAX_BODY_BYTES {limit}"
        )


def test_ingress_example_streams_explanations_unbuffered() -> None:
    """SSE through a buffering proxy arrives all at once at the end, or not before a timeout."""
    unbuffered = []
    for ingress in ingresses().values():
        annotations = ingress["metadata"]["annotations"]
        for _, path, entry in ingress_backends(ingress):
            if path.startswith("/v1/explain"):
                assert annotations.get("nginx.ingress.kubernetes.io/proxy-buffering") == "off"
                assert entry["pathType"] == "Exact"
                unbuffered.append(path)
            else:
                assert "nginx.ingress.kubernetes.io/proxy-buffering" not in annotations
    assert unbuffered == ["/v1/explain"]


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
        # the HTTP API: requests by route and status, accepted tickets, refusals
        "sum by (route, status) (rate(ticket_router_api_requests_total",
        "ticket_router_api_accepted_tickets_total",
        'status=~"401|413|429"',
        # explanations (by outcome, cost) and dry-run classifications
        "sum by (outcome) (rate(ticket_router_api_explanations_total",
        "ticket_router_api_explanation_cost_usd_total",
        "ticket_router_api_classifications_total",
        # drafts: by handler and outcome, skipped by reason, latency p95, cost
        "sum by (handler, outcome) (rate(ticket_router_drafts_total",
        "sum by (reason) (rate(ticket_router_drafts_skipped_total",
        "histogram_quantile(0.95, sum by (handler, le) (rate(ticket_router_draft_latency_seconds_bucket",
        "ticket_router_draft_cost_usd_total",
    ):
        assert needle in joined, needle
    titles = [p["title"] for p in data["panels"] if p["type"] == "row"]
    for row in (
        "HTTP API: ingestion",
        "HTTP API: classify and explain",
        "Drafted replies (ticket-router-drafter)",
    ):
        assert row in titles, row


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
    assert (
        'changes(ticket_router_ready{shadow="", container!="drafter"}['
        in by_name["TicketRouterReadinessFlapping"]
    )
    failing = by_name["TicketRouterDraftsFailing"]
    assert 'ticket_router_drafts_total{outcome!="drafted"' in failing and "> 0.10" in failing
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


@pytest.mark.parametrize(
    ("matcher", "metrics"), [('container!="drafter"', Metrics), ('container="drafter"', DraftMetrics)]
)
def test_dashboard_and_alerts_use_only_exported_metrics(matcher: str, metrics: type[Metrics]) -> None:
    exposable = exposable_series_names(metrics())
    used = used_metric_names(matcher)
    for source, names in used.items():
        assert names, f"no ticket_router_ metric found in {source}"
        unknown = sorted(names - exposable)
        assert not unknown, f"{source} uses metrics the service does not export: {unknown}"
    # Names in descriptions and comments too, not only in queries.
    everything = metric_names_in(DASHBOARD.read_text("utf-8")) | metric_names_in(RULES.read_text("utf-8"))
    assert everything <= exposable_series_names(Metrics()) | exposable_series_names(DraftMetrics())


SELECTOR = re.compile(r"(ticket_router_[a-z_]+)(\{[^}]*\})?")
ROUTER_MATCHER = f'container!="{DRAFTER_CONTAINER}"'
DRAFTER_MATCHER = f'container="{DRAFTER_CONTAINER}"'


def all_queries() -> list[str]:
    """Every PromQL query: dashboard panels and template variables, alert expressions."""
    return [*dashboard_exprs(dashboard()["panels"]), *template_queries(), *(a["expr"] for a in alert_rules())]


def test_every_query_says_whether_it_means_the_router_or_the_drafter() -> None:
    """The drafter exports the router's Kafka-loop and Claude-call families under the same names
    (ready, consumer lag, consumed, LLM requests): a query that does not exclude it lets a ready
    drafter hide a router that is not, and its lag read as the router's."""
    router_metrics = exposable_series_names(Metrics())
    draft_metrics = exposable_series_names(DraftMetrics())
    seen = {ROUTER_MATCHER: 0, DRAFTER_MATCHER: 0}
    for query in all_queries():
        for match in SELECTOR.finditer(query):
            metric, selector = match.group(1), match.group(2) or ""
            component = [m for m in seen if m in selector]
            assert len(component) == 1, f"{metric} in {query}: select {ROUTER_MATCHER} or {DRAFTER_MATCHER}"
            seen[component[0]] += 1
            exported = router_metrics if component[0] == ROUTER_MATCHER else draft_metrics
            assert metric in exported, f"{metric} is not exported by the process {component[0]} selects"
    assert all(seen.values()), seen


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_query_describes_the_live_router_not_a_shadow(source: str) -> None:
    """A shadow's samples carry shadow="NAME"; every selector must keep them out with shadow=""."""
    exprs = (
        list(dashboard_exprs(dashboard())) if source == "dashboard" else [a["expr"] for a in alert_rules()]
    )
    for expr in exprs:
        for match in re.finditer(r"(ticket_router_[a-z_]+)(\{[^}]*\})?", expr):
            assert match.group(2) and 'shadow=""' in match.group(2), f"{match.group(1)} in {expr}"
