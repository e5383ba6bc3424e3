"""`IdempotencyStore` in this process (embedded mode and tests)."""

from __future__ import annotations

import time

from store.idempotency import IdempotencyRecord


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
