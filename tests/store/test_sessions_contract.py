"""The `SessionStore` contract, run against the in-memory twin and the real MongoDB server.

Besides the plain contract, one scenario proves the invariants of DESIGN.md for sessions:
whatever order fan-out writes (inbox appends + last-message touches) and read acks land in,
the last message is the newest, the read seq the highest, and unread counts exact across
seq gaps. Hypothesis drives it on the memory twin; a few random interleavings of the same
scenario run on the real server, the fan-out stream and the ack stream concurrently (as the
fanout and ack groups do), each stream in its own shuffled order.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from schemas.codes import MsgType, SessionType
from schemas.ids import ConversationId, UserId
from store.clock import ManualClock
from store.inbox import InboxEntry, InboxStore, counts_as_unread
from store.memory.inbox import MemoryInboxStore
from store.memory.sessions import MemorySessionStore
from store.messages import StoredMessage
from store.mongo.client import Document
from store.mongo.compat import MongoServer
from store.mongo.inbox import MongoInboxStore
from store.mongo.sessions import MongoSessionStore
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.sessions import ReadMark, SessionStore, SessionTouch
from tests.store.messaging import T0, c2c, conv, group_msg, hot_stores

ALICE, BOB, CAROL = UserId(1), UserId(2), UserId(3)
GROUP = 9
GROUP_CONV = group_msg(1, GROUP, 1).conversation


@dataclass
class Stores:
    inbox: InboxStore
    sessions: SessionStore


def memory_stores(clock: ManualClock) -> Stores:
    inbox = MemoryInboxStore()
    return Stores(inbox, MemorySessionStore(inbox, clock=clock))


@pytest.fixture(
    params=[
        "memory",
        pytest.param(MongoServer.FERRETDB_V1, marks=pytest.mark.mongo),
        pytest.param(MongoServer.MONGODB, marks=pytest.mark.mongo),
        pytest.param("hot", marks=[pytest.mark.mongo, pytest.mark.redis]),
    ]
)
def stores(request: pytest.FixtureRequest, clock: ManualClock) -> Stores:
    """Each implementation: an inbox and the sessions deriving unread counts from it (on
    MongoDB in each server mode), or, hot, keeping them as the inbox is appended to and
    read."""
    if request.param == "memory":
        return memory_stores(clock)
    db: AsyncDatabase[Document] = request.getfixturevalue("mongo_db")
    if request.param == "hot":
        hot = hot_stores(
            request.getfixturevalue("redis"), request.getfixturevalue("redis_keys"), db, clock=clock
        )
        return Stores(hot.inbox, hot.sessions)
    inbox = MongoInboxStore(db)
    return Stores(inbox, MongoSessionStore(db, inbox, clock=clock, server=request.param))


async def deliver(stores: Stores, user: UserId, inbox_seq: int, msg: StoredMessage) -> None:
    """What the fanout group does for one recipient: inbox append, then session touch."""
    await stores.inbox.append_many([InboxEntry(user_id=user, inbox_seq=inbox_seq, message=msg)])
    await stores.sessions.touch_many([SessionTouch(user, msg)])


async def test_last_message_moves_forward_only(stores: Stores) -> None:
    sessions = stores.sessions
    ab = conv(1, 2)
    msgs = {s: c2c(2, 1, s) for s in (3, 1, 7, 5)}
    for msg in msgs.values():  # out of order
        await sessions.touch_many([SessionTouch(ALICE, msg)])
    got = await sessions.get(ALICE, ab)
    assert got is not None
    assert got.last == msgs[7]
    assert (got.session_type, got.peer_id) == (SessionType.SINGLE, 2)
    assert got.updated_ms == T0 + 7
    # Replays of old and current touches change nothing.
    await sessions.touch_many([SessionTouch(ALICE, msgs[3]), SessionTouch(ALICE, msgs[7])] * 3)
    assert await sessions.get(ALICE, ab) == got
    # Several touches of one session in one bulk, newest in the middle.
    newer = [c2c(1, 2, 9), c2c(2, 1, 12), c2c(1, 2, 10)]
    await sessions.touch_many([SessionTouch(ALICE, m) for m in newer])
    got = await sessions.get(ALICE, ab)
    assert got is not None
    assert got.last == newer[1]
    # The session's time is the latest message time, even when that is not the newest
    # message's (clocks of successive owners may disagree).
    late_clock = msgspec.structs.replace(c2c(2, 1, 11), created_ms=T0 + 99)
    await sessions.touch_many([SessionTouch(ALICE, c2c(1, 2, 13)), SessionTouch(ALICE, late_clock)])
    got = await sessions.get(ALICE, ab)
    assert got is not None
    assert (got.last, got.updated_ms) == (c2c(1, 2, 13), T0 + 99)


async def test_read_seq_never_goes_back(stores: Stores, clock: ManualClock) -> None:
    sessions = stores.sessions
    ab = conv(1, 2)
    assert await sessions.read_seq(ALICE, ab) == 0
    await sessions.mark_read(ALICE, ab, 5)
    await sessions.mark_read(ALICE, ab, 3)
    await sessions.mark_read_many(
        [ReadMark(ALICE, ab, 4), ReadMark(ALICE, ab, 8), ReadMark(ALICE, ab, 6)]
    )
    assert await sessions.read_seq(ALICE, ab) == 8
    assert await sessions.read_seq(BOB, ab) == 0
    # As her peers are shown it (history's "read"): the same, once she read.
    assert await sessions.peer_read_seq(ALICE, ab) == 8
    assert await sessions.peer_read_seq(BOB, ab) == 0
    # A read mark alone makes no listed session (there is no message yet) ...
    assert await sessions.recent(ALICE, 0, 10) == []
    # ... but `get` shows it.
    got = await sessions.get(ALICE, ab)
    assert got is not None
    assert (got.last, got.read_seq, got.updated_ms) == (None, 8, clock.now_ms())
    assert await sessions.get(ALICE, conv(1, 5)) is None


async def test_unread_is_exact_across_gaps_and_own_messages(stores: Stores) -> None:
    ab = conv(1, 2)
    # Bob → Alice at 1, 2; Alice → Bob at 3; a gap (owner change); Bob → Alice at 1001, 1002.
    for inbox_seq, msg in enumerate(
        [c2c(2, 1, 1), c2c(2, 1, 2), c2c(1, 2, 3), c2c(2, 1, 1001), c2c(2, 1, 1002)], start=1
    ):
        await deliver(stores, ALICE, inbox_seq, msg)
        await deliver(stores, BOB, inbox_seq, msg)
    [alice] = await stores.sessions.recent(ALICE, 0, 10)
    [bob] = await stores.sessions.recent(BOB, 0, 10)
    assert (alice.unread, bob.unread) == (4, 1)
    assert alice.last == bob.last == c2c(2, 1, 1002)
    assert (alice.peer_id, bob.peer_id) == (2, 1)
    await stores.sessions.mark_read(ALICE, ab, 2)
    [alice] = await stores.sessions.recent(ALICE, 0, 10)
    assert alice.unread == 2
    await stores.sessions.mark_read(ALICE, ab, 1001)
    got = await stores.sessions.get(ALICE, ab)
    assert got is not None
    assert got.unread == 1
    await stores.sessions.mark_read(ALICE, ab, 1002)
    assert (await stores.sessions.recent(ALICE, 0, 10))[0].unread == 0


async def test_recent_lists_newest_first_and_filters_by_update_time(
    stores: Stores, clock: ManualClock
) -> None:
    sessions = stores.sessions
    # Three conversations touched at T0+1, T0+2, T0+3 (message create times).
    for seq, peer in ((1, 2), (2, 3), (3, 4)):
        msg = c2c(peer, 1, seq)
        await deliver(stores, ALICE, seq, msg)
    listed = await sessions.recent(ALICE, 0, 10)
    assert [s.peer_id for s in listed] == [4, 3, 2]
    assert [s.peer_id for s in await sessions.recent(ALICE, 0, 2)] == [4, 3]
    assert [s.peer_id for s in await sessions.recent(ALICE, T0 + 1, 10)] == [4, 3]
    assert await sessions.recent(ALICE, T0 + 3, 10) == []
    # A read on another device changes a session: it comes first and shows in the delta.
    clock.advance(1)
    await sessions.mark_read(ALICE, conv(1, 2), 1)
    listed = await sessions.recent(ALICE, T0 + 3, 10)
    assert [(s.peer_id, s.unread, s.updated_ms) for s in listed] == [(2, 0, clock.now_ms())]
    assert [s.peer_id for s in await sessions.recent(ALICE, 0, 1)] == [2]
    assert [s.peer_id for s in await sessions.recent(ALICE, 0, 10)] == [2, 4, 3]
    with pytest.raises(ValueError, match="limit"):
        await sessions.recent(ALICE, 0, 0)


async def test_group_sessions_and_read_counts(stores: Stores) -> None:
    members = [UserId(u) for u in range(1, 6)]
    for seq in (1, 2, 3, 10):
        msg = group_msg(1, GROUP, seq)
        for inbox_seq, member in enumerate(members, start=seq * 10):
            await deliver(stores, member, inbox_seq, msg)
    session = await stores.sessions.get(BOB, GROUP_CONV)
    assert session is not None
    assert (session.session_type, session.peer_id, session.unread) == (SessionType.GROUP, GROUP, 4)
    alice = await stores.sessions.get(ALICE, GROUP_CONV)
    assert alice is not None
    assert alice.unread == 0  # all her own
    await stores.sessions.mark_read_many(
        [
            ReadMark(BOB, GROUP_CONV, 3),
            ReadMark(CAROL, GROUP_CONV, 10),
            ReadMark(UserId(4), GROUP_CONV, 1),
        ]
    )
    # A former member's read does not count.
    await stores.sessions.mark_read(UserId(77), GROUP_CONV, 10)
    counts = await stores.sessions.read_counts(GROUP_CONV, members, [1, 2, 3, 10, 11])
    assert counts == {1: 3, 2: 2, 3: 2, 10: 1, 11: 0}
    assert await stores.sessions.read_counts(GROUP_CONV, [], [1]) == {1: 0}
    assert await stores.sessions.read_counts(GROUP_CONV, members, []) == {}


async def test_group_notifications_do_not_count_as_unread(stores: Stores) -> None:
    """Issue 14: a group with 2 texts and 2 member-change notices showed 4 unread."""
    members = [ALICE, BOB, CAROL]
    notice = msgspec.structs.replace(group_msg(1, GROUP, 2), msg_type=MsgType.NOTIFICATION)
    later = msgspec.structs.replace(group_msg(1, GROUP, 4), msg_type=MsgType.NOTIFICATION)
    timeline = [group_msg(1, GROUP, 1), notice, group_msg(3, GROUP, 3), later]
    for inbox_seq, msg in enumerate(timeline, start=1):
        for member in members:
            await deliver(stores, member, inbox_seq, msg)
    bob = await stores.sessions.get(BOB, GROUP_CONV)
    assert bob is not None
    assert (bob.unread, bob.last) == (2, later)  # the notice is the last message, not unread
    [carol] = await stores.sessions.recent(CAROL, 0, 10)
    assert carol.unread == 1  # her own text does not count either
    await stores.sessions.mark_read(BOB, GROUP_CONV, 1)
    [bob] = await stores.sessions.recent(BOB, 0, 10)
    assert bob.unread == 1


async def test_invalid_conversation_ids_are_refused(stores: Stores) -> None:
    with pytest.raises(ValueError, match="canonical"):
        await stores.sessions.mark_read(ALICE, ConversationId("s:2:1"), 1)


# --- the interleaving scenario ----------------------------------------------------------


@dataclass
class Scenario:
    """Messages in three conversations with seq gaps, their fan-out, and read acks."""

    deliveries: list[tuple[UserId, int, StoredMessage]] = field(default_factory=list)
    reads: list[ReadMark] = field(default_factory=list)

    def expected(self) -> dict[tuple[UserId, ConversationId], tuple[int, int, int]]:
        """(user, conversation) → (last seq, read seq, unread)."""
        last: dict[tuple[UserId, ConversationId], int] = {}
        for user, _, msg in self.deliveries:
            key = (user, msg.conversation)
            last[key] = max(last.get(key, 0), msg.seq)
        read: dict[tuple[UserId, ConversationId], int] = {}
        for mark in self.reads:
            key = (mark.user_id, mark.conversation)
            read[key] = max(read.get(key, 0), mark.seq)
        result = {}
        for key, last_seq in last.items():
            user, conversation = key
            seen = {
                msg.seq
                for u, _, msg in self.deliveries
                if u == user and msg.conversation == conversation and counts_as_unread(msg, user)
            }
            read_seq = read.get(key, 0)
            result[key] = (last_seq, read_seq, sum(1 for s in seen if s > read_seq))
        return result


def build_scenario(rng: random.Random, messages: int, reads: int) -> Scenario:
    scenario = Scenario()
    members = {
        conv(1, 2): [ALICE, BOB],
        conv(1, 3): [ALICE, CAROL],
        GROUP_CONV: [ALICE, BOB, CAROL],
    }
    next_seq = dict.fromkeys(members, 1)
    inbox_seq = dict.fromkeys((ALICE, BOB, CAROL), 1)
    for n in range(messages):
        conversation = rng.choice(list(members))
        # Gaps, as after owner changes: sometimes jump to the next section.
        seq = next_seq[conversation] + (rng.choice((0, 0, 0, 97)))
        next_seq[conversation] = seq + 1
        sender = rng.choice(members[conversation])
        if conversation == GROUP_CONV:
            msg = group_msg(sender, GROUP, seq, client_msg_id=f"m{n}")
            if rng.random() < 0.25:  # a member-change notice: never unread
                msg = msgspec.structs.replace(msg, msg_type=MsgType.NOTIFICATION)
        else:
            peer = next(u for u in members[conversation] if u != sender)
            msg = c2c(sender, peer, seq, client_msg_id=f"m{n}")
        for user in members[conversation]:
            scenario.deliveries.append((user, inbox_seq[user], msg))
            inbox_seq[user] += rng.choice((1, 1, 1, 50))
    for _ in range(reads):
        user, _, msg = rng.choice(scenario.deliveries)
        scenario.reads.append(ReadMark(user, msg.conversation, msg.seq))
    return scenario


async def play(stores: Stores, scenario: Scenario, rng: random.Random, batch: int) -> None:
    """The fanout stream and the ack stream concurrently, each in shuffled order, replays
    included (a random tenth of each stream is sent twice)."""
    fanout = scenario.deliveries + rng.sample(scenario.deliveries, len(scenario.deliveries) // 10)
    acks = scenario.reads + rng.sample(scenario.reads, len(scenario.reads) // 10)
    rng.shuffle(fanout)
    rng.shuffle(acks)

    async def fanout_group() -> None:
        for i in range(0, len(fanout), batch):
            chunk = fanout[i : i + batch]
            await stores.inbox.append_many(
                [InboxEntry(user_id=u, inbox_seq=s, message=m) for u, s, m in chunk]
            )
            await stores.sessions.touch_many([SessionTouch(u, m) for u, _, m in chunk])

    async def ack_group() -> None:
        for i in range(0, len(acks), batch):
            await stores.sessions.mark_read_many(acks[i : i + batch])

    await asyncio.gather(fanout_group(), ack_group())


async def observed(stores: Stores) -> dict[tuple[UserId, ConversationId], tuple[int, int, int]]:
    result = {}
    for user in (ALICE, BOB, CAROL):
        for session in await stores.sessions.recent(user, 0, 100):
            assert session.last is not None
            result[(user, session.conversation)] = (
                session.last.seq,
                session.read_seq,
                session.unread,
            )
    return result


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Scenario, random.Random, int]:
    rng = draw(st.randoms(use_true_random=False))
    messages = draw(st.integers(1, 25))
    reads = draw(st.integers(0, 15))
    batch = draw(st.integers(1, 8))
    return build_scenario(rng, messages, reads), rng, batch


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_any_interleaving_gives_exact_sessions_on_the_twin(
    case: tuple[Scenario, random.Random, int],
) -> None:
    scenario, rng, batch = case

    async def run() -> None:
        stores = memory_stores(ManualClock())
        await play(stores, scenario, rng, batch)
        assert await observed(stores) == scenario.expected()

    asyncio.run(run())


@pytest.mark.mongo
@pytest.mark.parametrize("seed", [11, 22, 33])
async def test_random_interleavings_give_exact_sessions_on_the_server(
    mongo_db: AsyncDatabase[Document], seed: int
) -> None:
    rng = random.Random(seed)
    scenario = build_scenario(rng, messages=40, reads=25)
    inbox = MongoInboxStore(mongo_db)
    stores = Stores(inbox, MongoSessionStore(mongo_db, inbox, clock=ManualClock()))
    await play(stores, scenario, rng, batch=rng.randint(3, 10))
    assert await observed(stores) == scenario.expected()


@pytest.mark.mongo
@pytest.mark.redis
@pytest.mark.parametrize("seed", [11, 22, 33, 44, 55])
async def test_random_interleavings_give_exact_sessions_in_the_hot_state(
    mongo_db: AsyncDatabase[Document], redis: RedisClient, redis_keys: RedisKeys, seed: int
) -> None:
    """The same on Redis: the unread counts kept by the append and read scripts."""
    rng = random.Random(seed)
    scenario = build_scenario(rng, messages=80, reads=50)
    hot = hot_stores(redis, redis_keys, mongo_db, clock=ManualClock())
    stores = Stores(hot.inbox, hot.sessions)
    await play(stores, scenario, rng, batch=rng.randint(3, 10))
    assert await observed(stores) == scenario.expected()


class _UpdateStatements(monitoring.CommandListener):
    """Counts the statements of the ``update`` commands a client sends."""

    def __init__(self) -> None:
        self.statements = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "update":
            self.statements += len(event.command["updates"])

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.mongo
async def test_a_bulk_writes_each_session_once(
    mongo_url: str, mongo_db: AsyncDatabase[Document], clock: ManualClock
) -> None:
    """A backlog touching a few sessions many times costs one statement per session: on
    FerretDB v1 each statement is a read-modify-write of its own (store.mongo.sessions)."""
    counter = _UpdateStatements()
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongo_url, event_listeners=[counter])
    try:
        db = client[mongo_db.name]
        inbox = MongoInboxStore(db)
        sessions = MongoSessionStore(db, inbox, clock=clock)
        backlog = [c2c(2, 1, s) for s in range(1, 41)] + [c2c(3, 1, s) for s in range(1, 41)]
        random.Random(7).shuffle(backlog)
        await sessions.touch_many([SessionTouch(ALICE, m) for m in backlog])
        assert counter.statements == 2
        marks = [ReadMark(ALICE, m.conversation, m.seq) for m in backlog]
        await sessions.mark_read_many(marks)
        assert counter.statements == 4
        for sender in (2, 3):
            got = await sessions.get(ALICE, conv(1, sender))
            assert got is not None
            assert (got.last, got.read_seq) == (c2c(sender, 1, 40), 40)
    finally:
        await client.close()
