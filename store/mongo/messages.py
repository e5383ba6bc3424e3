"""`MessageStore` on MongoDB ``messages`` (PyMongo's asyncio API).

Documents: the fields of `store.mongo.messages.message_fields` plus
``_id = "<conversation>|<client_msg_id>"``. The primary key *is* the idempotency key
(conversation ids never contain ``|``): a resend fails its insert on ``_id`` and is read back
by ``_id``, which every MongoDB-compatible server serves from its primary key — FerretDB v1
on SQLite pushes down nothing else (measured: any other filter scans the collection). The
unique index ``(conv, seq)`` orders the timeline for history and latest, and catches two
messages claiming one seq.

Intended shard key: ``conv`` (hashed or ranged); both unique keys start with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from schemas.ids import ConversationId, UserId
from store.messages import (
    InsertResult,
    MessageRef,
    SeqConflictError,
    StoredMessage,
    check_limit,
)
from store.mongo.bulk import insert_new
from store.mongo.client import Document
from store.mongo.collections import Collection

# --- document codec, shared with the inbox and sessions ----------------------------------


def message_fields(msg: StoredMessage) -> Document:
    """The message as document fields (no ``_id``); the inverse of `message_from_doc`."""
    return {
        "conv": msg.conversation,
        "seq": msg.seq,
        "cmid": msg.client_msg_id,
        "from": msg.from_user_id,
        "to": msg.to_session_id,
        "stype": msg.session_type,
        "mtype": msg.msg_type,
        "data": msg.msg_data,
        "ctime": msg.created_ms,
        "attach": msg.attach,
        "ctype": msg.sender_client_type,
        "rev_by": msg.revoked_by,
        "rev_ms": msg.revoked_ms,
    }


def message_from_doc(doc: Document) -> StoredMessage:
    """A message from the fields `message_fields` wrote (extra fields are ignored)."""
    # int(): PyMongo hands 64-bit integers back as bson.Int64; plain ints keep equality
    # with the memory twin simple. bytes(): binary comes back as bytes or bson.Binary.
    return StoredMessage(
        conversation=ConversationId(doc["conv"]),
        seq=int(doc["seq"]),
        client_msg_id=doc["cmid"],
        from_user_id=UserId(int(doc["from"])),
        to_session_id=int(doc["to"]),
        session_type=int(doc["stype"]),
        msg_type=int(doc["mtype"]),
        msg_data=bytes(doc["data"]),
        created_ms=int(doc["ctime"]),
        attach=doc.get("attach", ""),
        sender_client_type=int(doc.get("ctype", 0)),
        revoked_by=int(doc.get("rev_by", 0)),
        revoked_ms=int(doc.get("rev_ms", 0)),
    )


def message_key(conversation: str, client_msg_id: str) -> str:
    """The ``_id`` of a message: its idempotency key."""
    return f"{conversation}|{client_msg_id}"


class MongoMessageStore:
    """`MessageStore` on a MongoDB database (indexes from `store.mongo.client.ensure_indexes`)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._messages: AsyncCollection[Document] = db[Collection.MESSAGES]

    async def insert_many(self, messages: Sequence[StoredMessage]) -> list[InsertResult]:
        """One unordered bulk insert; duplicates are read back by ``_id`` concurrently."""
        docs = [
            {"_id": message_key(m.conversation, m.client_msg_id), **message_fields(m)}
            for m in messages
        ]
        duplicates = sorted(await insert_new(self._messages, docs))
        # Replays are rare and few: one primary-key read each beats one $in query on a
        # server that cannot use an index for $in (FerretDB v1).
        originals = await asyncio.gather(
            *(self._messages.find_one({"_id": docs[i]["_id"]}) for i in duplicates)
        )
        found = dict(zip(duplicates, originals, strict=True))
        results: list[InsertResult] = []
        conflicts: list[StoredMessage] = []
        for i, msg in enumerate(messages):
            if i not in found:
                results.append(InsertResult(msg, duplicate=False))
                continue
            original = found[i]
            if original is None:
                # The duplicate key was (conv, seq): another message holds this seq.
                conflicts.append(msg)
                continue
            results.append(InsertResult(message_from_doc(original), duplicate=True))
        if conflicts:
            raise SeqConflictError(
                "seqs taken by other messages: "
                + ", ".join(f"{m.conversation}#{m.seq}" for m in conflicts)
            )
        return results

    async def insert(self, message: StoredMessage) -> InsertResult:
        """Store one message."""
        return (await self.insert_many([message]))[0]

    async def get_by_client_ids(
        self, conversation: ConversationId, client_msg_ids: Iterable[str]
    ) -> list[StoredMessage]:
        """The stored messages among `client_msg_ids`, ascending by seq."""
        keys = [message_key(conversation, cid) for cid in dict.fromkeys(client_msg_ids)]
        if not keys:
            return []
        query: Document = {"_id": keys[0]} if len(keys) == 1 else {"_id": {"$in": keys}}
        found = [message_from_doc(doc) async for doc in self._messages.find(query)]
        return sorted(found, key=lambda m: m.seq)

    async def get_by_seqs(
        self, conversation: ConversationId, seqs: Iterable[int]
    ) -> list[StoredMessage]:
        """The stored messages among `seqs`, ascending by seq."""
        wanted = list(dict.fromkeys(seqs))
        if not wanted:
            return []
        cursor = self._messages.find({"conv": conversation, "seq": {"$in": wanted}}).sort("seq")
        return [message_from_doc(doc) async for doc in cursor]

    async def get_many(self, refs: Iterable[MessageRef]) -> dict[MessageRef, StoredMessage]:
        """The stored messages among `refs`: one query, an ``$or`` of ``(conv, seq)`` index
        lookups per conversation."""
        by_conv: dict[ConversationId, list[int]] = {}
        for conversation, seq in refs:
            by_conv.setdefault(conversation, []).append(seq)
        if not by_conv:
            return {}
        branches = [{"conv": c, "seq": {"$in": seqs}} for c, seqs in by_conv.items()]
        query: Document = branches[0] if len(branches) == 1 else {"$or": branches}
        found = [message_from_doc(doc) async for doc in self._messages.find(query)]
        return {(m.conversation, m.seq): m for m in found}

    async def history(
        self, conversation: ConversationId, end_seq: int, limit: int
    ) -> list[StoredMessage]:
        """The newest `limit` messages below `end_seq` (0 = no bound), ascending."""
        check_limit(limit)
        query: Document = {"conv": conversation}
        if end_seq > 0:
            query["seq"] = {"$lt": end_seq}
        cursor = self._messages.find(query).sort("seq", DESCENDING).limit(limit)
        newest_first = [message_from_doc(doc) async for doc in cursor]
        newest_first.reverse()
        return newest_first

    async def latest(self, conversation: ConversationId) -> StoredMessage | None:
        """The newest message, or None."""
        doc = await self._messages.find_one({"conv": conversation}, sort=[("seq", DESCENDING)])
        return None if doc is None else message_from_doc(doc)

    async def latest_seqs(
        self, conversations: Iterable[ConversationId]
    ) -> dict[ConversationId, int]:
        """Each conversation's highest seq (0 if none): one sorted ``find_one`` each, run
        concurrently, fetching only ``seq``.

        On MongoDB each is the last key of an ``(conv, seq)`` index range; FerretDB v1 scans
        the collection for each, which is why the consumers read heads from Redis
        (`store.redis.messages.RedisMessageStore`) and come here only for idle conversations.
        """
        ordered = list(dict.fromkeys(conversations))
        docs = await asyncio.gather(
            *(
                self._messages.find_one(
                    {"conv": c}, {"seq": True, "_id": False}, sort=[("seq", DESCENDING)]
                )
                for c in ordered
            )
        )
        return {c: 0 if d is None else int(d["seq"]) for c, d in zip(ordered, docs, strict=True)}

    async def mark_revoked(
        self, conversation: ConversationId, seq: int, *, by: UserId, at_ms: int
    ) -> StoredMessage | None:
        """Mark revoked unless it already is (first revocation wins); return the message."""
        if at_ms <= 0:
            raise ValueError("a revocation time is a positive ms timestamp")
        await self._messages.update_one(
            {"conv": conversation, "seq": seq, "rev_ms": 0},
            {"$set": {"rev_by": by, "rev_ms": at_ms}},
        )
        doc = await self._messages.find_one({"conv": conversation, "seq": seq})
        return None if doc is None else message_from_doc(doc)
