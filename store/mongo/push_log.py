"""`PushLog` on MongoDB ``push_log``.

Documents: ``{_id: "<user>|<conversation>|<seq>", ms}``, inserted in one unordered bulk per
batch (`store.mongo.bulk.insert_new`); a duplicate ``_id`` is an earlier claim. No other
index. Intended shard key: ``_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from store.mongo.bulk import insert_new
from store.mongo.client import Document
from store.mongo.collections import Collection

PUSH_LOG_COLLECTION: Final = Collection.PUSH_LOG


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
