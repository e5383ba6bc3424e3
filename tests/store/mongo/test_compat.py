"""The server mode (`store.mongo.compat`): chosen right, and each mode's ways of writing.

No MongoDB server can run here, so the ``mongodb`` mode's writes run on FerretDB as far as it
executes them (bulk_write upserts, ``$inc``): what FerretDB v1 lacks is their concurrency
guarantees (and a bulk_write reply it can merge after a write error), which the contract
tests leave to MongoDB and the stub below stands in for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from store.mongo.bulk import update_all, update_op
from store.mongo.client import Document, connect_mongo
from store.mongo.compat import MongoServer, ServerSetting, resolve_server, server_of
from store.mongo.seq import MongoSectionStore


def test_ferretdb_names_itself_in_build_info() -> None:
    assert server_of({"version": "7.0.42", "ferretdbVersion": "v1.24.2"}) is (
        MongoServer.FERRETDB_V1
    )
    assert server_of({"version": "8.0.4", "gitVersion": "bf1b3b3"}) is MongoServer.MONGODB


@pytest.mark.mongo
async def test_auto_detects_the_test_server_as_ferretdb_and_says_so(
    mongo_client: AsyncMongoClient[Document], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="store.mongo.compat"):
        assert await resolve_server(mongo_client, "auto") is MongoServer.FERRETDB_V1
    assert "ferretdb-v1 mode: the server is FerretDB v1." in caplog.text


@pytest.mark.parametrize("setting", ["mongodb", "ferretdb-v1"])
async def test_an_explicit_setting_wins_without_asking_the_server(
    setting: ServerSetting, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 9: asking would fail.
    client: AsyncMongoClient[Document] = connect_mongo(
        "mongodb://127.0.0.1:9", server_selection_timeout=0.2, connect_timeout=0.2
    )
    try:
        with caplog.at_level(logging.INFO, logger="store.mongo.compat"):
            assert await resolve_server(client, setting) is MongoServer(setting)
    finally:
        await client.close()
    assert f"{setting} mode, as [mongo] server says" in caplog.text


@pytest.mark.mongo
async def test_update_all_on_mongodb_is_one_bulk_write(
    mongo_db: AsyncDatabase[Document],
) -> None:
    col = mongo_db["bulk_t"]
    ops = [update_op({"_id": i}, {"$max": {"v": i}}, upsert=True) for i in range(30)]
    await update_all(col, ops, server=MongoServer.MONGODB)
    await update_all(col, ops[:10], server=MongoServer.MONGODB)  # replayed: changes nothing
    await update_all(col, [update_op({"_id": 3}, {"$max": {"v": 99}})], server=MongoServer.MONGODB)
    docs = [d async for d in col.find({}).sort("_id")]
    assert docs == [{"_id": i, "v": 99 if i == 3 else i} for i in range(30)]
    await update_all(col, [], server=MongoServer.MONGODB)


class _Collection:
    """Answers each bulk_write with the write errors given for that round."""

    name = "stub"

    def __init__(self, *rounds: list[dict[str, Any]]) -> None:
        self.rounds = list(rounds)
        self.sent: list[list[UpdateOne]] = []

    async def bulk_write(self, requests: Sequence[UpdateOne], *, ordered: bool) -> None:
        assert not ordered
        self.sent.append(list(requests))
        errors = self.rounds.pop(0) if self.rounds else []
        if errors:
            raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": []})


def _ops(n: int) -> list[Document]:
    return [update_op({"_id": i}, {"$max": {"v": 1}}, upsert=True) for i in range(n)]


async def test_on_mongodb_only_the_upserts_that_lost_a_race_are_sent_again() -> None:
    dup = 11000
    col = _Collection([{"index": 1, "code": dup}, {"index": 3, "code": dup}], [])
    await update_all(col, _ops(5), server=MongoServer.MONGODB)  # type: ignore[arg-type]
    first, again = col.sent
    assert len(first) == 5
    assert again == [UpdateOne({"_id": i}, {"$max": {"v": 1}}, upsert=True) for i in (1, 3)]


async def test_on_mongodb_other_write_errors_and_lasting_duplicates_raise() -> None:
    col = _Collection([{"index": 0, "code": 11000}, {"index": 1, "code": 52}])
    with pytest.raises(BulkWriteError):
        await update_all(col, _ops(2), server=MongoServer.MONGODB)  # type: ignore[arg-type]
    assert len(col.sent) == 1
    lasting = _Collection(*([{"index": 0, "code": 11000}] for _ in range(9)))
    with pytest.raises(BulkWriteError):
        await update_all(lasting, _ops(1), server=MongoServer.MONGODB)  # type: ignore[arg-type]
    assert len(lasting.sent) == 5


@pytest.mark.mongo
async def test_moving_to_mongodb_mode_continues_above_the_claimed_sections(
    mongo_db: AsyncDatabase[Document],
) -> None:
    claimed = MongoSectionStore(mongo_db, server=MongoServer.FERRETDB_V1)
    assert await claimed.reserve("s:1:2", 10) == 10
    assert await claimed.reserve("s:1:2", 5) == 15
    counted = MongoSectionStore(mongo_db, server=MongoServer.MONGODB)
    assert await counted.reserved("s:1:2") == 15
    assert await counted.reserve("s:1:2", 10) == 25
    assert await counted.reserve("s:1:2", 1) == 26
    assert await counted.reserved("s:1:2") == 26
    assert await counted.reserve("g:7", 3) == 3  # never claimed: starts at 0
