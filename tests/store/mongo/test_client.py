"""MongoDB plumbing against the real server: indexes, database choice, readiness."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, ServerSelectionTimeoutError

from store.errors import IndexConflictError
from store.mongo.client import (
    DEFAULT_DATABASE,
    Document,
    connect_mongo,
    database,
    ensure_indexes,
    ping,
)
from store.mongo.collections import INDEXES, USERS_NAME_KEY_INDEX, Collection

pytestmark = pytest.mark.mongo


async def test_ensure_indexes_creates_every_declared_index_once(
    mongo_db: AsyncDatabase[Document],
) -> None:
    # The fixture ran it once; the next start creates nothing and does not fail.
    assert await ensure_indexes(mongo_db) == []
    for collection, specs in INDEXES.items():
        info = await mongo_db[collection].index_information()
        for spec in specs:
            assert [tuple(k) for k in info[spec.name]["key"]] == list(spec.keys)
            assert info[spec.name].get("unique", False) is spec.unique
    users = await mongo_db[Collection.USERS].index_information()
    assert set(users) == {"_id_", USERS_NAME_KEY_INDEX.name}


async def test_ensure_indexes_adds_only_what_is_missing(
    mongo_client: AsyncMongoClient[Document],
) -> None:
    name = f"cbtest_{uuid.uuid4().hex[:12]}"
    db = mongo_client[name]
    try:
        await ensure_indexes(db, {Collection.USERS: (USERS_NAME_KEY_INDEX,)})
        created = await ensure_indexes(db)
        assert USERS_NAME_KEY_INDEX.name not in created
        expected = {spec.name for specs in INDEXES.values() for spec in specs}
        assert set(created) == expected - {USERS_NAME_KEY_INDEX.name}
    finally:
        await mongo_client.drop_database(name)


async def test_two_processes_starting_at_once_both_end_with_every_index(mongo_url: str) -> None:
    """A gate and the API starting together on a new database both create its indexes; on
    FerretDB v1 the one asking second for indexes the other just made had its connection
    dropped, and its process exited ("MongoDB did not answer"). Several fresh databases, two
    clients each (two processes' worth), all at once."""
    clients = [connect_mongo(mongo_url) for _ in range(2)]
    names = [f"cbtest_{uuid.uuid4().hex[:12]}" for _ in range(4)]
    try:
        for name in names:
            await asyncio.gather(*(ensure_indexes(c[name]) for c in clients))
            info = await clients[0][name][Collection.USERS].index_information()
            assert USERS_NAME_KEY_INDEX.name in info
            assert await ensure_indexes(clients[1][name]) == []
    finally:
        for name in names:
            await clients[0].drop_database(name)
        for client in clients:
            await client.close()


async def test_an_index_redefined_under_the_same_name_stops_the_start(
    mongo_client: AsyncMongoClient[Document],
) -> None:
    name = f"cbtest_{uuid.uuid4().hex[:12]}"
    db = mongo_client[name]
    try:
        # An older definition: the same name without uniqueness.
        await db[Collection.USERS].create_index(
            [("name_key", 1)], name=USERS_NAME_KEY_INDEX.name, unique=False
        )
        with pytest.raises(IndexConflictError, match=USERS_NAME_KEY_INDEX.name):
            await ensure_indexes(db)
    finally:
        await mongo_client.drop_database(name)


async def test_the_unique_index_is_enforced(mongo_db: AsyncDatabase[Document]) -> None:
    users = mongo_db[Collection.USERS]
    await users.insert_one({"_id": 1, "name_key": "alice"})
    with pytest.raises(DuplicateKeyError):
        await users.insert_one({"_id": 2, "name_key": "alice"})


async def test_ping(mongo_client: AsyncMongoClient[Document]) -> None:
    await ping(mongo_client)


async def test_ping_fails_fast_without_a_server() -> None:
    # Port 9 (discard) has no MongoDB on loopback.
    client = connect_mongo("mongodb://127.0.0.1:9", server_selection_timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(ServerSelectionTimeoutError):
            await ping(client)
    finally:
        await client.close()
    assert time.monotonic() - started < 5


async def test_database_from_argument_url_or_default() -> None:
    named = connect_mongo("mongodb://127.0.0.1:27017/fromurl")
    bare = connect_mongo("mongodb://127.0.0.1:27017")
    try:
        assert database(named).name == "fromurl"
        assert database(named, "explicit").name == "explicit"
        assert database(bare).name == DEFAULT_DATABASE
    finally:
        await named.close()
        await bare.close()
