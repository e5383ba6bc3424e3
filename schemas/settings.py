"""Settings sections more than one package reads: how to reach the shared services, the
hot state they keep, and the limits of the message path.

The settings file's format (``[section]`` tables, ``COFFEEBUS_<SECTION>__<FIELD>`` variables)
and its loading belong to the composition root (`coffeebus.settings`). Each role's own
sections live with the role (`gateway.settings`, `producers.settings`, `consumers.settings`);
the sections here, and the validated field types every section uses, sit in `schemas`
because every package may import it and it imports none of them (docs/architecture.md,
"Layout and dependency direction").
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = [
    "HotSettings",
    "KafkaSettings",
    "MessagingSettings",
    "MongoSettings",
    "Port",
    "Positive",
    "PositiveInt",
    "RedisSettings",
    "RoomSettings",
]

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


class KafkaSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How to reach the Kafka cluster and how to produce to it."""

    #: Kafka brokers, ``host:port[,host:port…]`` (also ``KAFKA_BOOTSTRAP_SERVERS``).
    bootstrap_servers: str = "127.0.0.1:9092"
    #: Prefix of the Kafka client ids; ``coffeebus topology lag`` shows them as partition owners.
    client_id: str = "coffeebus"
    #: Producer linger (ms). 0: a record goes out at once, and records published while a
    #: request is in flight (one per broker and producer) go together in the next one — the
    #: batching a timer would add, without its wait (docs/benchmarks.md, "Producer linger").
    linger_ms: Annotated[int, msgspec.Meta(ge=0)] = 0
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
    #: The shortest time between two offset commits of one consumer (ms). Each commit is a
    #: write to ``__consumer_offsets``; the batches a consumer handles meanwhile are committed
    #: together by the next one. A member that dies loses no records but hands up to this
    #: much handled work to the next owner, which handles it again (handlers are idempotent).
    #: 0: a commit per batch.
    commit_interval_ms: Annotated[int, msgspec.Meta(ge=0)] = 100
    #: How long the message path's groups (msg, fanout, ack) let records gather after a
    #: fetch brought some (ms), so that records arriving a few milliseconds apart are
    #: handled as one batch: one produce request and one store round trip for them all
    #: instead of one each (docs/benchmarks.md, "Gathering batches"). An idle consumer is not
    #: woken by it; request groups and the gates hand each fetch over at once. 0: no window.
    gather_ms: Annotated[int, msgspec.Meta(ge=0)] = 5


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
    """The Redis server (or Redis Cluster) holding routes, presence, caches and hot state."""

    #: Redis URL (also ``REDIS_URL``): ``redis://host:port/db`` (or ``rediss://``,
    #: ``unix://``) for one server; ``redis+cluster://host:port,host:port`` (or
    #: ``rediss+cluster://``) for a Redis Cluster, naming one or more seed nodes.
    url: str = "redis://127.0.0.1:6379/0"
    #: Prefix of every key CoffeeBus writes, so several deployments can share one Redis.
    key_prefix: str = "cb:"
    #: Replicas that must acknowledge a hot-state write (a message, an inbox entry, a read or
    #: delivery mark) before it is logged and answered (Redis ``WAIT``), so that the failover
    #: of its master does not take it back; a shortfall within ``wait_timeout_ms`` is retried
    #: like a lost connection. 0: no wait (one Redis without replicas). Set 1 on a Redis
    #: (Cluster) whose masters have replicas (docs/operations.md, "Redis Cluster").
    wait_replicas: Annotated[int, msgspec.Meta(ge=0, le=5)] = 0
    #: How long one WAIT may take (ms).
    wait_timeout_ms: PositiveInt = 1000


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


class RoomSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[rooms]``: chat rooms (docs/protocol-extensions.md, "Chat rooms"): the gate's
    membership and fan-out, the room group's limits, the API's defaults — read by all three
    roles, so it sits here."""

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
