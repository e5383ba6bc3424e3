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
"""

from __future__ import annotations

import enum
import ipaddress
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from schemas.bizevents import EVENT_TYPES, BizTopic

__all__ = [
    "ApiSettings",
    "BizSettings",
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

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]

ENV_PREFIX = "COFFEEBUS_"


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the source and the field."""


class MultiLoginPolicy(enum.StrEnum):
    """What a new login does to the user's other connections."""

    #: A new login kicks an older one of the same client type (the seed's behaviour).
    KICK_SAME_TYPE = "kick_same_type"
    #: A new login kicks every older connection of the user.
    KICK_ALL = "kick_all"
    #: Any number of connections per user and client type.
    ALLOW_ALL = "allow_all"


class KafkaSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How to reach the Kafka cluster and how to produce to it."""

    #: Kafka brokers, ``host:port[,host:port…]`` (also ``KAFKA_BOOTSTRAP_SERVERS``).
    bootstrap_servers: str = "127.0.0.1:9092"
    #: Prefix of the Kafka client ids; ``coffeebus topology lag`` shows them as partition owners.
    client_id: str = "coffeebus"
    #: Producer linger: a few ms batch records from many coroutines into one request.
    linger_ms: Annotated[int, msgspec.Meta(ge=0)] = 5
    #: Largest producer batch per partition (bytes).
    max_batch_size: PositiveInt = 256 * 1024
    #: None, "gzip", "snappy", "lz4" or "zstd" (the last three need their codec packages).
    compression_type: str | None = None
    #: Limit of one Kafka request (produce, fetch, metadata).
    request_timeout_ms: PositiveInt = 30_000
    #: A consumer group member not heard from for this long is removed and its partitions
    #: go to the others. Static members (``coffeebus consume --static-member-id``) keep
    #: their partitions while away for less than this: set it above a restart's duration.
    #: The broker bounds it (group.min/max.session.timeout.ms: 6 s to 30 min by default).
    session_timeout_ms: PositiveInt = 10_000


class MongoSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The MongoDB (or MongoDB wire-protocol) server holding the timelines."""

    #: MongoDB (or FerretDB) connection string (also ``MONGO_URL``).
    url: str = "mongodb://127.0.0.1:27017"
    #: Database holding every collection; one per deployment.
    database: str = "coffeebus"
    #: How long a request waits for a reachable server before failing (start-up fails with exit 3
    #: after it).
    server_selection_timeout_ms: PositiveInt = 5_000
    #: Which server the stores write for: ``"mongodb"`` (plain bulk writes and ``$inc``),
    #: ``"ferretdb-v1"`` (the workarounds of ``store/mongo/compat.py``: small raw update commands,
    #: seq sections claimed by inserts), or ``"auto"``: ask the server at start (FerretDB names
    #: itself in ``buildInfo``) and log ``MongoDB adapters in <mode> mode``. Every process of a
    #: deployment must run the same mode; a deployment may move from ``ferretdb-v1`` to ``mongodb``
    #: (seqs continue above the claimed sections) but not back.
    server: Literal["auto", "mongodb", "ferretdb-v1"] = "auto"


class RedisSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The Redis server holding routes, presence and caches."""

    #: Redis URL (also ``REDIS_URL``).
    url: str = "redis://127.0.0.1:6379/0"
    #: Prefix of every key CoffeeBus writes, so several deployments can share one Redis.
    key_prefix: str = "cb:"


class GatewaySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One gate: listeners, limits and timers (PROTOCOL.md "Timings in the seed")."""

    #: Unique per gate process; names its downlink topic ``im.gate.<gate_id>``.
    gate_id: str = ""
    #: Address the TCP and WebSocket listeners bind.
    host: str = "0.0.0.0"
    #: TCP listener (CoffeeChat frames).
    tcp_port: Port = 8000
    #: WebSocket listener (one binary message per frame).
    ws_port: Port = 8001
    #: Address clients should use, published in the gate list (defaults to host:port).
    advertised_host: str = ""
    #: PEM certificate file: both listeners speak TLS (WSS) when set with ``tls_key``.
    tls_cert: str | None = None
    #: PEM private key of ``tls_cert``.
    tls_key: str | None = None
    #: Largest frame accepted (bytes, 16 B to 16 MiB); larger closes the connection.
    max_frame_size: Annotated[int, msgspec.Meta(ge=16, le=16 * 1024 * 1024)] = 1024 * 1024
    #: Connections one gate holds at most; more are refused.
    max_connections: PositiveInt = 100_000
    #: New connections per second one source address may open (token bucket), and the
    #: burst above that rate (gateway/admission.py).
    conn_rate_per_ip: Positive = 20.0
    #: Burst of new connections above ``conn_rate_per_ip``.
    conn_burst_per_ip: PositiveInt = 100
    #: Networks not limited per address: loopback (a local proxy makes every client look
    #: like 127.0.0.1), and put a trusted load balancer's addresses here.
    conn_rate_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    #: A connection must log in within this many seconds.
    login_timeout_s: Positive = 15.0
    #: A frame begun must be complete within this many seconds (slow-loris senders).
    frame_timeout_s: Positive = 30.0
    #: Heartbeat interval clients are expected to keep.
    heartbeat_interval_s: Positive = 60.0
    #: A connection silent for this many heartbeat intervals is closed.
    idle_heartbeats: Positive = 3.0
    #: Token bucket per connection for frames sent to the server.
    rate_limit_per_s: Positive = 50.0
    #: Burst of frames above ``rate_limit_per_s``.
    rate_limit_burst: PositiveInt = 100
    #: Frames queued for a connection that does not read before it is disconnected.
    send_queue_frames: PositiveInt = 1_000
    #: ``kick_same_type`` (a new login kicks an older one of the same client type), ``kick_all`` or
    #: ``allow_all``.
    multi_login: MultiLoginPolicy = MultiLoginPolicy.KICK_SAME_TYPE
    #: SIGTERM: how long to wait for connections to close before exiting anyway.
    drain_timeout_s: Positive = 10.0


class ApiSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The HTTP server API for business servers."""

    #: Address the HTTP API binds; anything but loopback requires ``api_keys``.
    host: str = "127.0.0.1"
    #: HTTP API port.
    port: Port = 18080
    #: Bearer keys accepted on business endpoints. None configured: loopback only.
    api_keys: tuple[str, ...] = ()


class LoginSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[login]``: password hashing and failed-login throttling at the gates
    (docs/security.md, "Logins").

    A gate refuses a login with ErrorRsp RATE_LIMITED, at once and without checking it, when
    the password pool is full or when an account or address it names is backing off. The
    throttle's counters live in Redis on the real services, so every gate shares them.
    """

    #: threads that hash and verify passwords (0: one per core), at a lower CPU priority
    #: than the event loop
    password_workers: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: password checks that may wait for a thread; a login beyond that is refused
    #: RATE_LIMITED at once (the connection may retry after a second)
    password_queue: Annotated[int, msgspec.Meta(ge=0)] = 16
    #: how much lower the hashing threads' CPU priority is than the event loop's (Linux
    #: nice, 0-19): under load the cores go to logged-in users' traffic first; 0 on a
    #: machine whose only load is the gate, if password logins matter more than latency
    password_nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 10
    #: failed password logins of one account (user name) before each further one delays
    #: the next attempt (token logins are not counted per account: docs/security.md)
    account_free_failures: Annotated[int, msgspec.Meta(ge=0)] = 5
    #: failed logins (token or password) from one address (an IPv6 /64) before each
    #: further one delays the next
    address_free_failures: Annotated[int, msgspec.Meta(ge=0)] = 30
    #: the first delay after the free failures; it doubles with each further failure ...
    backoff_initial_s: Positive = 1.0
    #: ... up to this
    backoff_max_s: Positive = 300.0
    #: a counter is forgotten this long after its last failure (a success resets an
    #: account's at once)
    failure_window_s: Positive = 900.0
    #: networks not throttled per address: loopback (a local proxy makes every client look
    #: like 127.0.0.1); put a trusted load balancer's addresses here, and ``[]`` when
    #: clients connect directly
    address_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

    def __post_init__(self) -> None:
        for network in self.address_exempt:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"address_exempt: {exc}") from None


class MessagingSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[messaging]``: limits of the message path (the msg and fanout groups)."""

    #: largest MsgData.msg_data accepted (bytes); larger sends are refused with TOO_LARGE
    max_msg_data_bytes: PositiveInt = 64 * 1024
    #: how long the msg group trusts a cached "user exists" / group lookup (seconds)
    lookup_cache_s: Positive = 5.0
    #: how long after sending a message its sender may revoke it (seconds)
    revoke_window_s: Positive = 120.0
    #: member limits by group type (PROTOCOL.md: NORMAL <= 200, SUPER <= 2000)
    group_max_members: PositiveInt = 200
    #: Member limit of a SUPER group.
    super_group_max_members: PositiveInt = 2000


class RoomSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[rooms]``: chat rooms (docs/protocol-extensions.md, "Chat rooms"): the gate's
    membership and fan-out, the room group's limits, the API's defaults."""

    #: recent messages a room keeps when its creator does not say (a joiner gets them)
    history_default: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 50
    #: the most recent messages a room may keep
    history_max: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 200
    #: largest msg_data of a room message when its creator does not say (bytes)
    max_msg_bytes_default: PositiveInt = 4096
    #: rooms one connection may be in at once
    max_rooms_per_connection: PositiveInt = 16
    #: room sends per second of one user on one gate (token bucket; refused RATE_LIMITED)
    user_rate_per_s: Positive = 5.0
    #: room sends one user may make at once on one gate before the rate applies
    user_rate_burst: PositiveInt = 10
    #: messages per second one room accepts (the room group; so one room cannot starve others)
    room_rate_per_s: Positive = 2000.0
    #: messages one room accepts at once before its rate applies
    room_rate_burst: PositiveInt = 4000
    #: a connection with more frames than this waiting to be written is dropped from its
    #: rooms (RoomExitNotify TOO_SLOW) instead of slowing the gate
    slow_backlog_frames: PositiveInt = 256
    #: how long a closed room can still be inspected (seconds)
    closed_keep_s: Positive = 24 * 3600.0
    #: how often a gate re-asserts its presence in its rooms (seconds)
    presence_interval_s: Positive = 10.0


class HotSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[hot]``: what Redis keeps of the timelines on the real services (docs/architecture.md,
    "Hot state"). Redis always holds what the projection has not written yet; these add the
    recent end that readers find without the document store."""

    #: messages per conversation kept beyond what the projection has not written
    conversation_window: PositiveInt = 200
    #: inbox entries per user kept beyond what the projection has not written
    inbox_window: PositiveInt = 1000
    #: how long a conversation's or a user's hot state outlives its last write (seconds);
    #: must be far above any projection lag
    idle_ttl_s: Positive = 7 * 24 * 3600.0
    #: how long a sent client_msg_id is remembered (seconds): a resend within it gets the
    #: original server_msg_id back, one after it is stored as a new message
    dedupe_ttl_s: Positive = 24 * 3600.0
    #: the shards of the hot state (Redis Cluster slots it uses per kind of timeline): keep
    #: it a divisor of the partitions of im.up.msg, im.fanout and im.up.ack, so that a
    #: handler batch writes one shard; changing it leaves the hot state behind (reads come
    #: from the document store until timelines are written again): change it with the
    #: projection caught up
    shards: PositiveInt = 16


class PushSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[push]``: the delivery timer (``timer`` group) and offline push (``push`` group).

    A provider is enabled by configuring it: devices registered for a provider that is not
    configured are skipped (and counted). docs/push.md has an operator's walk-through.
    """

    #: how long after a message is fanned out a device must have acked it (seconds)
    timer_delay_s: Positive = 5.0
    #: the start of a text message put in pushes (characters; 0: only "new message from X")
    preview_chars: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    #: HTTP timeout of one provider request (seconds)
    request_timeout_s: Positive = 10.0
    #: attempts per device for 5xx, 429 and timeouts before the push is recorded as failed
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 4
    #: First retry of a provider request after this long, doubling.
    initial_backoff_s: Positive = 0.5
    #: Longest wait between two attempts.
    max_backoff_s: Positive = 10.0
    #: webhook provider: the business's own push service (POST JSON); "" disables it
    webhook_url: str = ""
    #: HMAC-SHA256 key of the webhook push signature ("" sends it unsigned)
    webhook_secret: str = ""
    #: APNs (token-based auth) base URL; APNs is enabled by the team id, key id, .p8 key file
    #: and topic below
    apns_url: str = "https://api.push.apple.com"
    #: APNs team id.
    apns_team_id: str = ""
    #: APNs key id of the .p8 key.
    apns_key_id: str = ""
    #: Path of the APNs .p8 signing key.
    apns_key_path: str = ""
    #: the app's bundle id (``apns-topic``); a device may name its own
    apns_topic: str = ""
    #: FCM HTTP v1 base URL; FCM is enabled by the Firebase project and the service account
    #: key below
    fcm_url: str = "https://fcm.googleapis.com"
    #: Firebase project id.
    fcm_project_id: str = ""
    #: Path of the service account JSON key.
    fcm_credentials_path: str = ""
    #: OAuth2 token endpoint ("" = the one in the key file).
    fcm_token_url: str = ""


class BizSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[biz]``: business events on the ``biz.*`` topics and client uploads (docs/events.md)."""

    #: put message contents (``msg_data``, base64) in ``message.stored`` events
    include_msg_data: bool = True
    #: largest C2SUploadReq.payload accepted (bytes); larger uploads are refused TOO_LARGE
    max_c2s_payload_bytes: PositiveInt = 256 * 1024


class WebhookSubscriber(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One business server receiving events by webhook (``[[webhooks.subscribers]]``).

    An event is sent when its type matches one of `events` (a type such as
    ``"message.stored"``, or a pattern such as ``"message.*"``) or its topic is one of
    `topics`; with both empty, every event is sent.
    """

    #: names the subscriber in logs and dead letters (letters, digits, ``-_.``)
    name: str
    #: where events are POSTed (http or https)
    url: str
    #: HMAC-SHA256 key of ``X-CoffeeBus-Signature`` (shared with the receiver)
    secret: str
    events: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    #: seconds one POST may take (connect, send, answer)
    timeout_s: Positive = 10.0
    #: POSTs per event for 5xx, 429, timeouts and connection errors before it is dead-lettered
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ValueError(f"webhook subscriber name {self.name!r}: letters, digits, -_. only")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"webhook {self.name}: url must be http:// or https://")
        if not self.secret:
            raise ValueError(f"webhook {self.name}: a secret is required (it signs every POST)")
        for pattern in self.events:
            prefix = pattern[:-1] if pattern.endswith("*") else None
            known = (
                any(t.startswith(prefix) for t in EVENT_TYPES)
                if prefix is not None
                else pattern in EVENT_TYPES
            )
            if not known:
                raise ValueError(
                    f"webhook {self.name}: event {pattern!r} matches none of {list(EVENT_TYPES)}"
                )
        events_topics = {t.value for t in BizTopic} - {BizTopic.WEBHOOK_DEAD_LETTER.value}
        for topic in self.topics:
            if topic not in events_topics:
                raise ValueError(
                    f"webhook {self.name}: topic {topic!r} is none of {sorted(events_topics)}"
                )


class WebhookSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[webhooks]``: business servers that receive events by signed HTTP POSTs."""

    #: ``[[webhooks.subscribers]]`` tables: ``name``, ``url``, ``secret``, ``events``, ``topics``,
    #: ``timeout_s``, ``max_attempts`` (docs/events.md). In the environment: a TOML array of inline
    #: tables.
    subscribers: tuple[WebhookSubscriber, ...] = ()
    #: first retry after this long, doubling up to `max_backoff_s` (plus jitter)
    initial_backoff_s: Positive = 0.5
    #: Longest wait between two POSTs of one event.
    max_backoff_s: Positive = 30.0
    #: POSTs in flight at once over every subscriber and partition of one process
    max_connections: PositiveInt = 100

    def __post_init__(self) -> None:
        names = [s.name for s in self.subscribers]
        if len(set(names)) != len(names):
            raise ValueError(f"webhook subscriber names must be unique: {names}")


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
    """``[process]``: how every CoffeeBus process runs Python's cycle collector.

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
