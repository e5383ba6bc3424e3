"""The `MessageStore` contract, run against the in-memory twin, the real MongoDB server, and
Redis's hot timelines in front of MongoDB (`store.redis.messages`)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from schemas.ids import UserId
from store.memory.messages import MemoryMessageStore
from store.messages import MessageStore, SeqConflictError, StoredMessage
from store.mongo.client import Document
from store.mongo.messages import MongoMessageStore
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.redis.messages import RedisMessageStore
from tests.store.messaging import T0, c2c, conv, group_msg

CONV = conv(1, 2)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("mongo", marks=pytest.mark.mongo),
        pytest.param("hot", marks=[pytest.mark.mongo, pytest.mark.redis]),
    ]
)
def messages(request: pytest.FixtureRequest) -> MessageStore:
    """Each `MessageStore` implementation, empty."""
    if request.param == "memory":
        return MemoryMessageStore()
    db: AsyncDatabase[Document] = request.getfixturevalue("mongo_db")
    if request.param == "mongo":
        return MongoMessageStore(db)
    redis: RedisClient = request.getfixturevalue("redis")
    keys: RedisKeys = request.getfixturevalue("redis_keys")
    return RedisMessageStore(redis, MongoMessageStore(db), keys=keys)


async def test_insert_then_read_back_every_field(messages: MessageStore) -> None:
    msg = c2c(1, 2, 1, data=b"\x00\xffbinary")
    result = await messages.insert(msg)
    assert (result.message, result.duplicate) == (msg, False)
    assert await messages.get_by_client_ids(CONV, [msg.client_msg_id]) == [msg]
    assert await messages.get_by_seqs(CONV, [1]) == [msg]
    assert await messages.latest(CONV) == msg
    assert not msg.revoked


async def test_a_replay_returns_the_original_and_stores_nothing(messages: MessageStore) -> None:
    original = c2c(1, 2, 1, client_msg_id="uuid-1")
    await messages.insert(original)
    # The msg consumer replays its topic: same client_msg_id, a freshly allocated seq.
    for attempt in range(2, 6):
        replay = msgspec.structs.replace(original, seq=attempt * 10, created_ms=T0 + 999)
        result = await messages.insert(replay)
        assert result.duplicate
        assert result.message == original  # the original seq and create time
    assert await messages.history(CONV, 0, 100) == [original]


async def test_bulk_insert_mixes_new_and_replayed(messages: MessageStore) -> None:
    first = [c2c(1, 2, seq) for seq in (1, 2, 3)]
    await messages.insert_many(first)
    batch = [
        c2c(2, 1, 4),
        msgspec.structs.replace(first[1], seq=5),  # replay of seq 2
        c2c(1, 2, 6),
        msgspec.structs.replace(c2c(1, 2, 7), client_msg_id="dup-in-batch"),
        msgspec.structs.replace(c2c(1, 2, 8), client_msg_id="dup-in-batch"),
    ]
    results = await messages.insert_many(batch)
    assert [r.duplicate for r in results] == [False, True, False, False, True]
    assert results[1].message == first[1]
    assert results[4].message.seq == 7
    assert [m.seq for m in await messages.history(CONV, 0, 100)] == [1, 2, 3, 4, 6, 7]


async def test_a_seq_taken_by_another_message_is_a_conflict(messages: MessageStore) -> None:
    await messages.insert(c2c(1, 2, 1, client_msg_id="a"))
    with pytest.raises(SeqConflictError):
        await messages.insert_many([c2c(1, 2, 1, client_msg_id="b"), c2c(1, 2, 2)])
    # The rest of the batch is stored all the same.
    assert [m.client_msg_id for m in await messages.history(CONV, 0, 10)] == ["a", "c-1-2"]
    assert await messages.latest_seqs([CONV]) == {CONV: 2}


async def test_history_paging(messages: MessageStore) -> None:
    # Seqs with gaps, as after an owner change.
    seqs = [1, 2, 3, 7, 8, 20, 21, 22]
    await messages.insert_many([c2c(1 + s % 2, 2 - s % 2, s) for s in seqs])

    async def page(end: int, limit: int) -> list[int]:
        return [m.seq for m in await messages.history(CONV, end, limit)]

    assert await page(0, 3) == [20, 21, 22]  # 0 = from the newest, ascending
    assert await page(20, 3) == [3, 7, 8]  # end is exclusive
    assert await page(3, 10) == [1, 2]
    assert await page(1, 10) == []
    assert await page(0, 100) == seqs
    assert await page(1000, 2) == [21, 22]
    # Walking back page by page visits every message exactly once.
    walked: list[int] = []
    end = 0
    while batch := await page(end, 3):
        walked = batch + walked
        end = batch[0]
    assert walked == seqs
    with pytest.raises(ValueError, match="limit"):
        await messages.history(CONV, 0, 0)


async def test_conversations_are_separate(messages: MessageStore) -> None:
    await messages.insert_many([c2c(1, 2, 1), c2c(1, 3, 1), group_msg(1, 9, 1), group_msg(1, 9, 2)])
    assert [m.seq for m in await messages.history(group_msg(1, 9, 1).conversation, 0, 10)] == [1, 2]
    assert len(await messages.history(CONV, 0, 10)) == 1
    assert await messages.latest(conv(5, 6)) is None
    assert await messages.history(conv(5, 6), 0, 10) == []
    assert await messages.get_by_client_ids(conv(5, 6), ["c-1-1"]) == []


async def test_latest_seqs_are_each_conversations_highest_seq(messages: MessageStore) -> None:
    group = group_msg(1, 9, 1).conversation
    empty = conv(5, 6)
    assert await messages.latest_seqs([CONV, empty]) == {CONV: 0, empty: 0}
    await messages.insert_many([c2c(1, 2, 3), c2c(2, 1, 7), group_msg(1, 9, 4)])
    await messages.insert(c2c(1, 2, 20))  # a gap, as after an owner change
    # A replay comes with a fresh, higher seq and stores nothing: the head stays.
    await messages.insert(msgspec.structs.replace(c2c(1, 2, 3), seq=40))
    assert await messages.latest_seqs([empty, group, CONV, group]) == {
        empty: 0,
        group: 4,
        CONV: 20,
    }
    assert await messages.latest_seqs([]) == {}
    # A revocation moves no seq.
    await messages.mark_revoked(CONV, 20, by=UserId(1), at_ms=T0 + 1)
    assert await messages.latest_seqs([CONV]) == {CONV: 20}


async def test_lookups_by_ids_skip_unknown_and_sort(messages: MessageStore) -> None:
    stored = [c2c(1, 2, s) for s in (5, 3, 9)]
    await messages.insert_many(stored)
    found = await messages.get_by_client_ids(CONV, ["c-1-9", "nope", "c-1-3", "c-1-9"])
    assert [m.seq for m in found] == [3, 9]
    assert [m.seq for m in await messages.get_by_seqs(CONV, [9, 4, 5])] == [5, 9]
    assert await messages.get_by_client_ids(CONV, []) == []
    assert await messages.get_by_seqs(CONV, []) == []


async def test_revoke_is_idempotent_and_first_wins(messages: MessageStore) -> None:
    await messages.insert_many([c2c(1, 2, 1), c2c(1, 2, 2)])
    revoked = await messages.mark_revoked(CONV, 2, by=UserId(1), at_ms=T0 + 50)
    assert revoked is not None
    assert (revoked.revoked, revoked.revoked_by, revoked.revoked_ms) == (True, 1, T0 + 50)
    again = await messages.mark_revoked(CONV, 2, by=UserId(1), at_ms=T0 + 99)
    assert again == revoked
    history = await messages.history(CONV, 0, 10)
    assert [m.revoked for m in history] == [False, True]
    assert (await messages.get_by_client_ids(CONV, ["c-1-2"]))[0].revoked
    assert await messages.mark_revoked(CONV, 77, by=UserId(1), at_ms=T0) is None
    with pytest.raises(ValueError, match="positive"):
        await messages.mark_revoked(CONV, 1, by=UserId(1), at_ms=0)


async def test_concurrent_resends_all_get_the_original(messages: MessageStore) -> None:
    attempts = [c2c(1, 2, seq, client_msg_id="same") for seq in range(1, 9)]
    results = await asyncio.gather(*(messages.insert(m) for m in attempts))
    originals = {r.message for r in results}
    assert len(originals) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert await messages.history(CONV, 0, 10) == list(originals)


def test_stored_message_validation() -> None:
    with pytest.raises(ValueError, match="seq"):
        c2c(1, 2, 0)
    with pytest.raises(ValueError, match="client_msg_id"):
        c2c(1, 2, 1, client_msg_id="x" * 129)


def test_message_is_hashable_and_frozen() -> None:
    msg: StoredMessage = c2c(1, 2, 1)
    assert {msg, c2c(1, 2, 1)} == {msg}
