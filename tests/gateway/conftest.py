"""Fixtures of the gate tests: a wiring of bus + stores, in memory or on the real services.

`env` is parametrized: ``memory`` (MemoryBus, MemoryUserStore, MemoryRouteStore) and
``real`` (KafkaBus on the broker, MongoUserStore on FerretDB with its Redis cache,
RedisRouteStore on Redis). Every test gets fresh names: its own gate ids (so gate topics),
Redis key namespace and Mongo database, all removed afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bus.admin import apply
from bus.base import Bus, Record
from bus.kafka import KafkaBus
from bus.memory import MemoryBus
from bus.topology import Topology, load_topology
from coffeebus.settings import GatewaySettings
from gateway.server import Gate
from schemas.envelope import Envelope, decode_envelope
from store.ids import UserId
from store.memory.routes import MemoryRouteStore
from store.memory.users import MemoryUserStore
from store.mongo.client import connect_mongo, ensure_indexes
from store.mongo.users import MongoUserStore
from store.passwords import ScryptParams
from store.redis.client import RedisClient, connect_redis
from store.redis.keys import RedisKeys
from store.redis.routes import RedisRouteStore
from store.routes import RouteStore
from store.users import User, UserImport, UserStore
from tests.gateway.client import Client, Kind

FAST_SCRYPT = ScryptParams(n=16, r=1, p=1)


class Env:
    """A bus and stores, and the gates a test starts on them (stopped at teardown)."""

    def __init__(
        self,
        kind: str,
        *,
        bus: Bus,
        users: UserStore,
        routes: RouteStore,
        topology: Topology,
        kafka_bootstrap: str | None = None,
        redis: RedisClient | None = None,
        keys: RedisKeys | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.kind = kind
        self.bus = bus
        self.users = users
        self.routes = routes
        self.topology = topology
        self.kafka_bootstrap = kafka_bootstrap
        self.gates: list[Gate] = []
        self.clients: list[Client] = []
        self.prefix = f"t{uuid.uuid4().hex[:8]}"

    def settings(self, **overrides: Any) -> GatewaySettings:
        values: dict[str, Any] = {
            "gate_id": f"{self.prefix}-{len(self.gates) + 1}",
            "host": "127.0.0.1",
            "tcp_port": 0,
            "ws_port": 0,
        }
        values.update(overrides)
        return msgspec.convert(values, GatewaySettings)

    async def gate(self, **overrides: Any) -> Gate:
        gate = Gate(
            self.settings(**overrides),
            bus=self.bus,
            user_store=self.users,
            route_store=self.routes,
            topology=self.topology,
        )
        self.gates.append(gate)
        await gate.start()
        return gate

    async def connect(self, gate: Gate, kind: Kind) -> Client:
        """A test client connected to `gate` (closed at teardown)."""
        client = await Client.connect(kind, gate.tcp_port if kind == "tcp" else gate.ws_port)
        self.clients.append(client)
        return client

    async def user(self, user_id: int, *, nick: str = "", password: str | None = None) -> User:
        return await self.users.upsert(
            UserImport(
                user_id=UserId(user_id),
                nick_name=nick or f"user{user_id}",
                token=f"token-{user_id}",
                user_name=f"{self.prefix}-u{user_id}" if password else None,
                password=password,
            )
        )

    @asynccontextmanager
    async def tap(self, topic: str) -> AsyncIterator[asyncio.Queue[Envelope]]:
        """Envelopes published to `topic` by this test's gates from now on."""
        queue: asyncio.Queue[Envelope] = asyncio.Queue()
        mine = {g.gate_id for g in self.gates}

        def keep(value: bytes) -> None:
            envelope = decode_envelope(value)
            if envelope.origin is not None and envelope.origin.gate_id in mine:
                queue.put_nowait(envelope)

        if self.kafka_bootstrap is None:

            async def handler(records: Any) -> None:
                for record in records:
                    assert isinstance(record, Record)
                    keep(record.value)

            consumer = self.bus.consumer(f"tap-{uuid.uuid4().hex}", [topic], handler)
            await consumer.start()
            try:
                yield queue
            finally:
                await consumer.stop()
            return
        raw = AIOKafkaConsumer(bootstrap_servers=self.kafka_bootstrap, enable_auto_commit=False)
        await raw.start()
        try:
            partitions = await self.bus.partitions_for(topic)
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            raw.assign(tps)
            await raw.seek_to_end(*tps)
            for tp in tps:  # resolve the positions now, before the test publishes
                await raw.position(tp)

            async def pump() -> None:
                while True:
                    batches = await raw.getmany(timeout_ms=100)
                    for records in batches.values():
                        for record in records:
                            keep(record.value)

            task = asyncio.create_task(pump())
            try:
                yield queue
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        finally:
            await raw.stop()

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for gate in self.gates:
            await gate.stop()


@pytest.fixture
def topology() -> Topology:
    return load_topology()


@pytest.fixture
async def memory_env(topology: Topology) -> AsyncIterator[Env]:
    bus = MemoryBus()
    for spec in topology.topics.values():
        bus.create_topic(spec.name, spec.partitions)
    await bus.start()
    users = MemoryUserStore(password_params=FAST_SCRYPT)
    env = Env("memory", bus=bus, users=users, routes=MemoryRouteStore(), topology=topology)
    try:
        yield env
    finally:
        await env.close()
        await bus.stop()


@pytest.fixture
async def real_env(
    topology: Topology, kafka_bootstrap: str, redis_url: str, mongo_url: str
) -> AsyncIterator[Env]:
    await apply(topology, kafka_bootstrap)  # idempotent: the shared im.up.* topics
    bus = KafkaBus(
        kafka_bootstrap,
        client_id="coffeebus-gate-tests",
        linger_ms=0,
        metadata_wait_ms=1_000,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=100,
        fetch_max_wait_ms=50,
        poll_timeout_ms=100,
    )
    await bus.start()
    redis = connect_redis(redis_url)
    keys = RedisKeys(namespace=f"cbtest:{uuid.uuid4().hex[:12]}:")
    mongo = connect_mongo(mongo_url)
    db_name = f"cbtest_{uuid.uuid4().hex[:12]}"
    db = mongo[db_name]
    await ensure_indexes(db)
    users = MongoUserStore(db, redis, keys=keys, password_params=FAST_SCRYPT)
    routes = RedisRouteStore(redis, keys=keys)
    env = Env(
        "real",
        bus=bus,
        users=users,
        routes=routes,
        topology=topology,
        kafka_bootstrap=kafka_bootstrap,
        redis=redis,
        keys=keys,
    )
    try:
        yield env
    finally:
        await env.close()
        await bus.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([g.topic for g in env.gates])
        finally:
            await admin.close()
        leftovers = [k async for k in redis.scan_iter(match=keys.pattern(), count=1000)]
        if leftovers:
            await redis.delete(*leftovers)
        await redis.aclose()
        await mongo.drop_database(db_name)
        await mongo.close()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("real", marks=[pytest.mark.kafka, pytest.mark.redis, pytest.mark.mongo]),
    ]
)
def env(request: pytest.FixtureRequest) -> Env:
    """The same scenario on the in-memory wiring and on the real services."""
    fixture: Env = request.getfixturevalue(f"{request.param}_env")
    return fixture
