"""Wiring: the dependencies one CoffeeBus process holds, embedded or on the real services.

Every role (gate, API, consumer groups) is constructed from the same `Runtime`: a bus, the
stores and the topology. `open_runtime` builds it either

- *embedded*: `MemoryBus` with every declared topic, and the in-memory store twins — the
  whole system in one process with nothing else installed (``make run``); or
- *real*: `KafkaBus` on ``settings.kafka``, MongoDB on ``settings.mongo`` with its indexes
  ensured and its server mode resolved (``[mongo] server``, `store.mongo.compat`), Redis on
  ``settings.redis``. The timelines (messages, inboxes, sessions, read and delivery marks)
  are served from Redis with MongoDB behind (`store.redis.messages`, `store.redis.inbox`,
  `store.redis.sessions`, `store.redis.deliveries`); MongoDB is written only by the
  ``projection`` group, whose targets (`Runtime.projection`) are the MongoDB stores
  themselves. Groups sit behind a Redis cache.

Roles never choose between the two themselves; this module is the only place that does.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from bus.base import Bus
from bus.kafka import KafkaBus
from bus.memory import MemoryBus
from bus.topology import Topology, load_topology
from coffeebus.settings import Settings
from consumers.projection import ProjectionTargets
from store.calls import CallStore
from store.deliveries import DeliveryStore
from store.groups import GroupLimits, GroupStore
from store.idempotency import IdempotencyStore
from store.inbox import InboxStore
from store.login_throttle import LoginThrottle, ThrottlePolicy
from store.memory.calls import MemoryCallStore
from store.memory.deliveries import MemoryDeliveryStore
from store.memory.groups import MemoryGroupStore
from store.memory.idempotency import MemoryIdempotencyStore
from store.memory.inbox import MemoryInboxStore
from store.memory.login_throttle import MemoryLoginThrottle
from store.memory.messages import MemoryMessageStore
from store.memory.push_log import MemoryPushLog
from store.memory.push_tokens import MemoryPushTokenStore
from store.memory.rooms import MemoryRoomStore
from store.memory.routes import MemoryRouteStore
from store.memory.seq import MemorySectionStore
from store.memory.sessions import MemorySessionStore
from store.memory.users import MemoryUserStore
from store.messages import MessageStore
from store.mongo import client as mongo_store
from store.mongo.compat import resolve_server
from store.mongo.deliveries import MongoDeliveryStore
from store.mongo.groups import MongoGroupStore
from store.mongo.inbox import MongoInboxStore
from store.mongo.messages import MongoMessageStore
from store.mongo.push_log import MongoPushLog
from store.mongo.push_tokens import MongoPushTokenStore
from store.mongo.seq import MongoSectionStore
from store.mongo.sessions import MongoSessionStore
from store.mongo.users import MongoUserStore
from store.passwords import PasswordPool
from store.push_log import PushLog
from store.push_tokens import PushTokenStore
from store.redis import client as redis_store
from store.redis.calls import RedisCallStore
from store.redis.deliveries import RedisDeliveryStore
from store.redis.groups import CachedGroupStore
from store.redis.idempotency import RedisIdempotencyStore
from store.redis.inbox import RedisInboxStore
from store.redis.keys import RedisKeys
from store.redis.login_throttle import RedisLoginThrottle
from store.redis.messages import RedisMessageStore
from store.redis.rooms import RedisRoomStore
from store.redis.routes import RedisRouteStore
from store.redis.scripts import ReplicaWait
from store.redis.sessions import RedisSessionStore
from store.redis.trim import HotTimelines
from store.rooms import RoomStore
from store.routes import RouteStore
from store.seq import SectionStore
from store.sessions import SessionStore
from store.timelines import SeparateTimelines, UserTimelines
from store.users import UserStore

__all__ = ["Mode", "ReadinessCheck", "Runtime", "memory_bus_for", "open_runtime"]

ReadinessCheck = Callable[[], Awaitable[None]]


class Mode(enum.StrEnum):
    """Where a process keeps its bus and its state."""

    #: In-memory bus and stores inside this one process.
    EMBEDDED = "embedded"
    #: Kafka, MongoDB and Redis.
    REAL = "real"


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the roles of one process share.

    The consumer groups are built from it through `consumers.runtime.Runtime`, the protocol
    that names what they read of it (this class satisfies it structurally; mypy checks that
    where `coffeebus.roles.ConsumerRole` hands it to a group's factory).
    """

    settings: Settings
    mode: Mode
    topology: Topology
    bus: Bus
    users: UserStore
    routes: RouteStore
    #: Conversation timelines (the msg group is their single writer).
    messages: MessageStore
    #: Users' inbox timelines (the fanout group is their single writer).
    inbox: InboxStore
    sessions: SessionStore
    #: Per user and conversation, the highest seq a device acked (the ack group writes).
    deliveries: DeliveryStore
    #: Groups and members, behind the Redis member cache on the real services.
    groups: GroupStore
    #: Persisted seq sections; each process makes its own `store.seq.SeqAllocator` over it.
    sections: SectionStore
    #: Device push tokens (registered through the API; the push group reads and discards).
    #: Defaults to the memory twin for runtimes built by hand (tests without pushes).
    push_tokens: PushTokenStore = field(default_factory=MemoryPushTokenStore)
    #: Offline pushes already sent (the push group's at-most-once claims).
    push_log: PushLog = field(default_factory=MemoryPushLog)
    #: Failed-login counters (Redis on the real services: shared by every gate).
    login_throttle: LoginThrottle = field(default_factory=MemoryLoginThrottle)
    #: Calls, their parties' claims and deadlines (Redis on the real services: every gate's
    #: and consumer's view of a call is the same, and it outlives any of them).
    calls: CallStore = field(default_factory=MemoryCallStore)
    #: Where the user store hashes passwords (the gate asks it whether it is full).
    passwords: PasswordPool | None = None
    #: Chat rooms: settings, recent windows, presence per gate (Redis on the real services,
    #: shared by the gates, the room group and the API).
    rooms: RoomStore = field(default_factory=MemoryRoomStore)

    @property
    def group_limits(self) -> GroupLimits:
        """Member limits by group type, from ``[messaging]``."""
        return group_limits(self.settings)

    #: (name, check) pairs the readiness endpoint runs; empty when embedded.
    readiness: tuple[tuple[str, ReadinessCheck], ...] = field(default=())
    #: the HTTP API's Idempotency-Key responses (Redis on the real services)
    idempotency: IdempotencyStore = field(default_factory=MemoryIdempotencyStore)
    #: inbox appends with their session touches in one write (the fanout group); None: the
    #: inbox and session stores above, side by side
    user_timelines: UserTimelines | None = None
    #: what the projection group writes (the document store) and trims (Redis's hot state);
    #: None: the timeline stores above, which then are the document store themselves
    projection_targets: ProjectionTargets | None = None

    @property
    def timelines(self) -> UserTimelines:
        """What the fanout group writes entries and session touches through."""
        if self.user_timelines is not None:
            return self.user_timelines
        return SeparateTimelines(self.inbox, self.sessions)

    @property
    def projection(self) -> ProjectionTargets:
        """The projection group's targets (`projection_targets`, or the stores above)."""
        if self.projection_targets is not None:
            return self.projection_targets
        return ProjectionTargets(
            messages=self.messages,
            inbox=self.inbox,
            sessions=self.sessions,
            deliveries=self.deliveries,
            groups=self.groups,
        )


