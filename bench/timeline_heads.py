"""Timeline-head reads on the real servers, with and without the Redis cache (not a test).

What the ``ack`` group pays per batch to cap claimed seqs (the heads of the batch's
conversations) and the sync query per request (a user's inbox head): straight from the
MongoDB-compatible server — one sorted ``find_one`` per timeline, as ``_latest_seqs`` did
before `store.redis.heads` — and through the cache (all hits, one pipelined Redis round trip).

    uv run python -m bench.timeline_heads [--messages 5000] [--conversations 50] [--batch 10]

Uses a throw-away database and Redis key namespace, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from bench.store_timelines import stored_message
from schemas.codes import SessionType
from schemas.ids import UserId, c2c_conversation_id
from store.inbox import InboxEntry
from store.mongo.client import connect_mongo, ensure_indexes
from store.mongo.inbox import MongoInboxStore
from store.mongo.messages import MongoMessageStore
from store.redis.client import connect_redis
from store.redis.heads import CachedInboxStore, CachedMessageStore
from store.redis.keys import RedisKeys

READER = UserId(1)


async def _median_ms(call: Callable[[], Awaitable[object]], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def main(args: argparse.Namespace) -> None:
    """Store ``args.messages`` in ``args.conversations`` conversations (and as many inbox
    entries of one reader), then time the head reads."""
    batch, rounds = args.batch, args.rounds
    client = connect_mongo(args.mongo_url, socket_timeout=120)
    redis = connect_redis(args.redis_url)
    name = f"cbbench_{uuid.uuid4().hex[:8]}"
    keys = RedisKeys(namespace=f"cbbench:{uuid.uuid4().hex[:8]}:")
    db = client[name]
    await ensure_indexes(db)
    try:
        mongo_messages, mongo_inbox = MongoMessageStore(db), MongoInboxStore(db)
        cached_messages = CachedMessageStore(mongo_messages, redis, keys=keys)
        cached_inbox = CachedInboxStore(mongo_inbox, redis, keys=keys)
        convs = [c2c_conversation_id(READER, UserId(p)) for p in range(2, args.conversations + 2)]
        per_conv = args.messages // args.conversations
        stored = [
            stored_message(c, seq, p + 2, READER, SessionType.SINGLE)
            for seq in range(1, per_conv + 1)
            for p, c in enumerate(convs)
        ]
        for start in range(0, len(stored), 500):
            chunk = stored[start : start + 500]
            await cached_messages.insert_many(chunk)
            await cached_inbox.append_many(
                [
                    InboxEntry(user_id=READER, inbox_seq=start + i + 1, message=m)
                    for i, m in enumerate(chunk)
                ]
            )
        wanted = convs[:batch]

        async def ack_before() -> object:  # the old `AckGroup._latest_seqs`
            return await asyncio.gather(*(mongo_messages.latest(c) for c in wanted))

        assert await cached_messages.latest_seqs(wanted) == await mongo_messages.latest_seqs(wanted)
        assert await cached_inbox.head(READER) == await mongo_inbox.head(READER) == len(stored)
        load = os.getloadavg()[0]
        rows = [
            ("ack heads, MongoDB latest() each", await _median_ms(ack_before, rounds)),
            (
                "ack heads, MongoDB latest_seqs()",
                await _median_ms(lambda: mongo_messages.latest_seqs(wanted), rounds),
            ),
            (
                "ack heads, Redis cache",
                await _median_ms(lambda: cached_messages.latest_seqs(wanted), rounds),
            ),
            ("inbox head, MongoDB", await _median_ms(lambda: mongo_inbox.head(READER), rounds)),
            (
                "inbox head, Redis cache",
                await _median_ms(lambda: cached_inbox.head(READER), rounds),
            ),
        ]
        print(
            f"{len(stored):,} messages and inbox entries, {batch} conversations per ack batch, "
            f"median of {rounds}, load average {load:.1f}:"
        )
        for label, ms in rows:
            print(f"  {label:<36} {ms:9.1f} ms")
    finally:
        leftovers = [key async for key in redis.scan_iter(match=keys.pattern(), count=1000)]
        if leftovers:
            await redis.delete(*leftovers)
        await redis.aclose()
        await client.drop_database(name)
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mongo-url", default="mongodb://127.0.0.1:27017")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
