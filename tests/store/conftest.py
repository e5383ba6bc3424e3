"""Fixtures of the store tests: isolated real services, and each store under test.

Every test that touches a real service gets its own Redis key namespace and its own MongoDB
database, both removed afterwards, so tests never see each other's data and can run against
a shared server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from store.clock import ManualClock
from store.mongo.client import Document, connect_mongo, ensure_indexes
from store.redis.client import RedisClient, connect_redis
from store.redis.keys import RedisKeys


@pytest.fixture
def clock() -> ManualClock:
    """A clock the test moves by hand."""
    return ManualClock()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    """A client of the real Redis."""
    client = connect_redis(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def redis_keys(redis: RedisClient) -> AsyncIterator[RedisKeys]:
    """A fresh key namespace on the real Redis, deleted after the test."""
    keys = RedisKeys(namespace=f"cbtest:{uuid.uuid4().hex[:12]}:")
    yield keys
    leftovers = [key async for key in redis.scan_iter(match=keys.pattern(), count=1000)]
    if leftovers:
        await redis.delete(*leftovers)


@pytest.fixture
async def mongo_client(mongo_url: str) -> AsyncIterator[AsyncMongoClient[Document]]:
    """A client of the real MongoDB wire-protocol server."""
    client = connect_mongo(mongo_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def mongo_db(
    mongo_client: AsyncMongoClient[Document],
) -> AsyncIterator[AsyncDatabase[Document]]:
    """A fresh database with the declared indexes, dropped after the test."""
    name = f"cbtest_{uuid.uuid4().hex[:12]}"
    db = mongo_client[name]
    await ensure_indexes(db)
    try:
        yield db
    finally:
        await mongo_client.drop_database(name)
