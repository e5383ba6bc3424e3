"""docker-compose.yml and the Dockerfile, checked against the code (no Docker engine here).

Every CoffeeBus service's command must parse with the `coffeebus` CLI, its environment must
load through `coffeebus.settings` (so every variable names a real setting), its ports must be
the ones its settings make it listen on, and it must reach Kafka, MongoDB and Redis by their
service names and ports. Every consumer group of topology.yaml has a service; every role
waits for healthy services and for the topology job; Kafka's environment is a valid
single-node KRaft configuration. Where the `docker compose` plugin exists, it validates the
file too.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bus.topology import load_topology
from coffeebus.cli import build_parser
from coffeebus.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
#: What an operator exports before `docker compose up` (the file requires the API key).
OPERATOR_ENV = {"COFFEEBUS_API_KEY": "test-api-key"}
BACKING = ("kafka", "mongo", "redis")
_VARIABLE = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` substitution."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, kind, text = match[1], match[2], match[3]
        if env.get(name):
            return env[name]
        if kind == "?":
            raise KeyError(f"{name}: {text}")
        return text if kind == "-" else ""

    return _VARIABLE.sub(one, value)


def load_compose(env: Mapping[str, str] = OPERATOR_ENV) -> dict[str, Any]:
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    compose: dict[str, Any] = interpolate(raw, env)
    return compose


COMPOSE = load_compose()
SERVICES: dict[str, Any] = COMPOSE["services"]
ROLES = {name: s for name, s in SERVICES.items() if s.get("build") == "."}


def settings_of(service: Mapping[str, Any]) -> Settings:
    env = {k: str(v) for k, v in service.get("environment", {}).items()}
    return load_settings(env=env)


def published(service: Mapping[str, Any]) -> dict[int, int]:
    """Container port -> host port."""
    ports = {}
    for mapping in service.get("ports", []):
        host, _, container = str(mapping).rpartition(":")
        ports[int(container)] = int(host)
    return ports


def test_the_api_key_is_required() -> None:
    with pytest.raises(KeyError, match="COFFEEBUS_API_KEY"):
        load_compose({})


def test_every_role_runs_a_real_coffeebus_subcommand() -> None:
    parser = build_parser()
    subcommands = {}
    for name, service in ROLES.items():
        assert service["image"] == "coffeebus:latest", name
        args = parser.parse_args([str(a) for a in service["command"]])  # exits 2 if invalid
        subcommands[name] = service["command"][0]
        assert callable(args.handler)
    assert sorted(subcommands.values()).count("gateway") == 1
    assert sorted(subcommands.values()).count("api") == 1
    assert SERVICES["topology"]["command"] == ["topology", "apply"]
    consumed = [
        group for s in ROLES.values() if s["command"][0] == "consume" for group in s["command"][1:]
    ]
    assert sorted(consumed) == sorted(load_topology().groups)  # each group once


@pytest.mark.parametrize("name", sorted(ROLES))
def test_every_variable_is_a_setting_and_reaches_the_backing_services(name: str) -> None:
    service = ROLES[name]
    settings = settings_of(service)  # raises SettingsError for an unknown section or field
    for variable in service["environment"]:
        assert variable.startswith("COFFEEBUS_") or variable in (
            "KAFKA_BOOTSTRAP_SERVERS",
            "MONGO_URL",
            "REDIS_URL",
        ), variable
    kafka_listener = kafka_properties()["advertised.listeners"].removeprefix("PLAINTEXT://")
    assert settings.kafka.bootstrap_servers == kafka_listener
    mongo, redis = urlsplit(settings.mongo.url), urlsplit(settings.redis.url)
    assert (mongo.hostname, mongo.port) == ("mongo", 27017)
    assert (redis.hostname, redis.port) == ("redis", 6379)
    observability = settings.observability
    assert observability.metrics_host == "0.0.0.0"
    if name != "topology":
        health = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{observability.metrics_port}/readyz" in health


def test_gate_and_api_publish_the_ports_they_listen_on() -> None:
    gate = settings_of(SERVICES["gateway"]).gateway
    assert gate.host == "0.0.0.0"
    assert published(SERVICES["gateway"]) == {gate.tcp_port: 8000, gate.ws_port: 8001}
    api = settings_of(SERVICES["api"]).api
    assert api.host == "0.0.0.0"
    assert api.api_keys == (OPERATOR_ENV["COFFEEBUS_API_KEY"],)  # else it refuses 0.0.0.0
    assert published(SERVICES["api"]) == {api.port: 18080}
    for name, service in ROLES.items():
        if name not in ("gateway", "api"):
            assert "ports" not in service, name


def test_roles_start_after_healthy_services_and_the_topology_job() -> None:
    for name in BACKING:
        assert SERVICES[name]["healthcheck"]["test"], name
    assert SERVICES["topology"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert SERVICES["topology"]["restart"] == "no"  # a one-shot job
    for name, service in ROLES.items():
        if name == "topology":
            continue
        depends = service["depends_on"]
        assert {k: v["condition"] for k, v in depends.items()} == {
            "kafka": "service_healthy",
            "mongo": "service_healthy",
            "redis": "service_healthy",
            "topology": "service_completed_successfully",
        }, name


def kafka_properties() -> dict[str, str]:
    """The broker's server.properties as the apache/kafka image derives them from KAFKA_*."""
    env = SERVICES["kafka"]["environment"]
    return {
        k.removeprefix("KAFKA_").lower().replace("_", "."): str(v)
        for k, v in env.items()
        if k.startswith("KAFKA_")
    }