def group_limits(settings: Settings) -> GroupLimits:
    """Member limits by group type from the ``[messaging]`` settings."""
    m = settings.messaging
    return GroupLimits(normal=m.group_max_members, super_group=m.super_group_max_members)


def throttle_policy(settings: Settings) -> ThrottlePolicy:
    """The failed-login back-off from the ``[login]`` settings."""
    login = settings.login
    return ThrottlePolicy(
        account_free_failures=login.account_free_failures,
        address_free_failures=login.address_free_failures,
        initial_s=login.backoff_initial_s,
        max_s=login.backoff_max_s,
        window_s=login.failure_window_s,
    )


def memory_bus_for(topology: Topology) -> MemoryBus:
    """A `MemoryBus` on which every concrete topic of `topology` is declared."""
    bus = MemoryBus()
    for spec in topology.topics.values():
        bus.create_topic(spec.name, spec.partitions)
    return bus


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, mode: Mode, *, client_id: str, topology: Topology | None = None
) -> AsyncIterator[Runtime]:
    """Build, start and finally close the dependencies of one process.

    `client_id` names this process to Kafka (it shows in `coffeebus topology lag`).
    """
    topology = topology or load_topology()
    # One pool per process: the gate's logins and the API's imports share its threads.
    login = settings.login
    passwords = PasswordPool(
        workers=login.password_workers, queue=login.password_queue, nice=login.password_nice
    )
    try:
        async with _open(settings, mode, client_id, topology, passwords) as runtime:
            yield runtime
    finally:
        passwords.close()


