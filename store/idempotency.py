"""Responses remembered per ``Idempotency-Key``: the `IdempotencyStore` and its twins.

The HTTP API (`producers.idempotency`) makes a POST with an ``Idempotency-Key`` header
happen once: the first request *reserves* the key (a pending record holding the request's
fingerprint, set only if the key is free — Redis ``SET NX``), runs, and then either
*completes* the record with its response (kept for the TTL, 24 h by default) or *releases*
the key (the request failed and changed nothing, so a retry may run it). A request that
finds the key taken gets the record instead: pending (another request with this key is
running) or completed (replay its response), each with the fingerprint to compare.

Keys are opaque scope strings chosen by the caller (a digest of the API key and the
Idempotency-Key, so two business servers never share a key space). Redis keys come from
`store.redis.keys.RedisKeys.idempotency`.
"""

from __future__ import annotations

import time
from typing import Final, Protocol, cast

import msgspec
from redis.asyncio import Redis

from store.redis.keys import RedisKeys

__all__ = [
    "IdempotencyRecord",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "RedisIdempotencyStore",
]


class IdempotencyRecord(msgspec.Struct, frozen=True, array_like=True):
    """What a key holds: the request's fingerprint and, once completed, its response."""

    fingerprint: str
    #: the response's HTTP status; 0 while the request is still running
    status: int = 0
    media_type: str = ""
    body: bytes = b""

    @property
    def pending(self) -> bool:
        """Whether the request holding the key has not completed yet."""
        return self.status == 0


class IdempotencyStore(Protocol):
    """Where idempotency keys and their responses live."""

    async def reserve(
        self, key: str, fingerprint: str, *, ttl_s: float
    ) -> IdempotencyRecord | None:
        """Take `key` for a request with `fingerprint` for `ttl_s` seconds.

        Returns None when the key was free and is now this caller's (it must `complete` or
        `release` it), else the record already there.
        """
        ...

    async def complete(self, key: str, record: IdempotencyRecord, *, ttl_s: float) -> None:
        """Store the response of the request holding `key`, kept for `ttl_s` seconds."""
        ...

    async def release(self, key: str) -> None:
        """Free `key`: its request failed and changed nothing."""
        ...


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(IdempotencyRecord)


class MemoryIdempotencyStore:
    """`IdempotencyStore` in this process (embedded mode and tests)."""

    def __init__(self) -> None:
        self._records: dict[str, tuple[float, IdempotencyRecord]] = {}

    def _live(self, key: str) -> IdempotencyRecord | None:
        hit = self._records.get(key)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del self._records[key]
            return None
        return hit[1]

    async def reserve(
        self, key: str, fingerprint: str, *, ttl_s: float
    ) -> IdempotencyRecord | None:
        existing = self._live(key)
        if existing is not None:
            return existing
        self._records[key] = (time.monotonic() + ttl_s, IdempotencyRecord(fingerprint))
        return None

    async def complete(self, key: str, record: IdempotencyRecord, *, ttl_s: float) -> None:
        self._records[key] = (time.monotonic() + ttl_s, record)

    async def release(self, key: str) -> None:
        self._records.pop(key, None)


class RedisIdempotencyStore:
    """`IdempotencyStore` on Redis: one string per key (the encoded record) with a TTL."""

    def __init__(self, redis: Redis, *, keys: RedisKeys) -> None:
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
