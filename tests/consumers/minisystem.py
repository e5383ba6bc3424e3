"""A whole CoffeeBus for the ack / query / group / revoke tests: a gate, the consumer groups
that exist, the stores — embedded or on the real services — and logged-in SDK clients.

Isolation on the real services: the stores get a fresh MongoDB database and Redis namespace;
the Kafka topics are the shared ones of topology.yaml, so every test uses random 48-bit user
ids, its own gate id, and its own consumer group ids (``<group id>.<prefix>``) whose offsets
are first committed at the end of every partition — so a test never consumes another test's
leftovers and nobody else consumes its records. Group ids come from a section reserved at a
random height for the same reason (group conversations ``g:<id>`` are keys on shared topics).

The groups that are not there yet (a module that does not exist) are skipped: the tests of
this package only rely on msg (for revoke and group notifications) besides their own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from google.protobuf.message import Message

from bus.admin import apply
from bus.base import Bus, Consumer, Record, TopicPartition
from bus.kafka import KafkaBus
from bus.topology import Topology, load_topology
from coffeebus.settings import GatewaySettings, Settings
from coffeebus.wiring import Mode, Runtime, memory_bus_for
from consumers.registry import GROUP_MODULES, GroupHandler, factory
from gateway.server import Gate
from schemas.codes import ClientType, MsgType, SessionType
from schemas.commands import Cmd
from schemas.envelope import decode_envelope, now_ms
from schemas.errors import EnvelopeError
from schemas.events import decode_fanout
from schemas.ids import UserId, conversation_id
from sdk.client import Client
from sdk.events import Event, Push
from store import mongo as mongo_store
from store.deliveries import MemoryDeliveryStore, MongoDeliveryStore
from store.groups import MemoryGroupStore
from store.groups_cache import CachedGroupStore
from store.groups_mongo import GROUP_ID_TIMELINE, MongoGroupStore
from store.inbox import InboxEntry, MemoryInboxStore
from store.inbox_mongo import MongoInboxStore
from store.keys import RedisKeys
from store.messages import MemoryMessageStore, StoredMessage
from store.messages_mongo import MongoMessageStore
from store.redis import connect_redis
from store.routes import MemoryRouteStore
from store.routes_redis import RedisRouteStore
from store.seq import MemorySectionStore, MongoSectionStore
from store.sessions import MemorySessionStore, SessionTouch
from store.sessions_mongo import MongoSessionStore
from store.users import MemoryUserStore, UserImport
from store.users_mongo import MongoUserStore
from tests.waiting import wait_for

TIMEOUT = 15.0


def available_groups() -> list[str]:
    """The consumer groups whose module exists in this tree."""
    return [g for g, module in GROUP_MODULES.items() if importlib.util.find_spec(module)]


@dataclass
class System:
    """One running system and what a test needs of it."""

    runtime: Runtime
    gate: Gate
    prefix: str
    handlers: dict[str, GroupHandler]
    clients: list[Client] = field(default_factory=list)
    #: the users of this system (`user`)
    users: set[int] = field(default_factory=set)
    #: every event each client received, in order (by `id` of the client)
    seen: dict[int, list[Event]] = field(default_factory=dict)

    @staticmethod
    def new_uid() -> UserId:
        """A user id no other test uses."""
        return UserId(random.randrange(1 << 40, 1 << 48))

    async def user(self, user_id: UserId | None = None, *, nick: str = "") -> UserId:
        """Import a user (token ``tok-<id>``)."""
        uid = user_id or self.new_uid()
        self.users.add(uid)
        await self.runtime.users.upsert(
            UserImport(user_id=uid, nick_name=nick or f"n{uid}", token=f"tok-{uid}")
        )
        return uid

    async def client(
        self, user_id: UserId, *, client_type: ClientType = ClientType.ANDROID
    ) -> Client:
        """A client of the gate logged in as `user_id` (closed at teardown)."""
        events: list[Event] = []
        sdk = Client(
            heartbeat_interval=None,
            reconnect=False,
            request_timeout=TIMEOUT,
            on_event=events.append,
        )
        self.clients.append(sdk)
        self.seen[id(sdk)] = events
        await sdk.connect("127.0.0.1", self.gate.tcp_port)
        await sdk.login(user_id, f"tok-{user_id}", client_type=client_type)
        return sdk

    def pushes(self, sdk: Client, cmd: Cmd) -> list[Message]:
        """The bodies of the pushes of `cmd` that `sdk` received so far."""
        return [
            e.message
            for e in self.seen[id(sdk)]
            if isinstance(e, Push) and e.command_id == cmd and e.message is not None
        ]

    async def push(self, sdk: Client, cmd: Cmd, *, count: int = 1) -> list[Message]:
        """Wait until `sdk` received `count` pushes of `cmd`; return them all."""

        async def arrived() -> bool:
            return len(self.pushes(sdk, cmd)) >= count

        await wait_for(arrived)
        return self.pushes(sdk, cmd)


async def _commit_end_offsets(
    bus: Bus, bootstrap: str, group_id: str, topics: tuple[str, ...]
) -> None:
    """Start `group_id` at the end of `topics` (the shared topics hold other tests' records)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [
            KafkaTopicPartition(t, p) for t in topics for p in range(await bus.partitions_for(t))
        ]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit(dict(ends.items()))
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def _real_runtime(
    topology: Topology, kafka_bootstrap: str, mongo_url: str, redis_url: str, prefix: str
) -> AsyncIterator[Runtime]:
    settings = msgspec.convert(
        {
            "kafka": {"bootstrap_servers": kafka_bootstrap, "linger_ms": 0},
            "mongo": {"url": mongo_url, "database": f"cbtest_{prefix}"},
            "redis": {"url": redis_url, "key_prefix": f"cbtest:{prefix}:"},
        },
        Settings,
    )
    await apply(topology, kafka_bootstrap)
    keys = RedisKeys(namespace=settings.redis.key_prefix)
    redis = connect_redis(redis_url)
    mongo = mongo_store.connect_mongo(mongo_url)
    db = mongo_store.database(mongo, settings.mongo.database)
    await mongo_store.ensure_indexes(db)
    bus = KafkaBus(
        kafka_bootstrap,
        client_id=f"cbtest-{prefix}",
        linger_ms=0,
        metadata_wait_ms=1_000,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=100,
        fetch_max_wait_ms=20,
        poll_timeout_ms=50,
    )
    await bus.start()
    sections = MongoSectionStore(db)
    await sections.reserve(GROUP_ID_TIMELINE, random.randrange(1 << 40, 1 << 47))
    inbox = MongoInboxStore(db)
    try:
        yield Runtime(
            settings=settings,
            mode=Mode.REAL,
            topology=topology,
            bus=bus,
            users=MongoUserStore(db, redis, keys=keys),
            routes=RedisRouteStore(redis, keys=keys),
            messages=MongoMessageStore(db),
            inbox=inbox,
            sessions=MongoSessionStore(db, inbox),
            deliveries=MongoDeliveryStore(db),
            groups=CachedGroupStore(MongoGroupStore(db, sections), redis, keys=keys),
            sections=sections,
        )
    finally:
        await bus.stop()
        leftovers = [k async for k in redis.scan_iter(match=keys.pattern(), count=1000)]
        if leftovers:
            await redis.delete(*leftovers)
        await redis.aclose()
        await mongo.drop_database(settings.mongo.database)
        await mongo.close()


