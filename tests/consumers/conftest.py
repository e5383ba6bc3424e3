"""Fixtures of the consumer tests: a whole CoffeeBus system, and SDK clients logged in to it.

`system` is parametrized: ``embedded`` (`coffeebus.wiring.open_runtime` in EMBEDDED mode:
MemoryBus and the memory stores) and ``real`` (the same wiring on Kafka, FerretDB and Redis).
A `System` has the runtime's stores, gates started on demand, and one member of each
consumer group that exists (`consumers.registry.available_groups`, or the groups a test
names), started through the same factories `coffeebus consume` uses.

Isolation on the real services, where the ``im.*`` topics are shared:

- every test gets its own Mongo database, Redis key namespace and gate ids (so gate
  topics), removed at teardown;
- its consumer groups get unique Kafka group ids, committed at the end of their topics
  before they start, so no earlier test's records are handled;
- user ids are random 48-bit numbers (`System.user`), and the consumers handle only uplink
  records that came from this system's gates (or from no gate: system messages), and only
  the fan-out, timer and push records of its users, so a test running at the same time
  elsewhere on the broker is never answered by this one;
- group ids come from a section reserved at a random height: group conversations
  (``g:<id>``) are keys on the shared topics, and group notifications are system messages
  that every running system's msg group handles.

Every client `System.login` opens records its events (`System.pushes`, `System.wait_pushes`)
besides queueing them (`next_push`, `drain`). `Seeder` writes messages straight to the
stores, for tests of the read side that must not depend on the msg and fanout groups.

Usage::

    async def test_x(system: System) -> None:
        await system.start_consumers()
        alice = await system.login(await system.user())
        ack = await alice.send_text(bob_id, "hi")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from google.protobuf.message import Message

from bus.admin import apply
from bus.base import Consumer, Record, TopicPartition
from bus.memory import MemoryBus
from bus.topology import Topology, load_topology
from coffeebus.settings import (
    GatewaySettings,
    HotSettings,
    KafkaSettings,
    MongoSettings,
    RedisSettings,
    Settings,
)
from coffeebus.wiring import Mode, Runtime, open_runtime
from consumers.registry import GroupHandler, available_groups, factory
from gateway.server import Gate
from schemas.codes import MsgType, SessionType
from schemas.envelope import decode_envelope, now_ms
from schemas.errors import EnvelopeError
from schemas.events import decode_fanouts
from schemas.ids import UserId, conversation_id
from sdk.client import Client
from sdk.events import Event, Push
from store.inbox import InboxEntry
from store.messages import StoredMessage
from store.mongo.client import connect_mongo
from store.mongo.groups import GROUP_ID_TIMELINE
from store.redis.client import connect_redis
from store.redis.keys import RedisKeys
from store.sessions import SessionTouch
from store.users import UserImport

WAIT_S = 20.0


async def next_push(client: Client, command: int, *, within: float = WAIT_S) -> Push:
    """The client's next push of `command` (other events are skipped)."""
    async with asyncio.timeout(within):
        while True:
            event = await client.next_event()
            if isinstance(event, Push) and event.command_id == command:
                return event


def drain(client: Client) -> list[Event]:
    """The events already queued for `client`, without waiting."""
    events: list[Event] = []
    queue = client._queue
    while queue is not None and not queue.empty():
        event = queue.get_nowait()
        if event is not None:
            events.append(event)
    return events


