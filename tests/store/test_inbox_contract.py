"""The `InboxStore` contract, run against the in-memory twin, the real MongoDB server (both
unread strategies), and Redis's hot inboxes in front of MongoDB (`store.redis.inbox`)."""

from __future__ import annotations

import msgspec
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from schemas.codes import MsgType
from schemas.ids import UserId
from store.inbox import InboxEntry, InboxStore
from store.memory.inbox import MemoryInboxStore
from store.mongo.client import Document
from store.mongo.inbox import MongoInboxStore
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from tests.store.messaging import c2c, conv, group_msg, hot_stores

ALICE, BOB, CAROL = UserId(1), UserId(2), UserId(3)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("mongo", marks=pytest.mark.mongo),
        pytest.param("mongo-count", marks=pytest.mark.mongo),
        pytest.param("hot", marks=[pytest.mark.mongo, pytest.mark.redis]),
    ]
)
def inbox(request: pytest.FixtureRequest) -> InboxStore:
    """Each `InboxStore` implementation (and unread strategy), empty."""
    if request.param == "memory":
        return MemoryInboxStore()
    db: AsyncDatabase[Document] = request.getfixturevalue("mongo_db")
    if request.param == "hot":
        redis: RedisClient = request.getfixturevalue("redis")
        keys: RedisKeys = request.getfixturevalue("redis_keys")
        return hot_stores(redis, keys, db).inbox
    return MongoInboxStore(
        db, unread_strategy="count" if request.param == "mongo-count" else "aggregate"
    )


async def test_append_and_sync_in_inbox_seq_order(inbox: InboxStore) -> None:
    entries = [
        InboxEntry(user_id=BOB, inbox_seq=s, message=c2c(1, 2, s)) for s in (1, 2, 3, 11, 12)
    ]
    assert await inbox.append_many(entries) == 5
    page = await inbox.after(BOB, 0, 3)
    assert (page.entries, page.has_more) == (entries[:3], True)
    page = await inbox.after(BOB, 3, 3)
    assert (page.entries, page.has_more) == (entries[3:], False)
    page = await inbox.after(BOB, 12, 3)
    assert (page.entries, page.has_more) == ([], False)
    page = await inbox.after(BOB, 2, 3)  # exactly `limit` left: no more
    assert (page.entries, page.has_more) == (entries[2:], False)
    assert await inbox.head(BOB) == 12
    assert await inbox.head(ALICE) == 0
    assert (await inbox.after(ALICE, 0, 10)).entries == []
    with pytest.raises(ValueError, match="limit"):
        await inbox.after(BOB, 0, 0)


async def test_replays_with_fresh_inbox_seqs_are_skipped(inbox: InboxStore) -> None:
    msg = group_msg(1, 9, 5)
    entries = [InboxEntry(user_id=UserId(u), inbox_seq=1, message=msg) for u in range(2, 12)]
    assert await inbox.append_many(entries) == 10
    # The fanout group replays the record: same messages, newly allocated inbox seqs.
    for round_no in range(2, 5):
        replay = [
            InboxEntry(user_id=e.user_id, inbox_seq=round_no * 100, message=msg) for e in entries
        ]
        assert await inbox.append_many(replay) == 0
    for entry in entries:
        assert (await inbox.after(entry.user_id, 0, 10)).entries == [entry]
        assert await inbox.head(entry.user_id) == 1


async def test_a_bulk_with_some_replays_stores_the_rest(inbox: InboxStore) -> None:
    first = InboxEntry(user_id=BOB, inbox_seq=1, message=c2c(1, 2, 1))
    await inbox.append_many([first])
    batch = [
        InboxEntry(user_id=BOB, inbox_seq=2, message=c2c(1, 2, 1)),  # replay
        InboxEntry(user_id=BOB, inbox_seq=3, message=c2c(1, 2, 2)),
        InboxEntry(user_id=CAROL, inbox_seq=1, message=c2c(1, 3, 1)),
        InboxEntry(user_id=BOB, inbox_seq=4, message=c2c(1, 2, 2)),  # replay within the bulk
    ]
    assert await inbox.append_many(batch) == 2
    assert [e.inbox_seq for e in (await inbox.after(BOB, 0, 10)).entries] == [1, 3]
    assert await inbox.append_many([]) == 0


