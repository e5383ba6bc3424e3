"""Responses remembered per ``Idempotency-Key``: the record and the `IdempotencyStore`.

The HTTP API (`producers.idempotency`) makes a POST with an ``Idempotency-Key`` header
happen once: the first request *reserves* the key (a pending record holding the request's
fingerprint, set only if the key is free — Redis ``SET NX``), runs, and then either
*completes* the record with its response (kept for the TTL, 24 h by default) or *releases*
the key (the request failed and changed nothing, so a retry may run it). A request that
finds the key taken gets the record instead: pending (another request with this key is
running) or completed (replay its response), each with the fingerprint to compare.

Keys are opaque scope strings chosen by the caller (a digest of the API key and the
Idempotency-Key, so two business servers never share a key space).

Implementations: `store.memory.idempotency.MemoryIdempotencyStore`,
`store.redis.idempotency.RedisIdempotencyStore`.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

__all__ = ["IdempotencyRecord", "IdempotencyStore"]


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
