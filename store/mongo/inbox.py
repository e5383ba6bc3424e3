"""`InboxStore` on MongoDB ``inbox`` (PyMongo's asyncio API).

Documents: ``{_id: "<user>|<conversation>|<message seq>", user, iseq, <message fields>}``
(`store.mongo.messages.message_fields`). The ``_id`` is the idempotency key (user, conversation,
message seq), so a replayed entry fails its insert whatever inbox seq it was given; the
unique index ``(user, conv, seq)`` states the same key for unread counts to range over, and
the unique index ``(user, iseq)`` orders the timeline for sync.

Intended shard key: ``user``; both unique indexes start with it.

Unread counts (`MongoInboxStore.count_unread`) come in two strategies:

- ``"aggregate"``: one aggregation — ``$match`` the user and an ``$or`` of "this
  conversation, seq above its read seq, sent by someone else, of a type that counts"
  (`store.inbox.counts_as_unread`), ``$group`` by conversation
  with ``$sum: 1``. FerretDB v1 has no ``$cond`` in accumulators and no ``$facet``, but this
  form works there and on MongoDB, where each ``$or`` branch is a range of the
  ``(user, conv, seq)`` index.
- ``"count"``: one ``count_documents`` per conversation, run concurrently.

FerretDB v1 on SQLite pushes down no filter but ``_id`` equality: every other query scans the
whole collection (``explain`` says ``filterPushdown: false``), so one aggregation costs one
scan while N counts cost N. Measured with ``uv run python -m bench.store_timelines`` (FerretDB
v1.24.2 on SQLite, 2 cores shared with Kafka): a list of 51 sessions over an inbox collection
of 3,250 entries took 1.2 s with ``"aggregate"`` and 17.4 s with ``"count"``. The default is
therefore ``"aggregate"``; on MongoDB both are index ranges and ``"count"`` parallelises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Final, Literal

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from schemas.ids import ConversationId, UserId
from store.inbox import NOT_UNREAD_TYPES, InboxEntry, InboxPage
from store.messages import check_limit
from store.mongo.bulk import insert_new
from store.mongo.client import Document
from store.mongo.collections import Collection
from store.mongo.messages import message_fields, message_from_doc

UnreadStrategy = Literal["aggregate", "count"]

#: the message types that never count as unread, as the filter on ``mtype`` wants them
_NOT_UNREAD: Final = sorted(int(t) for t in NOT_UNREAD_TYPES)


def inbox_key(user_id: int, conversation: str, seq: int) -> str:
    """The ``_id`` of an inbox entry: its idempotency key."""
    return f"{user_id}|{conversation}|{seq}"


def _entry_doc(entry: InboxEntry) -> Document:
    msg = entry.message
    return {
        "_id": inbox_key(entry.user_id, msg.conversation, msg.seq),
        "user": entry.user_id,
        "iseq": entry.inbox_seq,
        **message_fields(msg),
    }


def _entry_from_doc(doc: Document) -> InboxEntry:
    return InboxEntry(
        user_id=UserId(int(doc["user"])), inbox_seq=int(doc["iseq"]), message=message_from_doc(doc)
    )


class MongoInboxStore:
    """`InboxStore` on a MongoDB database (indexes from `store.mongo.client.ensure_indexes`).

    Args:
        db: the database holding ``inbox``.
        unread_strategy: how `count_unread` counts (module docstring).
    """

    def __init__(
        self, db: AsyncDatabase[Document], *, unread_strategy: UnreadStrategy = "aggregate"
    ) -> None:
        self._inbox: AsyncCollection[Document] = db[Collection.INBOX]
        self._unread_strategy = unread_strategy

    async def append_many(self, entries: Sequence[InboxEntry]) -> int:
        """One unordered bulk insert; replays fail on ``_id`` and are skipped."""
        duplicates = await insert_new(self._inbox, [_entry_doc(e) for e in entries])
        return len(entries) - len(duplicates)

    async def append_new(self, entries: Sequence[InboxEntry]) -> list[bool]:
        """`append_many`, telling which entries were new (from the bulk's duplicate errors)."""
        duplicates = await insert_new(self._inbox, [_entry_doc(e) for e in entries])
        return [i not in duplicates for i in range(len(entries))]

    async def append(self, entries: Sequence[InboxEntry]) -> list[int]:
        """`append_new` with each new entry's inbox seq (0 for a replay: its original seq is
        not read back)."""
        new = await self.append_new(entries)
        return [e.inbox_seq if n else 0 for e, n in zip(entries, new, strict=True)]

    async def after(self, user_id: UserId, after_seq: int, limit: int) -> InboxPage:
        """Entries after `after_seq`, ascending; one query for ``limit + 1`` entries."""
        check_limit(limit)
        cursor = (
            self._inbox.find({"user": user_id, "iseq": {"$gt": after_seq}})
            .sort("iseq")
            .limit(limit + 1)
        )
        entries = [_entry_from_doc(doc) async for doc in cursor]
        return InboxPage(entries[:limit], has_more=len(entries) > limit)

    async def head(self, user_id: UserId) -> int:
        """The highest inbox seq (0 if none)."""
        doc = await self._inbox.find_one(
            {"user": user_id}, {"iseq": True}, sort=[("iseq", DESCENDING)]
        )
        return 0 if doc is None else int(doc["iseq"])

    async def count_unread(
        self, user_id: UserId, read_seqs: Mapping[ConversationId, int]
    ) -> dict[ConversationId, int]:
        """Entries above each read seq that count (`counts_as_unread`)."""
        counts = dict.fromkeys(read_seqs, 0)
        if not read_seqs:
            return counts
        if self._unread_strategy == "count":
            convs = list(read_seqs)
            found = await asyncio.gather(
                *(
                    self._inbox.count_documents(
                        {
                            "user": user_id,
                            "conv": conv,
                            "seq": {"$gt": read_seqs[conv]},
                            "from": {"$ne": user_id},
                            "mtype": {"$nin": _NOT_UNREAD},
                        }
                    )
                    for conv in convs
                )
            )
            counts.update(zip(convs, found, strict=True))
            return counts
        pipeline: list[Document] = [
            {
                "$match": {
                    "user": user_id,
                    "from": {"$ne": user_id},
                    "mtype": {"$nin": _NOT_UNREAD},
                    "$or": [{"conv": c, "seq": {"$gt": s}} for c, s in read_seqs.items()],
                }
            },
            {"$group": {"_id": "$conv", "n": {"$sum": 1}}},
        ]
        async for doc in await self._inbox.aggregate(pipeline):
            counts[ConversationId(doc["_id"])] = int(doc["n"])
        return counts

    async def unread_seqs(
        self, user_id: UserId, read_seqs: Mapping[ConversationId, int]
    ) -> dict[ConversationId, list[int]]:
        """The unread seqs of each conversation: one query, an ``$or`` of ranges of the
        ``(user, conv, seq)`` index."""
        found: dict[ConversationId, list[int]] = {c: [] for c in read_seqs}
        if not read_seqs:
            return found
        cursor = self._inbox.find(
            {
                "user": user_id,
                "from": {"$ne": user_id},
                "mtype": {"$nin": _NOT_UNREAD},
                "$or": [{"conv": c, "seq": {"$gt": s}} for c, s in read_seqs.items()],
            },
            {"conv": True, "seq": True, "_id": False},
        )
        async for doc in cursor:
            found[ConversationId(doc["conv"])].append(int(doc["seq"]))
        for seqs in found.values():
            seqs.sort()
        return found