@contextlib.asynccontextmanager
async def _open(
    settings: Settings, mode: Mode, client_id: str, topology: Topology, passwords: PasswordPool
) -> AsyncIterator[Runtime]:
    if mode is Mode.EMBEDDED:
        bus = memory_bus_for(topology)
        await bus.start()
        inbox = MemoryInboxStore()
        routes = MemoryRouteStore()

        async def live_gates() -> list[str]:
            return [g.gate_id for g in await routes.live_gates()]

        try:
            yield Runtime(
                settings=settings,
                mode=mode,
                topology=topology,
                bus=bus,
                users=MemoryUserStore(passwords=passwords),
                routes=routes,
                messages=MemoryMessageStore(),
                inbox=inbox,
                sessions=MemorySessionStore(inbox),
                deliveries=MemoryDeliveryStore(),
                groups=MemoryGroupStore(limits=group_limits(settings)),
                sections=MemorySectionStore(),
                push_tokens=MemoryPushTokenStore(),
                push_log=MemoryPushLog(),
                login_throttle=MemoryLoginThrottle(throttle_policy(settings)),
                calls=MemoryCallStore(),
                passwords=passwords,
                rooms=MemoryRoomStore(live=live_gates),
            )
        finally:
            await bus.stop()
        return

    kafka = settings.kafka
    keys = RedisKeys(namespace=settings.redis.key_prefix, hot_shards=settings.hot.shards)
    redis = redis_store.connect_redis(settings.redis.url)
    # Hot-state writes the logs of record rely on wait for this many replicas (WAIT).
    replicas = ReplicaWait(settings.redis.wait_replicas, settings.redis.wait_timeout_ms)
    mongo = mongo_store.connect_mongo(
        settings.mongo.url,
        server_selection_timeout=settings.mongo.server_selection_timeout_ms / 1000,
    )
    kafka_bus = KafkaBus(
        kafka.bootstrap_servers,
        client_id=f"{kafka.client_id}-{client_id}",
        linger_ms=kafka.linger_ms,
        max_batch_size=kafka.max_batch_size,
        compression_type=kafka.compression_type,
        request_timeout_ms=kafka.request_timeout_ms,
        session_timeout_ms=kafka.session_timeout_ms,
        commit_interval_ms=kafka.commit_interval_ms,
        gather_ms=kafka.gather_ms,
    )
    try:
        db = mongo_store.database(mongo, settings.mongo.database)
        await mongo_store.ensure_indexes(db)
        server = await resolve_server(mongo, settings.mongo.server)
        await kafka_bus.start()
        sections = MongoSectionStore(db, server=server)
        hot = settings.hot
        idle = datetime.timedelta(seconds=hot.idle_ttl_s)
        cold_messages = MongoMessageStore(db)
        cold_inbox = MongoInboxStore(db)
        cold_sessions = MongoSessionStore(db, cold_inbox, server=server)
        messages = RedisMessageStore(
            redis,
            cold_messages,
            keys=keys,
            window=hot.conversation_window,
            idle_ttl=idle,
            dedupe_ttl=datetime.timedelta(seconds=hot.dedupe_ttl_s),
            replicas=replicas,
        )
        hot_inbox = RedisInboxStore(
            redis,
            cold_inbox,
            messages,
            keys=keys,
            window=hot.inbox_window,
            idle_ttl=idle,
            replicas=replicas,
        )
        groups = CachedGroupStore(
            MongoGroupStore(db, sections, limits=group_limits(settings), server=server),
            redis,
            keys=keys,
        )
        try:
            yield Runtime(
                settings=settings,
                mode=mode,
                topology=topology,
                bus=kafka_bus,
                users=MongoUserStore(db, redis, keys=keys, passwords=passwords),
                routes=RedisRouteStore(redis, keys=keys),
                messages=messages,
                inbox=hot_inbox,
                user_timelines=hot_inbox,
                sessions=RedisSessionStore(
                    redis, cold_sessions, cold_inbox, keys=keys, idle_ttl=idle, replicas=replicas
                ),
                deliveries=RedisDeliveryStore(redis, keys=keys, idle_ttl=idle, replicas=replicas),
                groups=groups,
                projection_targets=ProjectionTargets(
                    messages=cold_messages,
                    inbox=cold_inbox,
                    sessions=cold_sessions,
                    deliveries=MongoDeliveryStore(db, server=server),
                    groups=groups,
                    hot=HotTimelines(messages, hot_inbox),
                ),
                sections=sections,
                push_tokens=MongoPushTokenStore(db),
                push_log=MongoPushLog(db),
                login_throttle=RedisLoginThrottle(
                    redis, keys=keys, policy=throttle_policy(settings)
                ),
                calls=RedisCallStore(redis, keys=keys),
                passwords=passwords,
                readiness=(
                    ("mongodb", lambda: mongo_store.ping(mongo)),
                    ("redis", lambda: redis_store.ping(redis)),
                ),
                idempotency=RedisIdempotencyStore(redis, keys=keys),
                rooms=RedisRoomStore(redis, keys=keys),
            )
        finally:
            await kafka_bus.stop()
    finally:
        await redis.aclose()
        await mongo.close()
