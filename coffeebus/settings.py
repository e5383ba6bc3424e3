"""Typed settings: defaults, then a TOML file, then environment variables.

Every process reads its settings once at start into frozen structs and passes them down;
there is no global mutable config object. Sources, later ones winning:

1. the defaults below (the seed's ports: TCP gate 8000, WebSocket gate 8001, HTTP API 18080);
2. a TOML file (``--config PATH`` or ``COFFEEBUS_CONFIG``), one table per section::

       [gateway]
       tcp_port = 9000

3. environment variables ``COFFEEBUS_<SECTION>__<FIELD>`` (``COFFEEBUS_GATEWAY__TCP_PORT=9000``),
   plus the conventional ``KAFKA_BOOTSTRAP_SERVERS``, ``MONGO_URL`` and ``REDIS_URL``.

Values are validated when loaded; a bad value raises :class:`SettingsError` naming the source
(file path or variable) and the field, so a process refuses to start instead of misbehaving.

This module is the settings file of the composition root: `Settings` names every section and
the loading rules above. The sections themselves live with what reads them — the gate's in
`gateway.settings`, the API's in `producers.settings`, the consumer groups' in
`consumers.settings`, the shared services' and the message path's in `schemas.settings` —
so that no role imports this package; only the process-wide ones (``[log]``,
``[observability]``, ``[process]``) are defined here. Every section is re-exported.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from consumers.settings import (
    BizSettings,
    CallSettings,
    PushSettings,
    WebhookSettings,
    WebhookSubscriber,
)
from gateway.settings import GatewaySettings, LoginSettings, MultiLoginPolicy
from producers.settings import ApiSettings
from schemas.settings import (
    HotSettings,
    KafkaSettings,
    MessagingSettings,
    MongoSettings,
    Port,
    PositiveInt,
    RedisSettings,
    RoomSettings,
)

__all__ = [
    "ApiSettings",
    "BizSettings",
    "CallSettings",
    "GatewaySettings",
    "HotSettings",
    "KafkaSettings",
    "LogSettings",
    "LoginSettings",
    "MessagingSettings",
    "MongoSettings",
    "MultiLoginPolicy",
    "ObservabilitySettings",
    "ProcessSettings",
    "PushSettings",
    "RedisSettings",
    "RoomSettings",
    "Settings",
    "SettingsError",
    "WebhookSettings",
    "WebhookSubscriber",
    "load_settings",
]

ENV_PREFIX = "COFFEEBUS_"


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the source and the field."""


class LogSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Logging of every process."""

    #: ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` or ``CRITICAL`` (``-v``/``-vv`` lower it).
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    #: "text" for people, "json" for log shippers.
    format: Literal["text", "json"] = "text"


class ObservabilitySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[observability]``: the metrics and health listener of every process
    (docs/observability.md).

    It serves ``/metrics`` (Prometheus), ``/healthz`` (the event loop answers) and
    ``/readyz`` (every role started and the stores answer). The HTTP API serves the same
    three paths on its own port as well.
    """

    #: port of the listener; 0 (the default) runs none — several processes of one host
    #: each need their own port (``COFFEEBUS_OBSERVABILITY__METRICS_PORT``)
    metrics_port: Port = 0
    #: address to listen on (``0.0.0.0`` for a Prometheus on another host)
    metrics_host: str = "127.0.0.1"


class ProcessSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[process]``: how every CoffeeBus process runs Python's cycle collector, and at which
    CPU priority.

    Once its roles have started, a process collects once and freezes what it holds (modules,
    clients, caches: `gc.freeze`), so later full collections do not walk the start-up heap,
    and runs young collections every `gc_thresholds[0]` net allocations instead of
    Python's 700. At 2,000 c2c messages/s the embedded process spent ~10 % of its time in
    collections with Python's defaults, single full ones lasting 350-530 ms; with these
    defaults, one young collection in 15 s (docs/benchmarks.md, "Garbage collection").
    """

    #: freeze the start-up heap once every role has started
    gc_freeze: bool = True
    #: ``gc.set_threshold`` (young, middle, old); Python's own are (700, 10, 10)
    gc_thresholds: tuple[PositiveInt, PositiveInt, PositiveInt] = (50_000, 20, 100)
    #: added to the process's niceness at start (0-19): e.g. 10 for a projection sharing a
    #: host with the message path ("The projection's lag" in docs/operations.md)
    nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 0


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything a CoffeeBus process is configured with."""

    kafka: KafkaSettings = KafkaSettings()
    mongo: MongoSettings = MongoSettings()
    redis: RedisSettings = RedisSettings()
    gateway: GatewaySettings = GatewaySettings()
    api: ApiSettings = ApiSettings()
    login: LoginSettings = LoginSettings()
    messaging: MessagingSettings = MessagingSettings()
    hot: HotSettings = HotSettings()
    rooms: RoomSettings = RoomSettings()
    biz: BizSettings = BizSettings()
    webhooks: WebhookSettings = WebhookSettings()
    push: PushSettings = PushSettings()
    calls: CallSettings = CallSettings()
    log: LogSettings = LogSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    process: ProcessSettings = ProcessSettings()

    def with_gate_id(self) -> Settings:
        """These settings with a gate id filled in (host name + pid) when none is set."""
        if self.gateway.gate_id:
            return self
        gate_id = f"{socket.gethostname()}-{os.getpid()}".lower()
        gate_id = "".join(c if c.isalnum() or c in "-_" else "-" for c in gate_id)
        return msgspec.structs.replace(
            self, gateway=msgspec.structs.replace(self.gateway, gate_id=gate_id)
        )


#: Conventional variables that every Kafka/Mongo/Redis tool understands.
_CONVENTIONAL_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "MONGO_URL": ("mongo", "url"),
    "REDIS_URL": ("redis", "url"),
}


def _env_layer(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    sections = set(Settings.__struct_fields__)
    for name, value in env.items():
        if name in _CONVENTIONAL_ENV:
            section, field = _CONVENTIONAL_ENV[name]
        elif name.startswith(ENV_PREFIX) and "__" in name:
            section, _, field = name[len(ENV_PREFIX) :].lower().partition("__")
            if section not in sections:
                raise SettingsError(f"{name}: unknown settings section {section!r}")
        else:
            continue
        layer.setdefault(section, {})[field] = _parse_env_value(value)
    return layer


def _parse_env_value(raw: str) -> Any:
    """Environment values are strings; read them as TOML values when they parse as one."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from defaults, the TOML file at ``path`` and the environment."""
    env = os.environ if env is None else env
    path = path or env.get(f"{ENV_PREFIX}CONFIG") or None
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"{path}: cannot read settings file: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
        try:
            msgspec.convert(data, Settings, str_keys=True)
        except msgspec.ValidationError as exc:
            raise SettingsError(f"{path}: {exc}") from exc
    env_layer = _env_layer(env)
    merged = _merge(data, env_layer)
    try:
        return msgspec.convert(merged, Settings, str_keys=True)
    except msgspec.ValidationError as exc:
        raise SettingsError(
            f"environment ({ENV_PREFIX}*, KAFKA_BOOTSTRAP_SERVERS, ...): {exc}"
        ) from exc
