"""What only the MongoDB user store has: its document layout and its Redis cache."""

from __future__ import annotations

import msgspec
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from store.ids import UserId
from store.mongo.client import Document
from store.mongo.collections import Collection
from store.mongo.users import MongoUserStore
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.users import TokenStatus, User, UserImport

pytestmark = [pytest.mark.mongo, pytest.mark.redis]

ALICE = UserId(1001)


@pytest.fixture
def store(
    mongo_db: AsyncDatabase[Document], redis: RedisClient, redis_keys: RedisKeys
) -> MongoUserStore:
    return MongoUserStore(mongo_db, redis, keys=redis_keys, cache_ttl=30)


async def test_documents_without_a_name_get_a_reserved_name_key(
    store: MongoUserStore, mongo_db: AsyncDatabase[Document]
) -> None:
    await store.upsert(UserImport(user_id=ALICE))
    await store.upsert(UserImport(user_id=UserId(1002), user_name="bob"))
    docs = {d["_id"]: d async for d in mongo_db[Collection.USERS].find({})}
    assert docs[ALICE]["name_key"] == "#1001"
    assert "user_name" not in docs[ALICE]
    assert "password_hash" not in docs[ALICE]
    assert docs[1002]["name_key"] == "bob"
    assert docs[ALICE]["rev"] == 1


async def test_token_checks_are_served_by_the_cache(
    store: MongoUserStore,
    mongo_db: AsyncDatabase[Document],
    redis: RedisClient,
    redis_keys: RedisKeys,
) -> None:
    await store.upsert(UserImport(user_id=ALICE, token="t1", password="pw"))
    # A write behind the store's back (no cache update) is not seen while the entry lives:
    # proof that the check did not go to MongoDB.
    await mongo_db[Collection.USERS].update_one({"_id": ALICE}, {"$set": {"token": "t2"}})
    assert (await store.check_token(ALICE, "t1")).ok
    uncached = MongoUserStore(mongo_db, None)
    assert (await uncached.check_token(ALICE, "t2")).ok

    key = redis_keys.user_cache(ALICE)
    assert 0 < await redis.pttl(key) <= 30_000
    data = await redis.hget(key, "user")
    assert isinstance(data, bytes)
    assert b"scrypt" not in data  # the password hash never enters Redis
    assert msgspec.msgpack.decode(data, type=User).password_hash is None


async def test_unknown_users_are_cached_as_such(
    store: MongoUserStore, redis: RedisClient, redis_keys: RedisKeys
) -> None:
    assert (await store.check_token(ALICE, "t")).status is TokenStatus.UNKNOWN_USER
    assert await redis.hgetall(redis_keys.user_cache(ALICE)) == {b"rev": b"0", b"user": b""}


async def test_a_slow_cache_fill_cannot_bring_back_a_rotated_token(
    store: MongoUserStore, mongo_db: AsyncDatabase[Document]
) -> None:
    # A reader that missed the cache, read revision 1 and stalled, then writes it into the
    # cache after a rotation already stored revision 2: the old token must stay dead.
    before = await store.upsert(UserImport(user_id=ALICE, token="old"))
    doc = await mongo_db[Collection.USERS].find_one({"_id": ALICE})
    assert doc is not None
    new = await store.rotate_token(ALICE)

    await store._cache(ALICE, doc["rev"], before)

    assert (await store.check_token(ALICE, "old")).status is TokenStatus.BAD_TOKEN
    assert (await store.check_token(ALICE, new)).ok
