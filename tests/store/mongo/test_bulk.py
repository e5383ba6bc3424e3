"""`store.mongo.bulk` against the real server in ferretdb-v1 mode (the default): duplicate
keys resolved, other errors raised, updates chunked. The mongodb mode: test_compat.py."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, OperationFailure

import store.mongo.compat
from store.mongo.bulk import insert_new, update_all, update_op
from store.mongo.client import Document

pytestmark = pytest.mark.mongo


async def test_insert_new_skips_duplicates_and_inserts_the_rest(
    mongo_db: AsyncDatabase[Document],
) -> None:
    col = mongo_db["bulk_t"]
    assert await insert_new(col, [{"_id": "a"}]) == set()
    skipped = await insert_new(col, [{"_id": "a"}, {"_id": "b"}, {"_id": "a"}, {"_id": "c"}])
    assert skipped == {0, 2}
    assert sorted([d["_id"] async for d in col.find({})]) == ["a", "b", "c"]
    assert await insert_new(col, []) == set()


async def test_insert_new_raises_on_other_errors(mongo_db: AsyncDatabase[Document]) -> None:
    col = mongo_db["bulk_t"]
    # A key starting with "$" is refused by MongoDB and FerretDB alike.
    with pytest.raises(BulkWriteError):
        await insert_new(col, [{"_id": "x", "$bad": 1}])


async def test_update_all_resolves_racing_upserts(mongo_db: AsyncDatabase[Document]) -> None:
    col = mongo_db["bulk_t"]

    # Concurrent first upserts of the same documents: FerretDB answers the losers with
    # duplicate keys (and stops each bulk there); update_all sends them again. (Concurrent
    # *updates* of one document lose writes on FerretDB v1, so every writer writes the same
    # value here: the point is that nothing raises and every document ends up written.)
    async def writer() -> None:
        await update_all(
            col, [update_op({"_id": f"d{d}"}, {"$max": {"v": 1}}, upsert=True) for d in range(5)]
        )

    await asyncio.gather(*(writer() for _ in range(8)))
    docs = [d async for d in col.find({}).sort("_id")]
    assert docs == [{"_id": f"d{d}", "v": 1} for d in range(5)]


async def test_a_lasting_duplicate_key_raises(mongo_db: AsyncDatabase[Document]) -> None:
    col = mongo_db["bulk_t"]
    await col.create_index("k", unique=True, name="bulk_t_k_unique")
    await col.insert_one({"_id": "a", "k": 1})
    with pytest.raises(OperationFailure) as caught:
        await update_all(
            col,
            [
                update_op({"_id": "b"}, {"$set": {"k": 2}}, upsert=True),
                update_op({"_id": "c"}, {"$set": {"k": 1}}, upsert=True),  # taken for good
            ],
        )
    assert caught.value.code == 11000
    assert await col.find_one({"_id": "b"}) == {"_id": "b", "k": 2}


async def test_update_all_raises_on_other_errors(mongo_db: AsyncDatabase[Document]) -> None:
    col = mongo_db["bulk_t"]
    await col.insert_one({"_id": "s", "v": "text"})
    with pytest.raises(OperationFailure):
        await update_all(col, [update_op({"_id": "s"}, {"$inc": {"v": 1}})])


async def test_update_all_chunks_large_batches(
    mongo_db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    col = mongo_db["bulk_t"]
    # Small chunks keep this quick on FerretDB, where each modifying statement costs ms.
    monkeypatch.setattr(store.mongo.compat, "MAX_OPS_PER_COMMAND", 7)
    ops = [update_op({"_id": i}, {"$max": {"v": i}}, upsert=True) for i in range(30)]
    await update_all(col, ops)
    assert await col.count_documents({}) == 30
    await update_all(col, [])


async def test_concurrent_large_updates_of_one_database_all_complete(
    mongo_db: AsyncDatabase[Document],
) -> None:
    # FerretDB v1 holds a connection of its 100 per statement that matched a document until
    # the update command ends: six concurrent commands of 64 such statements used to wait
    # for each other forever.
    col = mongo_db["bulk_t"]
    ids = [f"{b}:{i}" for b in range(6) for i in range(64)]
    await col.insert_many([{"_id": i, "v": 0} for i in ids])
    batches = [
        [update_op({"_id": f"{b}:{i}"}, {"$max": {"v": i + 1}}) for i in range(64)]
        for b in range(6)
    ]
    async with asyncio.timeout(60):
        await asyncio.gather(*(update_all(col, ops) for ops in batches))
    assert await col.count_documents({"v": {"$gt": 0}}) == len(ids)
