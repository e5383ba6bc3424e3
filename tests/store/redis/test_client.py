"""Redis plumbing against the real server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError

from store.redis.client import (
    RedisClient,
    connect_redis,
    hiredis_packing,
    is_cluster,
    parse_cluster_url,
    ping,
)
from store.redis.keys import RedisKeys


@pytest.mark.redis
async def test_ping_and_bytes_replies(redis: RedisClient, redis_keys: RedisKeys) -> None:
    await ping(redis)
    key = redis_keys.rate_limit("test", 1)
    await redis.set(key, "v")
    assert await redis.get(key) == b"v"


async def test_ping_fails_fast_without_a_server() -> None:
    client = connect_redis("redis://127.0.0.1:9/0", socket_connect_timeout=0.3)
    try:
        with pytest.raises(RedisConnectionError):
            await ping(client)
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_a_burst_beyond_the_pool_waits_instead_of_failing(redis_url: str) -> None:
    redis = connect_redis(redis_url, max_connections=4)
    try:
        # 200 concurrent commands through 4 connections: all succeed, none raise
        # MaxConnectionsError (the gate's login burst).
        replies = await asyncio.gather(*(redis.ping() for _ in range(200)))
        assert all(replies)
    finally:
        await redis.aclose()


def test_a_cluster_url_names_seeds_credentials_and_tls() -> None:
    assert parse_cluster_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001") == (
        [("10.0.0.1", 7000), ("10.0.0.2", 7001)],
        None,
        None,
        False,
    )
    assert parse_cluster_url("rediss+cluster://app:s%40cret@h:7000/0") == (
        [("h", 7000)],
        "app",
        "s@cret",
        True,
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:7000",  # one server
        "redis+cluster://",  # no seed
        "redis+cluster://h",  # no port
        "redis+cluster://h:7000/3",  # a cluster has database 0 only
    ],
)
def test_bad_cluster_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"Redis Cluster|database 0"):
        parse_cluster_url(url)


async def test_the_url_chooses_one_server_or_a_cluster() -> None:
    one, cluster = (
        connect_redis("redis://127.0.0.1:9/0"),
        connect_redis("redis+cluster://127.0.0.1:9"),
    )
    try:
        assert not is_cluster(one)
        assert is_cluster(cluster)
    finally:
        await one.aclose()
        await cluster.aclose()


@pytest.mark.redis
async def test_a_fresh_client_takes_a_burst_of_first_commands(
    redis_url: str, redis_keys: RedisKeys
) -> None:
    # Ten commands at once on a client that has sent nothing yet (a process starting under
    # load). On a cluster, redis-py learns the slots inside the first commands, and some of
    # them failed with AttributeError before `BoundedRedisCluster.ready` (~1 burst in 15: 60
    # bursts fail that way 19 times in 20).
    key = redis_keys.rate_limit("burst", 1)
    for _ in range(60):
        client = connect_redis(redis_url)
        try:
            await asyncio.gather(*(client.incr(key) for _ in range(10)))
        finally:
            await client.aclose()
    check = connect_redis(redis_url)
    try:
        assert await check.get(key) == b"600"
    finally:
        await check.aclose()


def test_hiredis_packing_sends_what_redis_py_would() -> None:
    """The C packer (`hiredis_packing`) gives the bytes redis-py's Python packer gives, for
    every kind of argument the stores send, a command named with its subcommand included."""
    python = Connection(host="127.0.0.1")
    packing = hiredis_packing(Connection)(host="127.0.0.1")
    big = b"x" * 20_000  # beyond redis-py's 6,000-byte buffer cut-off
    commands: list[tuple[Any, ...]] = [
        ("EVALSHA", "ab12", 2, b"k1", "k2", 7, -3, 1.5, 0.1, 1e20, "héllo", b"\x00\xff"),
        ("CONFIG GET", "maxmemory"),
        (b"CLIENT SETNAME", b"coffeebus"),
        ("SET", "k", big),
        ("HMGET", "h", *(f"f{i}" for i in range(3000))),
    ]
    for command in commands:
        assert b"".join(packing.pack_command(*command)) == b"".join(
            python.pack_command(*command)
        ), command[0]
    pipeline = [("SET", "a", 1), ("GET", "a"), ("SET", "b", big)]
    assert b"".join(packing.pack_commands(pipeline)) == b"".join(python.pack_commands(pipeline))


def test_hiredis_packing_refuses_what_redis_py_refuses() -> None:
    packing = hiredis_packing(Connection)(host="127.0.0.1")
    bad: Any
    for bad in (True, None, [1]):
        with pytest.raises(DataError):
            packing.pack_command("SET", "k", bad)


@pytest.mark.redis
async def test_a_script_with_thousands_of_arguments_round_trips(
    redis: RedisClient, redis_keys: RedisKeys
) -> None:
    pool = getattr(redis, "connection_pool", None)
    if pool is not None:  # one server (a cluster's nodes pack in Python)
        assert issubclass(pool.connection_class, Connection)
        assert pool.connection_class.__name__.startswith("HiredisPacking")
    key = redis_keys.rate_limit("packing", 1)
    values = [f"v{i}".encode() for i in range(5000)]
    script = (
        "redis.call('DEL', KEYS[1]); redis.call('RPUSH', KEYS[1], unpack(ARGV)); "
        "return redis.call('LRANGE', KEYS[1], 0, -1)"
    )
    assert await redis.eval(script, 1, key, *values) == values
    await redis.delete(key)
