"""Delivery marks of single chats: the `DeliveryStore` protocol, memory twin and MongoDB.

When a receiver's device acks a pushed message (MsgDataAck 0x0302), the ack group records
that the user has received the conversation's messages up to that seq: one mark per (user,
conversation), moved forward only (``$max``), so marks may arrive in any order, any number
of times. Group messages use the per-member ack seqs of `store.groups.GroupStore.record_acks`
instead, which have the same meaning.

"Delivered up to seq N" rather than a flag per message: a device receives one conversation's
pushes in order on one connection and acks them in that order, so the highest acked seq says
the same as one flag per message at one write per (user, conversation) per batch. The delivery
timer (issue 5) asks `DeliveryStore.delivered_seq` whether a message reached a device.

MongoDB ``deliveries``: ``{_id: "<user>|<conv>", user, conv, seq, ms}``, written by the ack
group only (``im.up.ack`` is keyed by user: one writer per document). Primary-key upserts in
one bulk per batch; no other index. Intended shard key: ``user`` (or ``_id``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

import msgspec
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from schemas.ids import ConversationId, UserId
from store.mongo.bulk import Document, update_all, update_op
from store.mongo.collections import Collection

__all__ = [
    "DELIVERIES_COLLECTION",
    "DeliveryMark",
    "DeliveryStore",
    "MemoryDeliveryStore",
    "MongoDeliveryStore",
    "merge_marks",
]

#: The MongoDB collection of delivery marks.
DELIVERIES_COLLECTION: Final = Collection.DELIVERIES


class DeliveryMark(msgspec.Struct, frozen=True):
    """`user_id` received `conversation`'s messages up to `seq` (at `at_ms`)."""

    user_id: UserId
    conversation: ConversationId
    seq: int
    at_ms: int


class DeliveryStore(Protocol):
    """Where delivery marks live."""

    async def mark_delivered_many(self, marks: Sequence[DeliveryMark]) -> None:
        """Move each (user, conversation) mark forward (never back). One bulk write."""
        ...

    async def delivered_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """The highest seq the user acked in the conversation (0 if none)."""
        ...


def merge_marks(marks: Sequence[DeliveryMark]) -> list[DeliveryMark]:
    """One mark per (user, conversation): the highest seq and the latest time."""
    merged: dict[tuple[UserId, ConversationId], DeliveryMark] = {}
    for mark in marks:
        key = (mark.user_id, mark.conversation)
        old = merged.get(key)
        merged[key] = (
            mark
            if old is None
            else DeliveryMark(
                mark.user_id, mark.conversation, max(old.seq, mark.seq), max(old.at_ms, mark.at_ms)
            )
        )
    return list(merged.values())


class MemoryDeliveryStore:
    """In-memory `DeliveryStore` (embedded mode and tests)."""

    def __init__(self) -> None:
        self._marks: dict[tuple[UserId, ConversationId], int] = {}

    async def mark_delivered_many(self, marks: Sequence[DeliveryMark]) -> None:
        """Move marks forward."""
        for mark in marks:
            key = (mark.user_id, mark.conversation)
            self._marks[key] = max(self._marks.get(key, 0), mark.seq)

    async def delivered_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """The highest acked seq (0 if none)."""
        return self._marks.get((user_id, conversation), 0)


class MongoDeliveryStore:
    """`DeliveryStore` on MongoDB ``deliveries``."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._coll: AsyncCollection[Document] = db[DELIVERIES_COLLECTION]

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
            await update_all(self._coll, ops)

    async def delivered_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """The highest acked seq (0 if none)."""
        doc = await self._coll.find_one({"_id": f"{user_id}|{conversation}"}, {"seq": 1})
        return 0 if doc is None else int(doc["seq"])
