"""The Redis cache of timeline heads (`store.redis.heads`) on the real servers: misses fall back
to MongoDB, heads never go back, a lost Redis still answers exactly, a replay repairs a head.

The contracts of the wrapped stores run in test_messages_contract.py and
test_inbox_contract.py (their ``cached`` params); these are the cache's own guarantees.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import subprocess
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import msgspec
import pytest
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from schemas.ids import ConversationId, UserId
from store.inbox import InboxEntry
from store.mongo.client import Document
from store.mongo.inbox import MongoInboxStore
from store.mongo.messages import MongoMessageStore
from store.redis.client import connect_redis
from store.redis.heads import EMPTY_HEAD_TTL, HEAD_TTL, CachedInboxStore, CachedMessageStore
from store.redis.keys import RedisKeys
from tests.store.messaging import c2c, conv, group_msg
from tests.waiting import wait_for

pytestmark = [pytest.mark.mongo, pytest.mark.redis]

CONV = conv(1, 2)
GROUP = group_msg(1, 9, 1).conversation
BOB = UserId(2)
WEEK_MS = HEAD_TTL // datetime.timedelta(milliseconds=1)


@pytest.fixture
def mongo_messages(mongo_db: AsyncDatabase[Document]) -> MongoMessageStore:
    """The authoritative message store; writing here directly is what a crash before the
    cache write leaves."""
    return MongoMessageStore(mongo_db)


@pytest.fixture
def mongo_inbox(mongo_db: AsyncDatabase[Document]) -> MongoInboxStore:
    """The authoritative inbox store."""
    return MongoInboxStore(mongo_db)


@pytest.fixture
def messages(
    mongo_messages: MongoMessageStore, redis: Redis, redis_keys: RedisKeys
) -> CachedMessageStore:
    return CachedMessageStore(mongo_messages, redis, keys=redis_keys)


@pytest.fixture
def inbox(mongo_inbox: MongoInboxStore, redis: Redis, redis_keys: RedisKeys) -> CachedInboxStore:
    return CachedInboxStore(mongo_inbox, redis, keys=redis_keys)


def entry(user: UserId, inbox_seq: int, seq: int) -> InboxEntry:
    return InboxEntry(user_id=user, inbox_seq=inbox_seq, message=c2c(1, 2, seq))


async def test_a_miss_falls_back_to_mongodb_and_fills_the_cache(
    messages: CachedMessageStore,
    mongo_messages: MongoMessageStore,
    redis: Redis,
    redis_keys: RedisKeys,
) -> None:
    await mongo_messages.insert_many([c2c(1, 2, 3), c2c(1, 2, 8), group_msg(1, 9, 5)])
    empty = conv(5, 6)
    assert await messages.latest_seqs([CONV, GROUP, empty]) == {CONV: 8, GROUP: 5, empty: 0}
    assert await redis.get(redis_keys.conversation_head(CONV)) == b"8"
    assert await redis.get(redis_keys.conversation_head(GROUP)) == b"5"
    assert await redis.get(redis_keys.conversation_head(empty)) == b"0"
    # Filled: a write that bypasses the cache is not seen, so the answers came from Redis.
    await mongo_messages.insert(c2c(1, 2, 9))
    assert await messages.latest_seqs([CONV]) == {CONV: 8}


async def test_an_inbox_miss_falls_back_to_mongodb_and_fills_the_cache(
    inbox: CachedInboxStore, mongo_inbox: MongoInboxStore, redis: Redis, redis_keys: RedisKeys
) -> None:
    await mongo_inbox.append_many([entry(BOB, 4, 1), entry(BOB, 6, 2)])
    assert await inbox.head(BOB) == 6
    assert await inbox.head(UserId(3)) == 0
    assert await redis.get(redis_keys.inbox_head(BOB)) == b"6"
    await mongo_inbox.append_many([entry(BOB, 7, 3)])
    assert await inbox.head(BOB) == 6


async def test_writes_advance_the_cached_heads(
    messages: CachedMessageStore, inbox: CachedInboxStore, redis: Redis, redis_keys: RedisKeys
) -> None:
    await messages.insert_many([c2c(1, 2, 1), c2c(2, 1, 4), group_msg(1, 9, 2), c2c(1, 2, 3)])
    assert await redis.get(redis_keys.conversation_head(CONV)) == b"4"
    assert await redis.get(redis_keys.conversation_head(GROUP)) == b"2"
    assert await inbox.append_new([entry(BOB, 2, 1), entry(BOB, 5, 4)]) == [True, True]
    assert await redis.get(redis_keys.inbox_head(BOB)) == b"5"


async def test_a_head_never_goes_back(
    messages: CachedMessageStore, inbox: CachedInboxStore, redis: Redis, redis_keys: RedisKeys
) -> None:
    await messages.insert(c2c(1, 2, 10))
    # A late write of a lower seq (a gap filled after the head moved on) moves nothing.
    await messages.insert(c2c(1, 2, 5))
    assert await messages.latest_seqs([CONV]) == {CONV: 10}
    await inbox.append_many([entry(BOB, 10, 1)])
    await inbox.append_many([entry(BOB, 5, 2)])
    assert await inbox.head(BOB) == 10
    assert await redis.get(redis_keys.inbox_head(BOB)) == b"10"


class _PausedReads(MongoMessageStore):
    """Reads the heads, then waits for `release` before handing them back: a reader whose
    cache fill arrives after a writer's advance."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db)
        self.read = asyncio.Event()
        self.release = asyncio.Event()

    async def latest_seqs(
        self, conversations: Iterable[ConversationId]
    ) -> dict[ConversationId, int]:
        found = await super().latest_seqs(conversations)
        self.read.set()
        await self.release.wait()
        return found


