"""Redis's hot timelines with MongoDB behind them (`store.redis.messages`, and the stores
over `store.redis.user_state`): what the contract suites cannot show — reads that cross the
floor the projection's trims raise, revocations the store does not have yet, dedupe of
what left Redis, and the repair of a user whose hot state is gone.

"Projecting" here is what the projection group does (`consumers.projection`): write the
entries into the MongoDB stores, then trim.
"""

from __future__ import annotations

import msgspec
import pytest

from schemas.ids import ConversationId, UserId
from store.inbox import InboxEntry, InboxPage
from store.messages import StoredMessage
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.redis.user_state import UserKeys
from store.sessions import ReadMark, SessionTouch
from tests.store.messaging import T0, HotStores, c2c, conv

pytestmark = [pytest.mark.mongo, pytest.mark.redis]

ALICE, BOB = UserId(1), UserId(2)
AB = conv(1, 2)


async def project_messages(hot: HotStores, messages: list[StoredMessage]) -> int:
    """Write `messages` into MongoDB and trim Redis up to the newest of them."""
    await hot.cold_messages.insert_many(messages)
    return await hot.messages.trim({messages[0].conversation: max(m.seq for m in messages)})


async def test_reads_cross_the_floor_between_redis_and_the_store(hot: HotStores) -> None:
    msgs = [c2c(1, 2, s) for s in range(1, 13)]
    await hot.messages.insert_many(msgs)
    assert await project_messages(hot, msgs) == 7  # all but the newest 5 leave Redis
    assert await hot.messages.history(AB, 0, 20) == msgs
    assert await hot.messages.history(AB, 10, 4) == msgs[5:9]
    assert await hot.messages.history(AB, 5, 20) == msgs[:4]
    assert await hot.messages.get_by_seqs(AB, [2, 7, 11, 99]) == [msgs[1], msgs[6], msgs[10]]
    got = await hot.messages.get_by_client_ids(AB, [msgs[0].client_msg_id, "nope"])
    assert got == [msgs[0]]
    assert await hot.messages.latest(AB) == msgs[-1]
    assert await hot.messages.latest_seqs([AB]) == {AB: 12}


async def test_redis_keeps_what_the_store_does_not_have(hot: HotStores) -> None:
    msgs = [c2c(1, 2, s) for s in range(1, 13)]
    await hot.messages.insert_many(msgs)
    # The projection wrote only the first 4: only those may leave Redis.
    assert await project_messages(hot, msgs[:4]) == 4
    assert await hot.messages.history(AB, 0, 20) == msgs
    assert await hot.cold_messages.history(AB, 0, 20) == msgs[:4]
    # Nothing is trimmed while the projection writes nothing new.
    assert await hot.messages.trim({AB: 4}) == 0


async def test_a_revocation_shows_before_the_store_has_it(hot: HotStores) -> None:
    msgs = [c2c(1, 2, s) for s in range(1, 13)]
    await hot.messages.insert_many(msgs)
    await project_messages(hot, msgs)
    for seq in (2, 11):  # one only in the store now, one in Redis
        revoked = await hot.messages.mark_revoked(AB, seq, by=ALICE, at_ms=T0 + 500)
        assert revoked is not None
        assert revoked.revoked
    history = await hot.messages.history(AB, 0, 20)
    assert [m.seq for m in history if m.revoked] == [2, 11]
    assert not (await hot.cold_messages.get_by_seqs(AB, [2]))[0].revoked
    # The first revocation wins.
    again = await hot.messages.mark_revoked(AB, 2, by=BOB, at_ms=T0 + 900)
    assert again is not None
    assert (again.revoked_by, again.revoked_ms) == (ALICE, T0 + 500)
    assert await hot.messages.mark_revoked(AB, 77, by=ALICE, at_ms=T0) is None


async def test_a_resend_gets_its_original_back_after_it_left_redis(hot: HotStores) -> None:
    msgs = [c2c(1, 2, s) for s in range(1, 13)]
    await hot.messages.insert_many(msgs)
    await project_messages(hot, msgs)
    resend = msgspec.structs.replace(msgs[0], seq=1001, created_ms=T0 + 9999)
    [result] = await hot.messages.insert_many([resend])
    assert (result.message, result.duplicate) == (msgs[0], True)
    # And while it is still in Redis.
    [result] = await hot.messages.insert_many([msgspec.structs.replace(msgs[-1], seq=1002)])
    assert (result.message, result.duplicate) == (msgs[-1], True)
    assert await hot.messages.latest_seqs([AB]) == {AB: 12}


