"""Routes in Redis, the route refresher, the live-gate registry and the SIGTERM drain."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from bus.topology import load_topology
from schemas.codes import KickReason
from schemas.commands import Cmd
from schemas.pb.coffeebus import ext_pb2
from store.ids import UserId as StoreUserId
from store.mongo.client import connect_mongo
from store.mongo.users import MongoUserStore
from store.redis.client import RedisClient, connect_redis
from store.redis.keys import RedisKeys
from store.redis.routes import RedisRouteStore
from store.users import UserImport
from tests.gateway.client import Client, Kind
from tests.gateway.conftest import FAST_SCRYPT, Env
from tests.waiting import wait_for


@pytest.mark.parametrize("kind", ["tcp", "ws"])
async def test_stop_drains_connections_and_routes(env: Env, kind: Kind) -> None:
    for uid in (4001, 4002):
        await env.user(uid)
    gate = await env.gate()
    clients = [await env.connect(gate, kind) for _ in range(3)]
    await clients[0].login(4001, "token-4001")
    await clients[1].login(4002, "token-4002")
    assert [str(g.gate_id) for g in await env.routes.live_gates()] == [gate.gate_id]
    await gate.stop()
    for client in clients[:2]:
        [notify] = await client.wait_closed()
        reason = ext_pb2.KickNotify.FromString(notify.body).reason
        assert KickReason(reason) is KickReason.SERVER_SHUTDOWN
    # Not logged in: told all the same.
    assert [f.command_id for f in await clients[2].wait_closed()] == [Cmd.KICK_NOTIFY]
    for uid in (4001, 4002):
        assert await env.routes.get(StoreUserId(uid)) == []
    assert await env.routes.live_gates() == []
    env.gates.remove(gate)


@pytest.mark.redis
@pytest.mark.kafka
@pytest.mark.mongo
async def test_routes_live_in_redis_with_a_ttl_that_the_gate_refreshes(real_env: Env) -> None:
    assert real_env.redis is not None
    assert real_env.keys is not None
    redis, keys = real_env.redis, real_env.keys
    await real_env.user(4003)
    gate = await real_env.gate(heartbeat_interval_s=0.2, idle_heartbeats=25)  # idle 5 s
    client = await real_env.connect(gate, "tcp")
    await client.login(4003, "token-4003")
    key = keys.route(4003)
    assert 0 < await redis.pttl(key) <= gate.route_ttl_s * 1000
    # A route lost from Redis (e.g. a restart) is put back by the refresher.
    await redis.delete(key)
    await wait_for(lambda: _exists(redis, key))
    [route] = await real_env.routes.get(StoreUserId(4003))
    assert str(route.gate_id) == gate.gate_id
    await client.close()
    await wait_for(lambda: _gone(redis, key))


async def _exists(redis: RedisClient, key: str) -> bool:
    return bool(await redis.exists(key))


async def _gone(redis: RedisClient, key: str) -> bool:
    return not await redis.exists(key)


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.mongo
async def test_sigterm_drains_a_gate_process(
    kafka_bootstrap: str, redis_url: str, mongo_url: str
) -> None:
    prefix = f"cbtest:{uuid.uuid4().hex[:12]}:"
    db_name = f"cbtest_{uuid.uuid4().hex[:12]}"
    gate_id = f"sigterm-{uuid.uuid4().hex[:8]}"
    redis = connect_redis(redis_url)
    mongo = connect_mongo(mongo_url)
    keys = RedisKeys(namespace=prefix)
    users = MongoUserStore(mongo[db_name], redis, keys=keys, password_params=FAST_SCRYPT)
    routes = RedisRouteStore(redis, keys=keys)
    await users.upsert(UserImport(user_id=StoreUserId(4004), token="token-4004"))
    environment = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "REDIS_URL": redis_url,
        "MONGO_URL": mongo_url,
        "COFFEEBUS_REDIS__KEY_PREFIX": f'"{prefix}"',
        "COFFEEBUS_MONGO__DATABASE": f'"{db_name}"',
        "COFFEEBUS_GATEWAY__GATE_ID": f'"{gate_id}"',
        "COFFEEBUS_GATEWAY__HOST": '"127.0.0.1"',
        "COFFEEBUS_GATEWAY__TCP_PORT": "0",
        "COFFEEBUS_GATEWAY__WS_PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coffeebus",
        "gateway",
        env=environment,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        tcp_port = ws_port = 0
        async with asyncio.timeout(30):
            while not tcp_port:
                line = (await process.stderr.readline()).decode()
                assert line, "the gate process exited before listening"
                found = re.search(r"TCP [\d.]+:(\d+), WebSocket [\d.]+:(\d+)", line)
                if found:
                    tcp_port, ws_port = int(found[1]), int(found[2])
        tcp = await Client.connect("tcp", tcp_port)
        ws = await Client.connect("ws", ws_port)
        await tcp.login(4004, "token-4004")
        assert await routes.get(StoreUserId(4004))
        assert gate_id in [g.gate_id for g in await routes.live_gates()]
        process.send_signal(signal.SIGTERM)
        [notify] = await tcp.wait_closed(within=15)
        assert notify.command_id == Cmd.KICK_NOTIFY
        assert await ws.wait_closed(within=15)  # not logged in: a kick too, then the close
        async with asyncio.timeout(30):
            assert await process.wait() == 0
        assert await routes.get(StoreUserId(4004)) == []
        assert gate_id not in [g.gate_id for g in await routes.live_gates()]
        await tcp.close()
        await ws.close()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        topic = load_topology().gate_topic(gate_id).name
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
        leftovers = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
        if leftovers:
            await redis.delete(*leftovers)
        await redis.aclose()
        await mongo.drop_database(db_name)
        await mongo.close()
