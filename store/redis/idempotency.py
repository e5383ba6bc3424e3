"""`IdempotencyStore` on Redis: one string per key (`store.redis.keys.RedisKeys.idempotency`)
holding the msgpack-encoded record, with the record's TTL; reserving is ``SET NX``."""

from __future__ import annotations

from typing import Final, cast

import msgspec

from store.idempotency import IdempotencyRecord
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(IdempotencyRecord)


class RedisIdempotencyStore:
    """`IdempotencyStore` on Redis: one string per key (the encoded record) with a TTL."""

    def __init__(self, redis: RedisClient, *, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def reserve(
        self, key: str, fingerprint: str, *, ttl_s: float
    ) -> IdempotencyRecord | None:
        name = self._keys.idempotency(key)
        pending = _encoder.encode(IdempotencyRecord(fingerprint))
        ttl_ms = max(1, int(ttl_s * 1000))
        # The key may lapse between a refused SET NX and the GET: then try again.
        for _ in range(3):
            if await self._redis.set(name, pending, nx=True, px=ttl_ms):
                return None
            raw = cast("bytes | None", await self._redis.get(name))  # decode_responses off
            if raw is not None:
                return _decoder.decode(raw)
        raise RuntimeError(f"idempotency key {name} keeps lapsing")  # pragma: no cover

    async def complete(self, key: str, record: IdempotencyRecord, *, ttl_s: float) -> None:
        await self._redis.set(
            self._keys.idempotency(key), _encoder.encode(record), px=max(1, int(ttl_s * 1000))
        )

    async def release(self, key: str) -> None:
        await self._redis.delete(self._keys.idempotency(key))
