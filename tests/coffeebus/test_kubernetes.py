"""deploy/k8s, rendered by the pinned kustomize and checked against schemas and the code.

There is no cluster here: the base and the example production overlay are rendered with
`deploy/k8s/kustomize.sh build` (kustomize from the Go module proxy, built by `make
k8s-tools`), every resource is validated against the Kubernetes JSON schemas that the PyPI
package kubernetes-validate ships (strict: an unknown field is an error) and every
ScaledObject against KEDA's CRD schema, vendored in deploy/k8s/schemas (refresh.sh). Then, as
tests/coffeebus/test_compose.py does for docker-compose.yml, against the code: every consumer
group of topology.yaml has a StatefulSet and a ScaledObject bounded by its partitions, every
command parses with the `coffeebus` CLI, every setting loads through `coffeebus.settings`,
the probes and ports are the ones the settings make the process serve, the grace periods
cover the drains, and the gates' HPA metric is one the gates export and the adapter serves.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate.utils import validate as validate_kubernetes

from bench import capacity
from bus.topology import Topology, load_topology
from coffeebus.cli import build_parser
from coffeebus.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUSTOMIZE_SH = K8S / "kustomize.sh"
KEDA_VERSION = "v2.21.1"
KEDA = K8S / "schemas" / f"keda-{KEDA_VERSION}"
#: The oldest Kubernetes the manifests are written for (matchLabelKeys in spread constraints,
#: autoscaling/v2, policy/v1) and the newest kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
OVERLAYS = ("base", "production")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
METRIC = "coffeebus_gate_connections"
_VAR = re.compile(r"\$\((\w+)\)")


def kustomize() -> str:
    found = subprocess.run(
        ["bash", str(KUSTOMIZE_SH), "path"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        pytest.fail(f"{found.stderr.strip()} (make test does it)")
    return found.stdout.strip()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every overlay's resources, as `kustomize build` renders them. The production overlay
    needs its secrets.env: rendered from a copy with the example filled in, as an operator's
    first step does."""
    binary = kustomize()
    copy_dir = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy_dir, ignore=shutil.ignore_patterns("secrets.env"))
    production = copy_dir / "overlays" / "production"
    shutil.copy(production / "secrets.env.example", production / "secrets.env")
    out = {}
    for name, folder in (("base", copy_dir / "base"), ("production", production)):
        result = subprocess.run(
            [binary, "build", str(folder)], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        out[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def of_kind(docs: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in kinds]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def container(workload: Mapping[str, Any]) -> dict[str, Any]:
    [one] = workload["spec"]["template"]["spec"]["containers"]
    assert one["name"] == "coffeebus"
    return dict(one)


def pod_spec(workload: Mapping[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"])


def config_data(docs: list[dict[str, Any]], volume: str, workload: Mapping[str, Any]) -> str:
    """The file a container reads at `volume` (a path below a ConfigMap volume's mount)."""
    mounts = {m["mountPath"]: m["name"] for m in container(workload)["volumeMounts"]}
    directory, _, key = volume.rpartition("/")
    volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
    source = volumes[mounts[directory]]["configMap"]["name"]
    data: str = named(docs, "ConfigMap", source)["data"][key]
    return data


def secret_values(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The Secret's values: the rendered one, or the production example's for the base."""
    import base64  # noqa: PLC0415

    secrets = of_kind(docs, "Secret")
    if secrets:
        [secret] = secrets
        return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    example = K8S / "overlays" / "production" / "secrets.env.example"
    lines = [ln for ln in example.read_text().splitlines() if ln and not ln.startswith("#")]
    return dict(ln.split("=", 1) for ln in lines)


def environment(docs: list[dict[str, Any]], workload: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it (no envFrom is used)."""
    secrets = secret_values(docs)
    env = {}
    c = container(workload)
    assert "envFrom" not in c
    for var in c["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["key"]]
        else:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[var["name"]] = f"{workload['metadata']['name']}-0"
    return env


def settings_of(docs: list[dict[str, Any]], workload: Mapping[str, Any], tmp: Path) -> Settings:
    """What the process loads: the mounted TOML file (COFFEEBUS_CONFIG), then the environment."""
    env = environment(docs, workload)
    path = tmp / "coffeebus.toml"
    path.write_text(config_data(docs, env["COFFEEBUS_CONFIG"], workload))
    return load_settings(path, env={k: v for k, v in env.items() if k != "COFFEEBUS_CONFIG"})


def topology_of(docs: list[dict[str, Any]], tmp: Path) -> Topology:
    """The topology every pod reads: topology.yaml with the mounted overlay."""
    [job] = of_kind(docs, "Job")
    overlay = tmp / "overlay.yaml"
    overlay.write_text(config_data(docs, environment(docs, job)["COFFEEBUS_TOPOLOGY_OVERLAY"], job))
    return load_topology(overlay=overlay)


def args_of(workload: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """The container's arguments with $(VAR) expanded as the kubelet does."""
    out = []
    for arg in container(workload)["args"]:
        for name in _VAR.findall(arg):
            assert name in env, f"{workload['metadata']['name']}: $({name}) is not in its env"
        out.append(_VAR.sub(lambda m: env[m[1]], str(arg)))
    return out


# -- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_is_valid_for_kubernetes(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, version: str
) -> None:
    docs = rendered[overlay]
    core = [d for d in docs if not d["apiVersion"].startswith("keda.sh/")]
    assert len(core) + len(of_kind(docs, "ScaledObject")) == len(docs)
    for doc in core:
        validate_kubernetes(doc, version, strict=True)  # raises ValidationError


def strict(schema: Any) -> Any:
    """A CRD schema that refuses unknown fields, as kubectl's server-side validation does
    (the API server would prune them silently)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def keda_schema() -> dict[str, Any]:
    crd = yaml.safe_load((KEDA / "keda.sh_scaledobjects.yaml").read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    assert version["served"]
    assert version["storage"]
    schema: dict[str, Any] = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return schema


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_scaled_object_is_valid_for_keda(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    schema = keda_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    parameters = json.loads((KEDA / "kafka-scaler-parameters.json").read_text())
    known = set(parameters["metadata"]) | set(parameters["metadata_from_env"])
    scaled = of_kind(rendered[overlay], "ScaledObject")
    assert scaled
    for doc in scaled:
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        jsonschema.Draft7Validator(schema).validate(doc)
        for trigger in doc["spec"]["triggers"]:
            assert trigger["type"] == "kafka"
            assert set(trigger["metadata"]) <= known, set(trigger["metadata"]) - known
            # KEDA reads every metadata value as a string
            assert all(isinstance(v, str) for v in trigger["metadata"].values())


def test_the_keda_schema_is_the_pinned_release() -> None:
    parameters = json.loads((KEDA / "kafka-scaler-parameters.json").read_text())
    assert parameters["module"] == f"github.com/kedacore/keda/v2@{KEDA_VERSION}"
    assert "Apache License" in (KEDA / "LICENSE").read_text()
    refresh = (K8S / "schemas" / "refresh.sh").read_text()
    assert f"VERSION=${{1:-{KEDA_VERSION}}}" in refresh
    assert sorted(p.name for p in (K8S / "schemas").glob("keda-*")) == [f"keda-{KEDA_VERSION}"]


# -- the manifests against the code ------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_consumer_group_has_a_static_member_statefulset_scaled_by_its_lag(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    docs = rendered[overlay]
    topology = topology_of(docs, tmp_path)
    consumers = [
        w
        for w in of_kind(docs, *WORKLOADS)
        if w["metadata"]["labels"]["app.kubernetes.io/component"] == "consumer"
    ]
    assert sorted(w["metadata"]["labels"]["coffeebus/group"] for w in consumers) == sorted(
        topology.groups
    )
    parser = build_parser()
    for workload in consumers:
        group = workload["metadata"]["labels"]["coffeebus/group"]
        name = workload["metadata"]["name"]
        assert workload["kind"] == "StatefulSet", name
        assert "replicas" not in workload["spec"], f"{name}: KEDA owns the replicas"
        args = args_of(workload, environment(docs, workload))
        parsed = parser.parse_args(args)  # exits 2 on an unknown command or flag
        assert parsed.groups == [group], name
        # the static member id is the pod's name: stable across restarts, unique in the set
        assert container(workload)["args"][-2:] == ["--static-member-id", "$(POD_NAME)"]
        spec = topology.group(group)
        so = named(docs, "ScaledObject", name)["spec"]
        assert so["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": name,
        }
        partitions = {t: topology.topic(t).partitions for t in spec.topics}
        assert 2 <= so["minReplicaCount"] <= so["maxReplicaCount"], name
        # KEDA caps each trigger at its topic's partitions: the largest topic bounds the group
        assert so["maxReplicaCount"] == max(partitions.values()), (name, partitions)
        triggers = so["triggers"]
        assert sorted(t["metadata"]["topic"] for t in triggers) == sorted(spec.topics), name
        for trigger in triggers:
            meta = trigger["metadata"]
            assert meta["consumerGroup"] == spec.group_id, name
            assert int(meta["lagThreshold"]) > 0
            assert meta["offsetResetPolicy"] == "earliest"  # the bus's auto_offset_reset
            assert meta["bootstrapServersFromEnv"] in environment(docs, workload)
            assert "allowIdleConsumers" not in meta
        pdb = named(docs, "PodDisruptionBudget", name)["spec"]
        assert pdb["maxUnavailable"] == 1
        assert pdb["selector"] == workload["spec"]["selector"]


def parsed_command(docs: list[dict[str, Any]], workload: Mapping[str, Any]) -> Any:
    return build_parser().parse_args(args_of(workload, environment(docs, workload)))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_command_and_setting_is_the_codes(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    docs = rendered[overlay]
    roles = {}
    for workload in of_kind(docs, *WORKLOADS):
        name = workload["metadata"]["name"]
        args = args_of(workload, environment(docs, workload))
        parsed = parsed_command(docs, workload)
        assert callable(parsed.handler), name
        roles[name] = args[0]
        settings = settings_of(docs, workload, tmp_path)  # SettingsError for an unknown key
        env = environment(docs, workload)
        assert set(env) <= {
            "POD_NAME",
            "COFFEEBUS_CONFIG",
            "COFFEEBUS_TOPOLOGY_OVERLAY",
            "KAFKA_BOOTSTRAP_SERVERS",
            "MONGO_URL",
            "REDIS_URL",
            "COFFEEBUS_API__API_KEYS",
        }, name
        assert pod_spec(workload)["enableServiceLinks"] is False, name
        if args[0] == "topology":
            assert args[:2] == ["topology", "apply"]
            assert parsed.overlay == env["COFFEEBUS_TOPOLOGY_OVERLAY"]
            continue
        assert settings.observability.metrics_host == "0.0.0.0", name
        if args[0] == "api":
            assert settings.api.host == "0.0.0.0"
            assert settings.api.api_keys, "the API refuses 0.0.0.0 without a key"
        else:
            assert "COFFEEBUS_API__API_KEYS" not in env, f"{name}: only the API needs the keys"
    assert sorted(roles.values()).count("gateway") == 1
    assert sorted(roles.values()).count("api") == 1
    assert sorted(roles.values()).count("topology") == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_ports_are_the_ones_the_settings_open(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    docs = rendered[overlay]
    for workload in of_kind(docs, "Deployment", "StatefulSet"):
        name = workload["metadata"]["name"]
        settings = settings_of(docs, workload, tmp_path)
        c = container(workload)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == settings.observability.metrics_port != 0, name
        for probe, path in (
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ):
            assert c[probe]["httpGet"] == {"path": path, "port": "metrics"}, (name, probe)
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(settings.observability.metrics_port)
        resources = c["resources"]
        assert set(resources) == {"requests", "limits"}, name
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    gateway = named(docs, "StatefulSet", "coffeebus-gateway")
    gate = settings_of(docs, gateway, tmp_path).gateway
    ports = {p["name"]: p["containerPort"] for p in container(gateway)["ports"]}
    assert (ports["client-tcp"], ports["client-ws"]) == (gate.tcp_port, gate.ws_port)
    assert gate.host == "0.0.0.0"
    api = named(docs, "Deployment", "coffeebus-api")
    assert {p["name"]: p["containerPort"] for p in container(api)["ports"]}["http"] == (
        settings_of(docs, api, tmp_path).api.port
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_pod_drains_within_its_grace_period(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    docs = rendered[overlay]
    gateway = named(docs, "StatefulSet", "coffeebus-gateway")
    gate = settings_of(docs, gateway, tmp_path).gateway
    pre_stop = container(gateway)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # preStop, then SIGTERM: the drain, then the downlink commit and route removal
    grace = pod_spec(gateway)["terminationGracePeriodSeconds"]
    assert grace >= int(pre_stop[1]) + gate.drain_timeout_s + 10
    for workload in of_kind(docs, "StatefulSet"):
        if workload["metadata"]["labels"]["app.kubernetes.io/component"] == "consumer":
            assert pod_spec(workload)["terminationGracePeriodSeconds"] >= 60
            # a restarted static member must be back before the broker gives its partitions
            # away: a restart (grace included) below the session timeout is the premise
            kafka = settings_of(docs, workload, tmp_path).kafka
            assert kafka.session_timeout_ms >= 30_000


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gates_have_stable_ids_a_load_balancer_a_pdb_and_scale_by_connections(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    docs = rendered[overlay]
    gateway = named(docs, "StatefulSet", "coffeebus-gateway")
    assert "replicas" not in gateway["spec"], "the HPA owns the replicas"
    parsed = parsed_command(docs, gateway)
    gate_id = args_of(gateway, environment(docs, gateway))[2]
    assert parsed.gate_id == gate_id == "coffeebus-gateway-0"
    assert re.fullmatch(r"[A-Za-z0-9_-]+", gate_id)  # the --gate-id rule
    selector = gateway["spec"]["selector"]
    service = named(docs, "Service", "coffeebus-gateway")["spec"]
    assert service["type"] == "LoadBalancer"
    assert service["externalTrafficPolicy"] == "Local"  # conn_rate_per_ip sees the client
    assert service["selector"] == selector["matchLabels"]
    assert {(p["port"], p["targetPort"]) for p in service["ports"]} == {
        (8000, "client-tcp"),
        (8001, "client-ws"),
    }
    assert named(docs, "Service", gateway["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    pdb = named(docs, "PodDisruptionBudget", "coffeebus-gateway")["spec"]
    assert pdb == {"maxUnavailable": 1, "selector": selector}
    hpa = named(docs, "HorizontalPodAutoscaler", "coffeebus-gateway")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "coffeebus-gateway",
    }
    assert hpa["minReplicas"] >= 3
    [metric] = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == METRIC
    target = int(metric["pods"]["target"]["averageValue"])
    assert target == capacity.CONNECTIONS_PER_GATE  # the capacity plan's gate size
    gate = settings_of(docs, gateway, tmp_path).gateway
    # the survivors of a lost third of the gates take its clients without refusing any
    assert gate.max_connections >= 1.5 * target


def test_the_adapter_serves_the_gate_metric_the_gates_export() -> None:
    from telemetry import metrics  # noqa: PLC0415

    assert metrics.CONNECTIONS._name == METRIC  # a gauge: no _total suffix
    config = yaml.safe_load((K8S / "prometheus-adapter" / "config.yaml").read_text())
    [rule] = config["rules"]
    assert rule["seriesQuery"].startswith(METRIC + "{")
    assert rule["name"]["as"] == METRIC
    assert re.fullmatch(rule["name"]["matches"], METRIC)
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert "by (<<.GroupBy>>)" in rule["metricsQuery"]


def test_the_topology_overlays_are_the_production_ones(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    prod = yaml.safe_load((REPO / "topology.prod.yaml").read_text())
    base = yaml.safe_load((K8S / "base" / "topology-overlay.yaml").read_text())
    assert base == prod
    production = yaml.safe_load(
        (K8S / "overlays" / "production" / "topology-overlay.yaml").read_text()
    )
    assert production["defaults"] == prod["defaults"]
    topology = topology_of(rendered["production"], tmp_path)
    shards = Settings().hot.shards
    for topic in ("im.up.msg", "im.fanout", "im.up.ack"):
        assert topology.topic(topic).partitions % shards == 0, topic  # [hot] shards rule
    assert all(t.replication_factor == 3 for t in topology.topics.values())


def test_no_secret_is_committed(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not of_kind(rendered["base"], "Secret")
    [secret] = of_kind(rendered["production"], "Secret")
    referenced = {
        var["valueFrom"]["secretKeyRef"]["key"]
        for w in of_kind(rendered["production"], *WORKLOADS)
        for var in container(w)["env"]
        if "secretKeyRef" in var.get("valueFrom", {})
    }
    assert set(secret["data"]) == referenced
    assert "secrets.env" in (REPO / ".gitignore").read_text()
    assert not list(K8S.rglob("secrets.env"))


def test_the_capacity_plan_runs_on_the_committed_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--online-users", "1000000", "--messages-per-s", "10000"]
    assert capacity.main([*argv, "--group-messages-per-s", "100", "--group-size", "50"]) == 0
    out = capsys.readouterr().out
    for key in capacity.read_figures(json.loads(capacity.LATEST.read_text())).keys.values():
        assert f"`{key}`" in out