@contextlib.asynccontextmanager
async def _memory_runtime(topology: Topology) -> AsyncIterator[Runtime]:
    bus = memory_bus_for(topology)
    await bus.start()
    inbox = MemoryInboxStore()
    try:
        yield Runtime(
            settings=Settings(),
            mode=Mode.EMBEDDED,
            topology=topology,
            bus=bus,
            users=MemoryUserStore(),
            routes=MemoryRouteStore(),
            messages=MemoryMessageStore(),
            inbox=inbox,
            sessions=MemorySessionStore(inbox),
            deliveries=MemoryDeliveryStore(),
            groups=MemoryGroupStore(),
            sections=MemorySectionStore(),
        )
    finally:
        await bus.stop()


class _Ours:
    """Lets through only this system's records: on the real services other test runs share
    the topics, and their records must neither reach these stores nor be answered from them
    (uplink records from other gates, fan-out records for other users)."""

    def __init__(self, handler: GroupHandler, gate_id: str, users: set[int]) -> None:
        self.handler = handler
        self._gate_id = gate_id
        self._users = users

    def _ours(self, record: Record) -> bool:
        try:
            if record.topic == "im.fanout":
                return any(u in self._users for u in decode_fanout(record.value).recipients)
            if record.topic.startswith("im.up."):
                origin = decode_envelope(record.value).origin
                return origin is None or origin.gate_id == self._gate_id
        except EnvelopeError:
            return True  # poison: the handler dead-letters it
        return True

    async def handle(self, records: Sequence[Record]) -> None:
        ours = [r for r in records if self._ours(r)]
        if ours:
            await self.handler.handle(ours)

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        await self.handler.assigned(partitions)

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        await self.handler.revoked(partitions)


