"""The token-check cache of `store.mongo.users.MongoUserStore`, in Redis.

Every login checks a token, so the user store reads a Redis hash first
(`store.redis.keys.RedisKeys.user_cache`: ``rev`` and the msgpack-encoded user without its
password hash, or an empty ``user`` for "no such user") and goes to the database only on a
miss. Negative answers are cached too, so a flood of logins for unknown ids does not reach
the database.

Coherence without transactions: every write to a user document increments its ``rev`` (in the
same single-document update) and then puts the new state here through a script that only
replaces an entry with a *newer* ``rev``. A reader that fills the cache after a miss goes
through the same script with the ``rev`` it read (0 for "no such user"). So whatever the
interleaving of a slow reader and a writer, a stale entry can never overwrite a newer one: a
rotated token stops working at once, not after the TTL. The TTL bounds only what a crash
between the database write and the cache write can leave behind (the write raises then, and
the caller retries it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

import msgspec

from store.ids import UserId
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.users import User

__all__ = ["CachedUser", "RedisTokenCache"]

# Replace the cached entry only with a newer revision of the user, and (re)arm its TTL.
# KEYS[1] cache key; ARGV[1] rev; ARGV[2] encoded user, or "" for "no such user"; ARGV[3] TTL ms
_CACHE_PUT: Final = """
local cur = redis.call('HGET', KEYS[1], 'rev')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'rev', ARGV[1], 'user', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class CachedUser(NamedTuple):
    """A cache hit: the user without password hash, or None for a cached "no such user"."""

    user: User | None


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class RedisTokenCache:
    """What a token check needs of each user (module docstring).

    Args:
        redis: a client with ``decode_responses=False``.
        keys: the Redis key namespace.
        ttl: seconds an entry lives.
    """

    def __init__(self, redis: RedisClient, *, keys: RedisKeys, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._redis = redis
        self._keys = keys
        self._ttl_ms = max(1, round(ttl * 1000))
        self._put = redis.register_script(_CACHE_PUT)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(User)

    async def get(self, user_id: UserId) -> CachedUser | None:
        """The cached entry of the user, or None on a miss."""
        rev, data = await self._redis.hmget(self._keys.user_cache(user_id), ["rev", "user"])
        if rev is None or data is None:
            return None
        # An empty entry is a cached "no such user".
        return CachedUser(self._decoder.decode(_as_bytes(data)) if data else None)

    async def get_many(self, user_ids: Sequence[UserId]) -> dict[UserId, CachedUser]:
        """The cached entries among `user_ids` (misses are left out): one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.hmget(self._keys.user_cache(user_id), ["rev", "user"])
            answers = await pipe.execute()
        return {
            user_id: CachedUser(self._decoder.decode(_as_bytes(data)) if data else None)
            for user_id, (rev, data) in zip(user_ids, answers, strict=True)
            if rev is not None and data is not None
        }

    async def put(self, user_id: UserId, rev: int, user: User | None) -> None:
        """Cache `user` (None: no such user) at revision `rev`, unless a newer one is there."""
        data = b"" if user is None else self._encoder.encode(user.without_password())
        await self._put(keys=[self._keys.user_cache(user_id)], args=[rev, data, self._ttl_ms])