def test_kafka_is_a_valid_single_node_kraft_broker() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    props = kafka_properties()
    assert set(props["process.roles"].split(",")) == {"broker", "controller"}
    listeners = {
        name: address
        for name, _, address in (e.partition("://") for e in props["listeners"].split(","))
    }
    protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))
    assert set(listeners) <= set(protocols)
    controller = props["controller.listener.names"]
    assert controller in listeners
    assert props["inter.broker.listener.name"] in listeners
    assert props["inter.broker.listener.name"] != controller
    [voter] = props["controller.quorum.voters"].split(",")
    node, _, address = voter.partition("@")
    assert node == props["node.id"]
    assert address == f"kafka:{listeners[controller].rpartition(':')[2]}"
    [advertised] = props["advertised.listeners"].split(",")
    scheme, _, host_port = advertised.partition("://")
    assert scheme == props["inter.broker.listener.name"]
    assert host_port == f"kafka:{listeners[scheme].rpartition(':')[2]}"
    for name in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
        "default.replication.factor",
        "min.insync.replicas",
    ):
        assert props[name] == "1", name
    assert props["auto.create.topics.enable"] == "false"
    # topology.yaml asks for no more replicas than one broker has
    topology = load_topology()
    assert all(t.replication_factor == 1 for t in topology.topics.values())
    cluster_id = kafka["environment"]["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    volume = kafka["volumes"][0].split(":")
    assert volume[1] == props["log.dirs"]
    assert volume[0] in COMPOSE["volumes"]


def test_the_dockerfile_builds_a_multi_stage_non_root_uv_image() -> None:
    lines = [
        line.strip()
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 3
    assert stages[0].startswith("FROM ghcr.io/astral-sh/uv:")
    makefile = (REPO / "Makefile").read_text()
    [uv_version] = re.findall(r"^UV_VERSION \?= (\S+)$", makefile, flags=re.MULTILINE)
    assert stages[0].split()[1] == f"ghcr.io/astral-sh/uv:{uv_version}"
    assert any("uv sync --frozen --no-dev" in line for line in lines)
    runtime = lines[lines.index(stages[-1]) :]
    assert not any("uv " in line for line in runtime if line.startswith("RUN"))
    users = [line for line in runtime if line.startswith("USER ")]
    assert users
    assert users[-1].split()[1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["coffeebus"]' in runtime
    exposed = {int(p) for line in runtime if line.startswith("EXPOSE") for p in line.split()[1:]}
    defaults = Settings()
    assert {defaults.gateway.tcp_port, defaults.gateway.ws_port, defaults.api.port} <= exposed
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored
    assert ".git" in ignored
    assert "topology.yaml" not in ignored  # read beside the packages at run time


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine")
    plugin = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if plugin.returncode != 0:
        pytest.skip(f"the docker client has no compose plugin: {plugin.stderr.strip()}")
    result = subprocess.run(
        [docker, "compose", "-f", str(REPO / "docker-compose.yml"), "config", "--quiet"],
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", **OPERATOR_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