async def test_heads_of_conversations_only_the_store_knows(hot: HotStores) -> None:
    old = ConversationId("s:7:8")
    await hot.cold_messages.insert_many([c2c(7, 8, 3)])
    assert await hot.messages.latest_seqs([old, conv(5, 6)]) == {old: 3, conv(5, 6): 0}
    # Cached now: the store is not asked again (its answer would be the same anyway).
    await hot.cold_messages.insert_many([c2c(7, 8, 4)])
    assert await hot.messages.latest_seqs([old]) == {old: 3}
    # A write through Redis moves it on.
    await hot.messages.insert_many([c2c(7, 8, 5)])
    assert await hot.messages.latest_seqs([old]) == {old: 5}


def entry(user: UserId, inbox_seq: int, msg: StoredMessage) -> InboxEntry:
    return InboxEntry(user_id=user, inbox_seq=inbox_seq, message=msg)


async def test_sync_crosses_the_inbox_floor_and_trimmed_entries_stay_deduped(
    hot: HotStores,
) -> None:
    msgs = [c2c(2, 1, s) for s in range(1, 11)]
    entries = [entry(ALICE, 10 * s, m) for s, m in enumerate(msgs, start=1)]
    assert await hot.inbox.append(entries) == [e.inbox_seq for e in entries]
    await hot.messages.trim({AB: 0})  # nothing leaves the timeline
    await hot.cold_inbox.append_many(entries)
    assert await hot.inbox.hot.trim({ALICE: 100}) == 7
    page = await hot.inbox.after(ALICE, 0, 100)
    assert (page.entries, page.has_more) == (entries, False)
    page = await hot.inbox.after(ALICE, 50, 3)
    assert (page.entries, page.has_more) == (entries[5:8], True)
    page = await hot.inbox.after(ALICE, 75, 100)
    assert page.entries == entries[7:]
    assert await hot.inbox.head(ALICE) == 100
    # A replay of entries that left Redis, and of one still there, appends nothing.
    replay = [entry(ALICE, 500, msgs[1]), entry(ALICE, 501, msgs[9])]
    assert await hot.inbox.append(replay) == [0, -100]
    assert await hot.inbox.head(ALICE) == 100


async def test_a_user_whose_hot_state_is_gone_is_repaired_from_the_store(
    hot: HotStores, redis: RedisClient, redis_keys: RedisKeys
) -> None:
    # Alice's history, as the projection wrote it: 4 messages from Bob, she read 1.
    old = [c2c(2, 1, s) for s in range(1, 5)]
    old_entries = [entry(ALICE, s, m) for s, m in enumerate(old, start=1)]
    await hot.cold_messages.insert_many(old)
    await hot.cold_inbox.append_many(old_entries)
    await hot.cold_sessions.touch_many([SessionTouch(ALICE, m) for m in old])
    await hot.cold_sessions.mark_read_many([ReadMark(ALICE, AB, 1)])
    # Her hot state expired; then a new message arrives (hot only: not projected yet).
    assert await redis.exists(*UserKeys(redis_keys).all(ALICE)) == 0
    new = c2c(2, 1, 9)
    await hot.inbox.append([entry(ALICE, 20, new)])
    await hot.sessions.touch_many([SessionTouch(ALICE, new)])
    [session] = await hot.sessions.recent(ALICE, 0, 10)
    assert (session.last, session.read_seq, session.unread) == (new, 1, 4)
    # Complete now: reads and further messages keep the counts exact.
    await hot.sessions.mark_read(ALICE, AB, 3)
    session_now = await hot.sessions.get(ALICE, AB)
    assert session_now is not None
    assert (session_now.read_seq, session_now.unread) == (3, 2)
    assert await hot.sessions.read_seq(ALICE, AB) == 3
    # Her inbox's floor is fresh: below it, the store answers once the projection wrote the
    # new entry (and so everything before it).
    assert await hot.inbox.after(ALICE, 0, 10) == InboxPage([], has_more=True)
    await hot.cold_inbox.append_many([entry(ALICE, 20, new)])
    await hot.inbox.hot.trim({ALICE: 20})
    page = await hot.inbox.after(ALICE, 0, 10)
    assert [e.message.seq for e in page.entries] == [1, 2, 3, 4, 9]


async def test_read_seqs_of_users_not_yet_complete_come_from_both_sides(
    hot: HotStores,
) -> None:
    group = ConversationId("g:5")
    await hot.cold_sessions.mark_read_many([ReadMark(ALICE, group, 7), ReadMark(BOB, group, 2)])
    await hot.sessions.mark_read_many([ReadMark(BOB, group, 4)])
    reads = await hot.sessions.read_seqs_of(group, [ALICE, BOB, UserId(3)])
    assert reads == {ALICE: 7, BOB: 4, UserId(3): 0}
    assert await hot.sessions.read_counts(group, [ALICE, BOB, UserId(3)], [3, 5]) == {3: 2, 5: 1}


