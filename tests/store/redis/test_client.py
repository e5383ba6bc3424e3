"""Redis plumbing against the real server."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from store.redis.client import connect_redis, ping
from store.redis.keys import RedisKeys


@pytest.mark.redis
async def test_ping_and_bytes_replies(redis: Redis, redis_keys: RedisKeys) -> None:
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
