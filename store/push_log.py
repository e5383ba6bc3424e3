"""The push log: which offline pushes were already sent (`PushLog`, memory twin, MongoDB).

The ``push`` group sends at most one push per (user, conversation, seq), however many times
the timer or push records behind it are replayed: before sending, it *claims* the push's key
with an insert into the log by ``_id``; a key that is already there was claimed by an earlier
run, and that push is not sent again. Claim-then-send makes the push *at most once*: a member
that dies between the claim and the send loses that one push (the message itself is safe in
the inbox and shows on the next sync) — a duplicate alert on every replay would be worse.

MongoDB ``push_log``: ``{_id: "<user>|<conversation>|<seq>", ms}``, inserted in one unordered
bulk per batch (`store.mongo.bulk.insert_new`). No other index. ``im.push`` keeps its records for a
day, so an entry older than that can never be claimed again: `PushLog.prune` deletes them
(a maintenance job; the log is correct without it). Intended shard key: ``_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from store.mongo.bulk import Document, insert_new
from store.mongo.collections import Collection

__all__ = ["PUSH_LOG_COLLECTION", "MemoryPushLog", "MongoPushLog", "PushLog"]

PUSH_LOG_COLLECTION: Final = Collection.PUSH_LOG


class PushLog(Protocol):
    """Claims of sent pushes."""

    async def claim(self, keys: Sequence[str], at_ms: int) -> list[bool]:
        """Claim each key in one bulk write; per key, whether this call claimed it (True:
        send the push) or an earlier one had (False: it was sent, or is being sent)."""
        ...

    async def prune(self, before_ms: int) -> int:
        """Delete claims made before `before_ms`; how many."""
        ...


class MemoryPushLog:
    """In-memory `PushLog` (embedded mode and tests)."""

    def __init__(self) -> None:
        self._claims: dict[str, int] = {}

    async def claim(self, keys: Sequence[str], at_ms: int) -> list[bool]:
        """Claim the keys not claimed yet."""
        claimed: list[bool] = []
        for key in keys:
            new = key not in self._claims
            if new:
                self._claims[key] = at_ms
            claimed.append(new)
        return claimed

    async def prune(self, before_ms: int) -> int:
        """Forget old claims."""
        old = [key for key, ms in self._claims.items() if ms < before_ms]
        for key in old:
            del self._claims[key]
        return len(old)


class MongoPushLog:
    """`PushLog` on MongoDB ``push_log`` (module docstring)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._coll: AsyncCollection[Document] = db[PUSH_LOG_COLLECTION]

    async def claim(self, keys: Sequence[str], at_ms: int) -> list[bool]:
        """One unordered bulk insert by ``_id``; duplicates are earlier claims.

        A key repeated within `keys` is claimed by its first occurrence only.
        """
        first: dict[str, int] = {}
        for index, key in enumerate(keys):
            first.setdefault(key, index)
        unique = list(first)
        taken = await insert_new(self._coll, [{"_id": key, "ms": at_ms} for key in unique])
        won = {key for i, key in enumerate(unique) if i not in taken}
        return [key in won and first[key] == i for i, key in enumerate(keys)]

    async def prune(self, before_ms: int) -> int:
        """One delete by time (a scan: there is no index on ``ms``; run it rarely)."""
        result = await self._coll.delete_many({"ms": {"$lt": before_ms}})
        return result.deleted_count