async def test_a_user_redis_knows_nothing_of_is_answered_by_the_store_until_an_entry(
    hot: HotStores, redis: RedisClient, redis_keys: RedisKeys
) -> None:
    old = [entry(ALICE, s, c2c(2, 1, s)) for s in range(1, 4)]
    await hot.cold_messages.insert_many([e.message for e in old])
    await hot.cold_inbox.append_many(old)
    asked: list[int] = []
    cold_after = hot.cold_inbox.after

    async def counted(user_id: UserId, after_seq: int, limit: int) -> InboxPage:
        asked.append(after_seq)
        return await cold_after(user_id, after_seq, limit)

    hot.inbox.hot.cold.after = counted  # type: ignore[method-assign]
    page = await hot.inbox.after(ALICE, 0, 10)
    assert (page.entries, asked) == (old, [0])
    assert await hot.inbox.head(ALICE) == 3
    # No floor from the store's head: its keys may be gone with entries the projection
    # has not written yet (a Redis that lost its data), which the store must answer later.
    assert await hot.inbox.after(ALICE, 3, 10) == InboxPage([], has_more=False)
    assert asked == [0, 3]
    new = entry(ALICE, 4, c2c(2, 1, 9))
    await hot.inbox.append([new])  # a writer sets the floor: Redis's part begins here
    assert (await hot.inbox.after(ALICE, 3, 10)).entries == [new]
    assert asked == [0, 3]


async def test_after_redis_lost_its_data_reads_are_right_once_the_projection_caught_up(
    hot: HotStores,
) -> None:
    """docs/reliability.md, "Redis without persistence": what Redis lost is below the floors
    the writers set when they create its keys again, and the store answers for it once the
    projection has written it; a device syncing meanwhile is not moved past it."""
    msgs = [c2c(2, 1, s) for s in range(1, 8)]
    entries = [entry(ALICE, s, m) for s, m in enumerate(msgs, start=1)]
    # Projected before the loss: 1-2. Logged, not projected yet, when Redis lost them: 3-6.
    await hot.cold_messages.insert_many(msgs[:2])
    await hot.cold_inbox.append_many(entries[:2])
    # No hot entries: the store's part, as far as it goes; later entries come after it.
    assert (await hot.inbox.after(ALICE, 0, 10)).entries == entries[:2]
    assert await hot.inbox.head(ALICE) == 2
    assert await hot.messages.history(AB, 0, 20) == msgs[:2]
    await hot.cold_messages.insert_many(msgs[2:4])  # the projection goes on
    await hot.cold_inbox.append_many(entries[2:4])
    assert (await hot.inbox.after(ALICE, 2, 10)).entries == entries[2:4]
    # The first message after the loss: Redis's part of both timelines begins there. A device
    # that has entry 4 gets nothing until the store has 5-6: a page of 7 would skip them.
    await hot.inbox.append([entries[6]])
    assert await hot.inbox.after(ALICE, 4, 10) == InboxPage([], has_more=True)
    assert (await hot.inbox.after(ALICE, 6, 10)).entries == [entries[6]]
    await hot.cold_messages.insert_many(msgs[4:])
    await hot.cold_inbox.append_many(entries[4:])
    await hot.inbox.hot.trim({ALICE: 7})
    page = await hot.inbox.after(ALICE, 4, 10)
    assert (page.entries, page.has_more) == (entries[4:], False)
    page = await hot.inbox.after(ALICE, 0, 10)
    assert (page.entries, page.has_more) == (entries, False)
    assert await hot.messages.history(AB, 0, 20) == msgs
    assert await hot.messages.get_by_seqs(AB, range(1, 8)) == msgs
    assert await hot.inbox.head(ALICE) == 7


async def test_an_entry_whose_message_redis_lost_ends_the_sync_page_until_it_is_written(
    hot: HotStores,
) -> None:
    # Message 1 was logged, not projected, when Redis lost it; message 2 was accepted after
    # the loss (the conversation's floor is 2 now); the fanout group, behind the msg group,
    # appends both to Alice's inbox after the loss.
    m1, m2 = c2c(2, 1, 1), c2c(2, 1, 2)
    await hot.messages.insert_many([m2])
    both = [entry(ALICE, 1, m1), entry(ALICE, 2, m2)]
    await hot.inbox.hot.append(both)
    # Nothing is skipped: the page ends before the entry it cannot read yet, with has_more.
    assert await hot.inbox.after(ALICE, 0, 10) == InboxPage([], has_more=True)
    await hot.cold_messages.insert_many([m1])  # the projection catches up
    assert await hot.inbox.after(ALICE, 0, 10) == InboxPage(both, has_more=False)