class EventLog:
    """Every event one client received, in order, and a signal for each new one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._arrived = asyncio.Event()

    def append(self, event: Event) -> None:
        self.events.append(event)
        self._arrived.set()

    async def until(self, enough: Callable[[], bool], *, within: float = WAIT_S) -> None:
        """Wait until `enough()` holds, checking it each time an event arrives."""
        async with asyncio.timeout(within):
            while not enough():
                self._arrived.clear()
                await self._arrived.wait()


#: Topics whose records are keyed by the user they concern (delivery timers, push requests).
_USER_KEYED = frozenset({"im.timer", "im.push"})


class _OwnRecords:
    """A handler wrapper that lets through only the records of this system (module doc)."""

    def __init__(self, handler: GroupHandler, gates: set[str], users: set[int]) -> None:
        self.handler = handler
        self._gates = gates
        self._users = users

    def _ours(self, record: Record) -> bool:
        if record.topic == "im.fanout" and self._users:
            try:
                return any(
                    u in self._users
                    for fanout in decode_fanouts(record.value)
                    for u in fanout.recipients
                )
            except EnvelopeError:
                return True
        if record.topic in _USER_KEYED and self._users:
            # keyed by the user id in decimal (schemas.events.recipient_key)
            return record.key is None or not record.key.isdigit() or int(record.key) in self._users
        if not record.topic.startswith("im.up."):
            return True
        try:
            origin = decode_envelope(record.value).origin
        except EnvelopeError:
            return True  # poison of ours or not: the handler dead-letters it
        return origin is None or origin.gate_id in self._gates

    async def handle(self, records: Sequence[Record]) -> None:
        ours = [r for r in records if self._ours(r)]
        if ours:
            await self.handler.handle(ours)

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        await self.handler.assigned(partitions)

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        await self.handler.revoked(partitions)


class System:
    """A runtime with gates, consumer group members and logged-in clients (all closed at
    teardown)."""

    def __init__(self, kind: str, runtime: Runtime, *, kafka_bootstrap: str | None) -> None:
        self.kind = kind
        self.runtime = runtime
        self.kafka_bootstrap = kafka_bootstrap
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.gates: list[Gate] = []
        self.gate_ids: set[str] = set()
        self.members: dict[str, tuple[Consumer, GroupHandler]] = {}
        self.clients: list[Client] = []
        #: every event each client of `login` received
        self.event_logs: dict[Client, EventLog] = {}
        self.tokens: dict[int, str] = {}
        self.user_ids: set[int] = set()
        self.group_ids: dict[str, str] = {}

    @property
    def topology(self) -> Topology:
        return self.runtime.topology

    # -- gates and consumers ---------------------------------------------------------------

    async def gate(self, **overrides: Any) -> Gate:
        """A new gate on this system's bus and stores (port 0: any free port), with the
        runtime's login throttle, password pool and room store, as `coffeebus.roles.GateRole`
        wires one; `overrides` are ``[gateway]`` settings."""
        values: dict[str, Any] = {
            "gate_id": f"{self.prefix}-g{len(self.gates) + 1}",
            "host": "127.0.0.1",
            "tcp_port": 0,
            "ws_port": 0,
            **overrides,
        }
        gate = Gate(
            msgspec.convert(values, GatewaySettings),
            bus=self.runtime.bus,
            user_store=self.runtime.users,
            route_store=self.runtime.routes,
            topology=self.topology,
            login_settings=self.runtime.settings.login,
            login_throttle=self.runtime.login_throttle,
            password_pool=self.runtime.passwords,
            room_store=self.runtime.rooms,
            room_settings=self.runtime.settings.rooms,
        )
        self.gate_ids.add(gate.gate_id)
        self.gates.append(gate)
        await gate.start()
        return gate

    async def start_consumers(
        self,
        groups: Iterable[str] | None = None,
        *,
        runtime: Runtime | None = None,
        group_suffix: str = "",
        positions: dict[TopicPartition, int] | None = None,
    ) -> None:
        """Start one member of each group (default: every group that exists).

        `runtime` overrides the stores the handlers get (e.g. a failing one); `group_suffix`
        gives the groups other ids (a second generation of consumers); on Kafka the groups
        start at `positions` (default: the current ends).
        """
        names = list(groups) if groups is not None else list(available_groups())
        specs = [self.topology.group(name) for name in names]
        group_ids = [spec.group_id + group_suffix for spec in specs]
        if self.kafka_bootstrap is not None:
            await commit_ends(
                self.kafka_bootstrap,
                self.topology,
                [(gid, spec.topics) for gid, spec in zip(group_ids, specs, strict=True)],
                positions,
            )
        for name, spec, group_id in zip(names, specs, group_ids, strict=True):
            handler = factory(name)(runtime or self.runtime)
            own = _OwnRecords(handler, self.gate_ids, self.user_ids)
            consumer = self.runtime.bus.consumer(group_id, spec.topics, own.handle, listener=own)
            async with asyncio.timeout(60):
                await consumer.start()
            self.members[name] = (consumer, handler)
            self.group_ids[name] = group_id

    async def positions(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """The end offset of every partition of `topics` now."""
        bus = self.runtime.bus
        tps = [
            TopicPartition(t, p) for t in topics for p in range(self.topology.topic(t).partitions)
        ]
        if isinstance(bus, MemoryBus):
            return {tp: bus.end_offset(tp) for tp in tps}
        assert self.kafka_bootstrap is not None
        raw = AIOKafkaConsumer(bootstrap_servers=self.kafka_bootstrap)
        await raw.start()
        try:
            ends = await raw.end_offsets([KafkaTopicPartition(*tp) for tp in tps])
        finally:
            await raw.stop()
        return {TopicPartition(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    async def caught_up(self, group: str) -> bool:
        """Whether the running member of `group` committed the end of all its topics."""
        spec = self.topology.group(group)
        ends = await self.positions(spec.topics)
        bus = self.runtime.bus
        group_id = self.group_ids[group]
        if isinstance(bus, MemoryBus):
            return all((bus.committed(group_id, tp) or 0) >= end for tp, end in ends.items())
        assert self.kafka_bootstrap is not None
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka_bootstrap)
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(group_id)
        finally:
            await admin.close()
        done = {(tp.topic, tp.partition): meta.offset for tp, meta in committed.items()}
        return all(done.get(tp, 0) >= end for tp, end in ends.items() if end > 0)

    async def stop_consumers(self, groups: Iterable[str] | None = None) -> None:
        """Stop members gracefully (their batches are committed)."""
        for name in list(groups) if groups is not None else list(self.members):
            consumer, handler = self.members.pop(name)
            await consumer.stop()
            await handler.close()

    def handler(self, group: str) -> GroupHandler:
        """The handler of the running member of `group`."""
        return self.members[group][1]

    # -- users and clients -----------------------------------------------------------------

    @staticmethod
    def new_uid() -> UserId:
        """A random 48-bit user id, unique across concurrent test runs (not imported)."""
        return UserId(int.from_bytes(os.urandom(6), "big") | 1 << 40)

    async def user(self, *, nick: str | None = None) -> UserId:
        """A new user with a random 48-bit id (`new_uid`) and the token ``tok-<id>``."""
        user_id = self.new_uid()
        token = f"tok-{user_id}"
        await self.runtime.users.upsert(
            UserImport(user_id=user_id, nick_name=nick or f"user{user_id}", token=token)
        )
        self.tokens[user_id] = token
        self.user_ids.add(user_id)
        return user_id

    async def login(
        self, user_id: int, gate: Gate | None = None, *, client_type: int = 0, **options: Any
    ) -> Client:
        """An SDK client logged in as `user_id` on `gate` (default: the first gate), its
        events recorded (`pushes`); `options` go to `Client` (an `on_event` still gets
        every event)."""
        gate = gate or (self.gates[0] if self.gates else await self.gate())
        log = EventLog()
        also: Callable[[Event], None] | None = options.pop("on_event", None)

        def record(event: Event) -> None:
            log.append(event)
            if also is not None:
                also(event)

        client = Client(heartbeat_interval=None, reconnect=False, on_event=record, **options)
        self.clients.append(client)
        self.event_logs[client] = log
        await client.connect("127.0.0.1", gate.tcp_port)
        await client.login(user_id, self.tokens[user_id], client_type=client_type)
        return client

    def pushes(self, client: Client, command: int) -> list[Message]:
        """The bodies of the pushes of `command` that `client` received so far, in order."""
        return [
            e.message
            for e in self.event_logs[client].events
            if isinstance(e, Push) and e.command_id == command and e.message is not None
        ]

    async def wait_pushes(
        self, client: Client, command: int, *, count: int = 1, within: float = WAIT_S
    ) -> list[Message]:
        """Wait until `client` received `count` pushes of `command`; return them all."""
        await self.event_logs[client].until(
            lambda: len(self.pushes(client, command)) >= count, within=within
        )
        return self.pushes(client, command)

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for gate in self.gates:
            await gate.stop()
        await self.stop_consumers()


async def commit_ends(
    bootstrap: str,
    topology: Topology,
    groups: Sequence[tuple[str, Sequence[str]]],
    positions: dict[TopicPartition, int] | None = None,
) -> None:
    """Commit the current end of every partition of each group's topics (or `positions`),
    so that the groups start with records published from now on (or from there)."""
    for group_id, topics in groups:
        raw = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
        )
        await raw.start()
        try:
            tps = [
                KafkaTopicPartition(topic, p)
                for topic in topics
                for p in range(topology.topic(topic).partitions)
            ]
            raw.assign(tps)
            ends = await raw.end_offsets(tps)
            if positions is not None:
                ends = {tp: positions.get(TopicPartition(tp.topic, tp.partition), 0) for tp in ends}
            await raw.commit(dict(ends))
        finally:
            await raw.stop()


def unique_groups(topology: Topology, suffix: str) -> Topology:
    """`topology` with every consumer group id made unique (topics unchanged)."""
    groups = {
        name: msgspec.structs.replace(spec, group_id=f"{spec.group_id}.{suffix}")
        for name, spec in topology.groups.items()
    }
    return msgspec.structs.replace(topology, groups=groups)


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


@pytest.fixture
async def embedded_system() -> AsyncIterator[System]:
    async with AsyncExitStack() as stack:
        runtime = await stack.enter_async_context(
            open_runtime(Settings(), Mode.EMBEDDED, client_id="tests")
        )
        system = System("embedded", runtime, kafka_bootstrap=None)
        stack.push_async_callback(system.close)
        yield system


@contextlib.asynccontextmanager
async def open_real_system(
    kafka_bootstrap: str,
    redis_url: str,
    mongo_url: str,
    *,
    topology: Topology | None = None,
    hot: HotSettings | None = None,
    redis_options: Mapping[str, Any] | None = None,
    **kafka_options: Any,
) -> AsyncIterator[System]:
    """A `System` on the given servers (isolated as the module docstring says), closed and
    cleaned up on exit. `topology` defaults to topology.yaml; its group ids are made unique;
    `hot` sizes Redis's hot state; `redis_options` are further `RedisSettings` fields (e.g.
    ``wait_replicas``), `kafka_options` further `KafkaSettings` fields (e.g.
    ``request_timeout_ms``)."""
    suffix = uuid.uuid4().hex[:12]
    topology = unique_groups(topology or load_topology(), suffix)
    await apply(topology, kafka_bootstrap)  # idempotent: the shared im.* topics
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, linger_ms=1, **kafka_options),
        mongo=MongoSettings(url=mongo_url, database=f"cbtest_{suffix}"),
        redis=RedisSettings(url=redis_url, key_prefix=f"cbtest:{suffix}:", **(redis_options or {})),
        hot=hot or HotSettings(),
    )
    system: System | None = None
    try:
        async with open_runtime(
            settings, Mode.REAL, client_id=f"tests-{suffix}", topology=topology
        ) as runtime:
            # Group ids from a random height (module docstring): a fresh database would
            # start every concurrent test's groups at the same ids.
            await runtime.sections.reserve(GROUP_ID_TIMELINE, random.randrange(1 << 40, 1 << 47))
            system = System("real", runtime, kafka_bootstrap=kafka_bootstrap)
            try:
                yield system
            finally:
                await system.close()
    finally:
        await _cleanup(settings, [] if system is None else [g.topic for g in system.gates])


@pytest.fixture
async def real_system(
    kafka_bootstrap: str, redis_url: str, mongo_url: str
) -> AsyncIterator[System]:
    async with open_real_system(kafka_bootstrap, redis_url, mongo_url) as system:
        yield system


async def _cleanup(settings: Settings, gate_topics: list[str]) -> None:
    if gate_topics:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics(gate_topics)
        finally:
            await admin.close()
    redis = connect_redis(settings.redis.url)
    try:
        keys = RedisKeys(namespace=settings.redis.key_prefix)
        leftovers = [k async for k in redis.scan_iter(match=keys.pattern(), count=1000)]
        if leftovers:
            await redis.delete(*leftovers)
    finally:
        await redis.aclose()
    mongo = connect_mongo(settings.mongo.url)
    try:
        await mongo.drop_database(settings.mongo.database)
    finally:
        await mongo.close()


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("real", marks=[pytest.mark.kafka, pytest.mark.redis, pytest.mark.mongo]),
    ]
)
def system(request: pytest.FixtureRequest) -> System:
    """A whole system (consumers not started yet: `await system.start_consumers()`)."""
    fixture: System = request.getfixturevalue(f"{request.param}_system")
    return fixture