@pytest.mark.parametrize("stored_before", [0, 3])
async def test_a_late_fill_does_not_undo_an_advance(
    messages: CachedMessageStore,
    mongo_db: AsyncDatabase[Document],
    redis: Redis,
    redis_keys: RedisKeys,
    stored_before: int,
) -> None:
    paused = _PausedReads(mongo_db)
    if stored_before:
        await paused.insert(c2c(1, 2, stored_before))  # stored in MongoDB, not cached
    reader = CachedMessageStore(paused, redis, keys=redis_keys)
    reading = asyncio.create_task(reader.latest_seqs([CONV]))
    async with asyncio.timeout(10):
        await paused.read.wait()  # the reader missed and read the old head from MongoDB
    await messages.insert(c2c(1, 2, 7))  # the writer stores 7 and advances the head
    paused.release.set()
    assert await reading == {CONV: stored_before}  # what it read, concurrently with the write
    key = redis_keys.conversation_head(CONV)
    assert await redis.get(key) == b"7"
    assert await messages.latest_seqs([CONV]) == {CONV: 7}
    # Nor does it shorten the head's TTL (a fill of 0 asks for EMPTY_HEAD_TTL).
    assert await redis.pttl(key) > WEEK_MS - 60_000


async def test_a_replay_advances_a_head_that_missed_the_first_write(
    messages: CachedMessageStore, mongo_messages: MongoMessageStore
) -> None:
    await messages.insert(c2c(1, 2, 2))
    original = c2c(1, 2, 5, client_msg_id="lost-ack")
    await mongo_messages.insert(original)  # stored; the process died before the cache write
    assert await messages.latest_seqs([CONV]) == {CONV: 2}
    # The record is replayed with a freshly allocated seq: a duplicate, carrying seq 5.
    result = await messages.insert(msgspec.structs.replace(original, seq=9))
    assert result.duplicate
    assert await messages.latest_seqs([CONV]) == {CONV: 5}


