"""`DeliveryStore` on MongoDB ``deliveries``.

Documents: ``{_id: "<user>|<conv>", user, conv, seq, ms}``, written by the ack group only
(``im.up.ack`` is keyed by user: one writer per document). Primary-key ``$max`` upserts in one
bulk per batch; no other index. Intended shard key: ``user`` (or ``_id``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from schemas.ids import ConversationId, UserId
from store.deliveries import DeliveryMark, merge_marks
from store.mongo.bulk import update_all, update_op
from store.mongo.client import Document
from store.mongo.collections import Collection
from store.mongo.compat import MongoServer

#: The MongoDB collection of delivery marks.
DELIVERIES_COLLECTION: Final = Collection.DELIVERIES


class MongoDeliveryStore:
    """`DeliveryStore` on MongoDB ``deliveries``; `server`: the server's mode
    (`store.mongo.compat`)."""

    def __init__(
        self, db: AsyncDatabase[Document], *, server: MongoServer = MongoServer.FERRETDB_V1
    ) -> None:
        self._coll: AsyncCollection[Document] = db[DELIVERIES_COLLECTION]
        self._server = server

    async def mark_delivered_many(self, marks: Sequence[DeliveryMark]) -> None:
        """``$max`` upserts by ``_id``, one bulk for the merged marks."""
        ops = [
            update_op(
                {"_id": f"{m.user_id}|{m.conversation}"},
                {
                    "$max": {"seq": m.seq, "ms": m.at_ms},
                    "$setOnInsert": {"user": m.user_id, "conv": m.conversation},
                },
                upsert=True,
            )
            for m in merge_marks(marks)
        ]
        if ops:
            await update_all(self._coll, ops, server=self._server)

    async def delivered_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """The highest acked seq (0 if none)."""
        doc = await self._coll.find_one({"_id": f"{user_id}|{conversation}"}, {"seq": 1})
        return 0 if doc is None else int(doc["seq"])

    async def delivered_seqs(
        self, pairs: Iterable[tuple[UserId, ConversationId]]
    ) -> dict[tuple[UserId, ConversationId], int]:
        """The highest acked seq of each pair: one query by ``_id``."""
        wanted = list(dict.fromkeys(pairs))
        found = dict.fromkeys(wanted, 0)
        if not wanted:
            return found
        keys = {f"{u}|{c}": (u, c) for u, c in wanted}
        query: Document = (
            {"_id": next(iter(keys))} if len(keys) == 1 else {"_id": {"$in": list(keys)}}
        )
        async for doc in self._coll.find(query, {"seq": 1}):
            found[keys[doc["_id"]]] = int(doc["seq"])
        return found
