"""`DeliveryStore` on the users' hot state in Redis (``dl``, `store.redis.user_state`)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence

from schemas.ids import ConversationId, UserId
from store.deliveries import DeliveryMark
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.redis.scripts import NO_WAIT, ReplicaWait, ScriptRunner
from store.redis.user_state import DEFAULT_IDLE_TTL, DELIVER, ttl_ms, user_calls

__all__ = ["RedisDeliveryStore"]


class RedisDeliveryStore:
    """A `DeliveryStore` on the users' hot state (``dl``). Delivery marks matter for the
    delivery timer, seconds after a push; a user whose hot state is gone has acked nothing
    recently, so a miss is 0 and never a store read (after a Redis that lost data, that may
    cost an offline push too many)."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        keys: RedisKeys | None = None,
        idle_ttl: datetime.timedelta = DEFAULT_IDLE_TTL,
        replicas: ReplicaWait = NO_WAIT,
    ) -> None:
        self._redis = redis
        self._keys = keys or RedisKeys()
        self._ttl_ms = ttl_ms(idle_ttl)
        # `replicas`: the replicas that must acknowledge a mark before it returns
        # (`store.redis.scripts.ReplicaWait`; ``[redis] wait_replicas``).
        self._deliver = ScriptRunner(redis, DELIVER, replicas=replicas)

    async def mark_delivered_many(self, marks: Sequence[DeliveryMark]) -> None:
        """Move marks forward (one script per shard, one round trip)."""
        calls, _ = user_calls(
            self._keys,
            marks,
            lambda m: m.user_id,
            lambda m: [m.conversation, m.seq],
            [self._ttl_ms],
        )
        await self._deliver.run_many(calls)

    async def delivered_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """The highest acked seq (0 if none)."""
        return (await self.delivered_seqs([(user_id, conversation)]))[(user_id, conversation)]

    async def delivered_seqs(
        self, pairs: Iterable[tuple[UserId, ConversationId]]
    ) -> dict[tuple[UserId, ConversationId], int]:
        """The highest acked seq of each pair: one pipelined round trip."""
        wanted = list(dict.fromkeys(pairs))
        async with self._redis.pipeline(transaction=False) as pipe:
            for user, conv in wanted:
                pipe.hget(self._keys.user_state(user), f"d:{conv}")
            found = await pipe.execute()
        return {p: int(v or 0) for p, v in zip(wanted, found, strict=True)}