async def test_append_new_tells_which_entries_were_new(inbox: InboxStore) -> None:
    await inbox.append_new([InboxEntry(user_id=BOB, inbox_seq=1, message=c2c(1, 2, 1))])
    batch = [
        InboxEntry(user_id=BOB, inbox_seq=2, message=c2c(1, 2, 1)),  # replay
        InboxEntry(user_id=BOB, inbox_seq=3, message=c2c(1, 2, 2)),
        InboxEntry(user_id=CAROL, inbox_seq=1, message=c2c(1, 3, 1)),
        InboxEntry(user_id=BOB, inbox_seq=4, message=c2c(1, 2, 2)),  # replay within the bulk
    ]
    assert await inbox.append_new(batch) == [False, True, True, False]
    assert await inbox.append_new(batch) == [False] * 4
    assert await inbox.append_new([]) == []


async def test_unread_counts_only_others_messages_above_the_read_seq(inbox: InboxStore) -> None:
    ab, ac = conv(1, 2), conv(1, 3)
    # Alice's inbox: her own sends are there too (her other devices sync them).
    entries = [
        InboxEntry(user_id=ALICE, inbox_seq=1, message=c2c(2, 1, 1)),
        InboxEntry(user_id=ALICE, inbox_seq=2, message=c2c(1, 2, 2)),
        InboxEntry(user_id=ALICE, inbox_seq=3, message=c2c(2, 1, 5)),  # a seq gap: 3, 4
        InboxEntry(user_id=ALICE, inbox_seq=9, message=c2c(2, 1, 6)),
        InboxEntry(user_id=ALICE, inbox_seq=10, message=c2c(3, 1, 1)),
        InboxEntry(user_id=BOB, inbox_seq=1, message=c2c(2, 1, 1)),
    ]
    await inbox.append_many(entries)
    assert await inbox.count_unread(ALICE, {ab: 0, ac: 0}) == {ab: 3, ac: 1}
    assert await inbox.count_unread(ALICE, {ab: 1, ac: 1}) == {ab: 2, ac: 0}
    assert await inbox.count_unread(ALICE, {ab: 4}) == {ab: 2}
    assert await inbox.count_unread(ALICE, {ab: 6}) == {ab: 0}
    assert await inbox.count_unread(ALICE, {conv(1, 7): 0}) == {conv(1, 7): 0}
    assert await inbox.count_unread(ALICE, {}) == {}
    assert await inbox.count_unread(CAROL, {ac: 0}) == {ac: 0}


async def test_notifications_and_tips_never_count_as_unread(inbox: InboxStore) -> None:
    """A group with 2 texts and 2 member-change notices has 2 unread; a tip line in a single
    chat has none (store.inbox.counts_as_unread)."""
    group = group_msg(2, 9, 1).conversation
    notice = msgspec.structs.replace(group_msg(2, 9, 2), msg_type=MsgType.NOTIFICATION)
    other = msgspec.structs.replace(group_msg(3, 9, 4), msg_type=MsgType.NOTIFICATION)
    tip = msgspec.structs.replace(c2c(2, 1, 2), msg_type=MsgType.TIPS)
    image = msgspec.structs.replace(c2c(2, 1, 3), msg_type=MsgType.IMAGE)
    messages = [group_msg(2, 9, 1), notice, group_msg(3, 9, 3), other, c2c(2, 1, 1), tip, image]
    await inbox.append_many(
        [InboxEntry(user_id=ALICE, inbox_seq=n, message=m) for n, m in enumerate(messages, 1)]
    )
    ab = conv(1, 2)
    assert await inbox.count_unread(ALICE, {group: 0, ab: 0}) == {group: 2, ab: 2}
    assert await inbox.unread_seqs(ALICE, {group: 0, ab: 0}) == {group: [1, 3], ab: [1, 3]}
    assert await inbox.count_unread(ALICE, {group: 1, ab: 2}) == {group: 1, ab: 1}