@contextlib.asynccontextmanager
async def open_system(
    kind: str,
    *,
    kafka_bootstrap: str | None = None,
    mongo_url: str | None = None,
    redis_url: str | None = None,
) -> AsyncIterator[System]:
    """Run a system: ``kind`` is ``memory`` or ``real`` (then the three URLs are needed)."""
    topology = load_topology()
    prefix = uuid.uuid4().hex[:10]
    if kind == "memory":
        opened = _memory_runtime(topology)
    else:
        assert kafka_bootstrap is not None
        assert mongo_url is not None
        assert redis_url is not None
        opened = _real_runtime(topology, kafka_bootstrap, mongo_url, redis_url, prefix)
    async with opened as runtime:
        handlers: dict[str, GroupHandler] = {}
        consumers: list[Consumer] = []
        gate_settings = msgspec.convert(
            {"gate_id": f"cbt-{prefix}", "host": "127.0.0.1", "tcp_port": 0, "ws_port": 0},
            GatewaySettings,
        )
        gate = Gate(
            gate_settings,
            bus=runtime.bus,
            user_store=runtime.users,
            route_store=runtime.routes,
            topology=topology,
        )
        system = System(runtime, gate, prefix, handlers)
        try:
            for name in available_groups():
                spec = topology.group(name)
                group_id = f"{spec.group_id}.{prefix}"
                if kafka_bootstrap is not None:
                    await _commit_end_offsets(runtime.bus, kafka_bootstrap, group_id, spec.topics)
                handlers[name] = factory(name)(runtime)
                ours = _Ours(handlers[name], gate_settings.gate_id, system.users)
                consumer = runtime.bus.consumer(group_id, spec.topics, ours.handle, listener=ours)
                await consumer.start()
                consumers.append(consumer)
            await gate.start()
            yield system
        finally:
            for sdk in system.clients:
                await sdk.close()
            await gate.stop()
            for consumer in reversed(consumers):
                await consumer.stop()
            for handler in handlers.values():
                await handler.close()
            if kafka_bootstrap is not None:
                await _delete_topics(kafka_bootstrap, [topology.gate_topic(gate.gate_id).name])


async def _delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


class Seeder:
    """Writes messages the way the msg and fanout groups do — timeline, inboxes, sessions —
    for tests of the read side that must not depend on those groups' timing."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._seqs: dict[str, int] = {}
        self._inbox_seqs: dict[UserId, int] = {}
        self._last_ms = 0

    async def message(
        self,
        sender: UserId,
        to: int,
        *,
        recipients: Sequence[UserId] = (),
        session_type: SessionType = SessionType.SINGLE,
        gap: int = 0,
        text: str = "",
        created_ms: int | None = None,
    ) -> StoredMessage:
        """Store a message `gap` seqs after the conversation's last one and append it to the
        inboxes of the sender and `recipients` (the receiver by default for a single chat)."""
        # Strictly increasing times keep "most recent first" orders unambiguous.
        self._last_ms = max(self._last_ms + 1, created_ms or now_ms())
        conversation = conversation_id(session_type, sender, to)
        seq = self._seqs.get(conversation, 0) + 1 + gap
        self._seqs[conversation] = seq
        msg = StoredMessage(
            conversation=conversation,
            seq=seq,
            client_msg_id=f"seed-{uuid.uuid4()}",
            from_user_id=sender,
            to_session_id=to,
            session_type=session_type,
            msg_type=MsgType.TEXT,
            msg_data=(text or f"m{seq}").encode(),
            created_ms=self._last_ms,
        )
        await self._runtime.messages.insert(msg)
        users = list(recipients) or ([UserId(to)] if session_type == SessionType.SINGLE else [])
        entries = []
        for user in dict.fromkeys([sender, *users]):
            self._inbox_seqs[user] = self._inbox_seqs.get(user, 0) + 1 + gap
            entries.append(InboxEntry(user_id=user, inbox_seq=self._inbox_seqs[user], message=msg))
        await self._runtime.inbox.append_many(entries)
        await self._runtime.sessions.touch_many([SessionTouch(e.user_id, msg) for e in entries])
        return msg


@pytest.fixture(
    params=[
        "memory",
        pytest.param("real", marks=[pytest.mark.kafka, pytest.mark.redis, pytest.mark.mongo]),
    ]
)
async def mini(request: pytest.FixtureRequest) -> AsyncIterator[System]:
    """The same scenario on the embedded wiring and on the real services."""
    if request.param == "memory":
        async with open_system("memory") as running:
            yield running
        return
    async with open_system(
        "real",
        kafka_bootstrap=request.getfixturevalue("kafka_bootstrap"),
        mongo_url=request.getfixturevalue("mongo_url"),
        redis_url=request.getfixturevalue("redis_url"),
    ) as running:
        yield running