async def test_answers_stay_exact_when_the_keys_are_gone(
    messages: CachedMessageStore,
    inbox: CachedInboxStore,
    redis: Redis,
    redis_keys: RedisKeys,
) -> None:
    await messages.insert_many([c2c(1, 2, 4), group_msg(1, 9, 6)])
    await inbox.append_many([entry(BOB, 3, 4)])
    await redis.delete(redis_keys.conversation_head(CONV), redis_keys.inbox_head(BOB))
    assert await messages.latest_seqs([CONV, GROUP]) == {CONV: 4, GROUP: 6}
    assert await inbox.head(BOB) == 3
    assert await redis.get(redis_keys.conversation_head(CONV)) == b"4"


async def test_the_ttl_is_set_and_refreshed_by_every_write(
    messages: CachedMessageStore, redis: Redis, redis_keys: RedisKeys
) -> None:
    key = redis_keys.conversation_head(CONV)
    # An empty conversation's head (any conversation an ack names) is cached briefly.
    assert await messages.latest_seqs([CONV]) == {CONV: 0}
    assert 0 < await redis.pttl(key) <= EMPTY_HEAD_TTL // datetime.timedelta(milliseconds=1)
    await messages.insert(c2c(1, 2, 4))
    assert WEEK_MS - 60_000 < await redis.pttl(key) <= WEEK_MS
    await redis.pexpire(key, 1_000)
    await messages.insert(c2c(1, 2, 3))  # a write that does not move the head...
    assert await redis.pttl(key) > WEEK_MS - 60_000  # ...still keeps it
    assert await redis.get(key) == b"4"


def test_a_ttl_must_be_positive(redis: Redis, mongo_messages: MongoMessageStore) -> None:
    with pytest.raises(ValueError, match="ttl"):
        CachedMessageStore(mongo_messages, redis, ttl=datetime.timedelta(0))


def test_head_keys_live_in_the_namespace() -> None:
    keys = RedisKeys(namespace="t1:")
    assert keys.conversation_head(CONV) == "t1:head:s:1:2"
    assert keys.inbox_head(7) == "t1:inbox:7:head"
    # No hash tag: the heads spread over a cluster, one slot per timeline.
    assert "{" not in keys.conversation_head(GROUP)


# --- a real Redis restart: keys and loaded scripts are lost ---------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _PrivateRedis:
    """A redis-server of this test's own (never the shared one), restartable on its port."""

    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        self._root = root
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self._root)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[_PrivateRedis]:
    server = _PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def private_client(private_redis: _PrivateRedis) -> AsyncIterator[Redis]:
    client = connect_redis(private_redis.url)
    await _until_up(client)
    try:
        yield client
    finally:
        await client.aclose()


async def _until_up(client: Redis) -> None:
    async def answers() -> bool:
        try:
            return bool(await client.ping())
        except (RedisConnectionError, OSError):
            return False

    await wait_for(answers, within=20)


async def test_after_a_redis_restart_answers_stay_exact_and_writes_advance(
    private_redis: _PrivateRedis,
    private_client: Redis,
    mongo_messages: MongoMessageStore,
    mongo_inbox: MongoInboxStore,
) -> None:
    messages = CachedMessageStore(mongo_messages, private_client)
    inbox = CachedInboxStore(mongo_inbox, private_client)
    await messages.insert_many([c2c(1, 2, 4), group_msg(1, 9, 6)])
    await inbox.append_many([entry(BOB, 3, 4)])

    private_redis.stop()  # nothing persisted: every key and the loaded script are gone
    private_redis.start()
    await _until_up(private_client)
    assert await private_client.dbsize() == 0

    # Misses refill from MongoDB (the fill reloads the advance script Redis forgot).
    assert await messages.latest_seqs([CONV, GROUP]) == {CONV: 4, GROUP: 6}
    assert await inbox.head(BOB) == 3
    await private_client.script_flush()  # this test's own server: the script is lost again
    await messages.insert(c2c(1, 2, 8))
    await inbox.append_many([entry(BOB, 9, 8)])
    assert await messages.latest_seqs([CONV, GROUP]) == {CONV: 8, GROUP: 6}
    assert await inbox.head(BOB) == 9
