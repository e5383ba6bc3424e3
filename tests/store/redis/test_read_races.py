"""Reads of the hot timelines racing the projection's trims, interleaved on purpose.

A read of `store.redis.messages` or `store.redis.inbox` sends several commands in one
pipeline, and a pipeline is not atomic: Redis may run another client's commands — the
projection's trim script — between any two of them (it does so when the pipeline reaches it
in more than one read of its socket, as a sync of 500 entries does). These tests make that
happen at every point of a read, deterministically: the stores under test get a client that
sends each command alone, in order, and runs the trim before the chosen one. Whatever the
point, the read must be complete — a message or an entry the trim moved from Redis to the
store's side of the floor is still read, once (docs/reliability.md, the projection row).

Redis and MongoDB are the real servers; "projecting" is what `consumers.projection` does:
write into MongoDB, then trim.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from schemas.ids import ConversationId, UserId
from store.inbox import InboxEntry
from store.messages import StoredMessage
from store.redis.client import RedisClient
from store.redis.inbox import RedisInboxStore
from store.redis.keys import RedisKeys
from store.redis.messages import RedisMessageStore
from tests.store.messaging import HotStores, c2c, conv
from tests.store.redis.conftest import CONVERSATION_WINDOW, INBOX_WINDOW

pytestmark = [pytest.mark.mongo, pytest.mark.redis]

#: The read commands the stores send, one at a time through `Interleaved`.
READS = frozenset({"hget", "hmget", "mget", "zrangebyscore", "zrevrangebyscore"})


class Interleaved:
    """A Redis client that sends every read command alone, in order — those queued on a
    pipeline too — and awaits `between` just before the `at`-th (from 0): another client's
    commands arriving between two of a non-transactional pipeline's."""

    def __init__(
        self, redis: RedisClient, at: int, between: Callable[[], Awaitable[object]]
    ) -> None:
        self.redis = redis
        self.at = at
        self.between = between
        self.steps = 0
        self.fired = False

    async def step(self) -> None:
        if self.steps == self.at:
            await self.between()
            self.fired = True
        self.steps += 1

    def pipeline(self, transaction: bool = True) -> _Pipeline:
        return _Pipeline(self)

    def __getattr__(self, name: str) -> Any:
        command = getattr(self.redis, name)
        if name not in READS:
            return command  # scripts (`register_script`) run on the real client

        async def stepped(*args: Any, **kwargs: Any) -> Any:
            await self.step()
            return await command(*args, **kwargs)

        return stepped


class _Pipeline:
    def __init__(self, client: Interleaved) -> None:
        self._client = client
        self._queued: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    async def __aenter__(self) -> _Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._queued.clear()

    def __getattr__(self, name: str) -> Callable[..., _Pipeline]:
        if name not in READS:
            raise AttributeError(f"{name} is not a read these tests interleave")

        def queue(*args: Any, **kwargs: Any) -> _Pipeline:
            self._queued.append((name, args, kwargs))
            return self

        return queue

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        answers: list[Any] = []
        for name, args, kwargs in self._queued:
            answers.append(await getattr(self._client, name)(*args, **kwargs))
        return answers


class Readers:
    """The stores a query member reads with, on an `Interleaved` client."""

    def __init__(self, hot: HotStores, redis_keys: RedisKeys, client: Interleaved) -> None:
        redis = cast(RedisClient, client)
        self.messages = RedisMessageStore(
            redis, hot.cold_messages, keys=redis_keys, window=CONVERSATION_WINDOW
        )
        self.inbox = RedisInboxStore(
            redis, hot.cold_inbox, self.messages, keys=redis_keys, window=INBOX_WINDOW
        )


Case = Callable[[int], Awaitable[bool]]


async def at_every_step(case: Case) -> None:
    """Run `case` with the trim before its read's first command, its second, ... until the
    read has fewer commands than that (the case returns whether the trim ran)."""
    at = 0
    while await case(at):
        at += 1
    assert at > 1, "the read sent fewer than two commands: nothing to interleave"


async def timeline(hot: HotStores, sender: int, receiver: int) -> list[StoredMessage]:
    """Twelve messages in Redis, all of them projected (written to MongoDB) but not trimmed."""
    msgs = [c2c(sender, receiver, s) for s in range(1, 13)]
    await hot.messages.insert_many(msgs)
    await hot.cold_messages.insert_many(msgs)
    return msgs


async def test_a_sync_is_complete_when_the_conversation_is_trimmed_during_it(
    hot: HotStores, redis: RedisClient, redis_keys: RedisKeys
) -> None:
    """The chaos test's failure: a user's sync stopped early while the projection trimmed
    the conversations its inbox entries point into."""

    async def case(at: int) -> bool:
        user, peer = UserId(1000 + 2 * at), 1001 + 2 * at
        msgs = await timeline(hot, peer, user)
        entries = [InboxEntry(user_id=user, inbox_seq=s, message=m) for s, m in enumerate(msgs, 1)]
        await hot.inbox.hot.append(entries)  # in Redis only: no inbox trim in this case
        client = Interleaved(redis, at, lambda: hot.messages.trim({msgs[0].conversation: 12}))
        page = await Readers(hot, redis_keys, client).inbox.after(user, 0, 10)
        assert (page.entries, page.has_more) == (entries[:10], True), f"trim before step {at}"
        return client.fired

    await at_every_step(case)


async def test_a_sync_is_complete_when_the_inbox_is_trimmed_during_it(
    hot: HotStores, redis: RedisClient, redis_keys: RedisKeys
) -> None:
    async def case(at: int) -> bool:
        user, peer = UserId(3000 + 2 * at), 3001 + 2 * at
        msgs = await timeline(hot, peer, user)
        entries = [InboxEntry(user_id=user, inbox_seq=s, message=m) for s, m in enumerate(msgs, 1)]
        await hot.inbox.hot.append(entries)
        await hot.cold_inbox.append_many(entries)
        assert await hot.inbox.hot.trim({user: 4}) == 4  # floor 5: the page crosses it
        client = Interleaved(redis, at, lambda: hot.inbox.hot.trim({user: 12}))
        page = await Readers(hot, redis_keys, client).inbox.after(user, 0, 100)
        assert (page.entries, page.has_more) == (entries, False), f"trim before step {at}"
        return client.fired

    await at_every_step(case)


Read = Callable[[RedisMessageStore, ConversationId], Awaitable[object]]


@pytest.mark.parametrize(
    ("read", "want"),
    [
        (lambda m, c: m.history(c, 0, 20), lambda msgs: msgs),
        (lambda m, c: m.get_by_seqs(c, range(1, 13)), lambda msgs: msgs),
        (
            lambda m, c: m.get_many((c, s) for s in range(1, 13)),
            lambda msgs: {(m.conversation, m.seq): m for m in msgs},
        ),
    ],
    ids=["history", "get_by_seqs", "get_many"],
)
async def test_a_conversation_read_is_complete_when_it_is_trimmed_during_it(
    hot: HotStores,
    redis: RedisClient,
    redis_keys: RedisKeys,
    read: Read,
    want: Callable[[list[StoredMessage]], object],
) -> None:
    async def case(at: int) -> bool:
        a, b = 5000 + 2 * at, 5001 + 2 * at
        msgs = await timeline(hot, a, b)
        ab = conv(a, b)
        assert await hot.messages.trim({ab: 4}) == 4  # floor 5: the read crosses it
        client = Interleaved(redis, at, lambda: hot.messages.trim({ab: 12}))
        got = await read(Readers(hot, redis_keys, client).messages, ab)
        assert got == want(msgs), f"trim before step {at}"
        return client.fired

    await at_every_step(case)
