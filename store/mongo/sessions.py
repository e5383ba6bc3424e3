"""`SessionStore` on MongoDB ``sessions`` and ``session_reads`` (PyMongo's asyncio API).

Documents, both with ``_id = "<user>|<conversation>"`` (the one filter FerretDB v1 pushes
down, so every write is a primary-key upsert):

- ``sessions``: ``{user, conv, last_seq, last: {seq, <message fields>}, upd}``, written by
  the fanout group. ``last`` starts with ``seq`` so that ``$max`` on it keeps the newest
  message (`store.sessions`); ``last_seq`` mirrors it (the same ``$max``) for filtering.
- ``session_reads``: ``{user, conv, read, upd}``, written by the ack group.

Why two collections: FerretDB v1 on SQLite applies an update as an unlocked read-modify-write
of the whole document — concurrent ``$inc``/``$max`` updates of one document lose writes
(measured on v1.24.2: 20 concurrent ``$inc`` left 7). Were the last message and the read seq
in one document, a read ack racing a fan-out write could undo the other. Split, each document
has a single writer: the owner of the user's partition in that group (``im.fanout`` and
``im.up.ack`` are both keyed by user). On MongoDB, where single-document updates are atomic,
the split costs one more query per session list and nothing else, and it stays there too
(`store.mongo.compat` counts it as design): one writer group per document, and one layout
whatever the server, so a move between servers is no migration.

Why not the classic ``update_one({..., last_seq: {$lt: seq}}, {$set: ...}, upsert=True)``:
a stale touch then fails its upsert with a duplicate key, and FerretDB v1 stops an unordered
bulk at its first error (`store.mongo.compat`). ``$max`` on the whole message never fails.

Cost on FerretDB v1 on SQLite (`bench/store_timelines.py`): its update path scans the
collection for every statement, so touches slow down as ``sessions`` grows — 1,000 touches
of one group message took 26 s with ~1,000 sessions stored (39/s), against 7,200 inbox
entries/s inserted. On MongoDB each touch is one primary-key upsert. Both bulks therefore
send one statement per session, however many touches or marks of it a batch holds: a
restarted fanout member's 500-record batches of a backlog were 500 statements for a handful
of sessions, and took minutes each while FerretDB was busy.

Indexes: ``(user, upd)`` on both for the session list, ``(conv, read)`` on ``session_reads``
for group read state. Intended shard key of both: ``user``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from schemas.ids import ConversationId, UserId
from store.clock import Clock, SystemClock
from store.inbox import InboxStore
from store.messages import check_limit
from store.mongo.bulk import update_all, update_op
from store.mongo.client import Document
from store.mongo.collections import Collection
from store.mongo.compat import MongoServer
from store.mongo.messages import message_fields, message_from_doc
from store.sessions import ReadMark, Session, SessionTouch, count_reads, session_peer, with_unread


def session_key(user_id: int, conversation: str) -> str:
    """The ``_id`` of a session."""
    return f"{user_id}|{conversation}"


def _session(
    user_id: UserId, conversation: ConversationId, last: Document | None, read: Document | None
) -> Session:
    session_type, peer_id = session_peer(user_id, conversation)
    message = None if last is None or "last" not in last else message_from_doc(last["last"])
    return Session(
        user_id=user_id,
        conversation=conversation,
        session_type=session_type,
        peer_id=peer_id,
        last=message,
        read_seq=0 if read is None else int(read["read"]),
        updated_ms=max(
            0 if last is None else int(last["upd"]), 0 if read is None else int(read["upd"])
        ),
    )


class MongoSessionStore:
    """`SessionStore` on a MongoDB database (indexes from `store.mongo.client.ensure_indexes`).

    Args:
        db: the database holding ``sessions``.
        inbox: the inbox unread counts are derived from.
        clock: the time read marks are stamped with.
        server: the server's mode (`store.mongo.compat`), for the bulk writes.
    """

    def __init__(
        self,
        db: AsyncDatabase[Document],
        inbox: InboxStore,
        *,
        clock: Clock | None = None,
        server: MongoServer = MongoServer.FERRETDB_V1,
    ) -> None:
        self._sessions: AsyncCollection[Document] = db[Collection.SESSIONS]
        self._reads: AsyncCollection[Document] = db[Collection.SESSION_READS]
        self._inbox = inbox
        self._clock = clock or SystemClock()
        self._server = server

    async def touch_many(self, touches: Sequence[SessionTouch]) -> None:
        """One bulk of ``$max`` upserts, one per session however many touches it has.

        A batch often touches one session many times (a backlog of one conversation, a
        burst): only its newest message and latest time can win the ``$max``, so sending
        the others would only cost FerretDB a statement each (module docstring).
        """
        newest: dict[str, tuple[SessionTouch, int]] = {}
        for touch in touches:
            msg = touch.message
            session_peer(touch.user_id, msg.conversation)  # validates the conversation id
            key = session_key(touch.user_id, msg.conversation)
            seen = newest.get(key)
            if seen is None:
                newest[key] = (touch, msg.created_ms)
            else:
                kept, upd = seen
                winner = touch if msg.seq > kept.message.seq else kept
                newest[key] = (winner, max(upd, msg.created_ms))
        ops = []
        for key, (touch, upd) in newest.items():
            msg = touch.message
            ops.append(
                update_op(
                    {"_id": key},
                    {
                        "$max": {
                            "last_seq": msg.seq,
                            # seq first: documents compare field by field.
                            "last": {"seq": msg.seq, **message_fields(msg)},
                            "upd": upd,
                        },
                        "$setOnInsert": {"user": touch.user_id, "conv": msg.conversation},
                    },
                    upsert=True,
                )
            )
        await update_all(self._sessions, ops, server=self._server)

    async def mark_read_many(self, marks: Sequence[ReadMark]) -> None:
        """One bulk of ``$max`` upserts, one per session (its highest mark)."""
        now = self._clock.now_ms()
        highest: dict[str, ReadMark] = {}
        for mark in marks:
            session_peer(mark.user_id, mark.conversation)
            key = session_key(mark.user_id, mark.conversation)
            seen = highest.get(key)
            if seen is None or mark.seq > seen.seq:
                highest[key] = mark
        ops = [
            update_op(
                {"_id": key},
                {
                    "$max": {"read": mark.seq, "upd": now},
                    "$setOnInsert": {"user": mark.user_id, "conv": mark.conversation},
                },
                upsert=True,
            )
            for key, mark in highest.items()
        ]
        await update_all(self._reads, ops, server=self._server)

    async def advance_reads(self, marks: Sequence[ReadMark]) -> list[int]:
        """Read the sessions' read seqs (one query by key), then `mark_read_many`: safe
        because the ack group is the single writer of read seqs (module docstring)."""
        pairs = list(dict.fromkeys((m.user_id, m.conversation) for m in marks))
        keys = [session_key(u, c) for u, c in pairs]
        query: Document = {"_id": keys[0]} if len(keys) == 1 else {"_id": {"$in": keys}}
        before = {doc["_id"]: int(doc["read"]) async for doc in self._reads.find(query)}
        await self.mark_read_many(marks)
        return [before.get(session_key(m.user_id, m.conversation), 0) for m in marks]

    async def mark_read(self, user_id: UserId, conversation: ConversationId, seq: int) -> None:
        """Move one read seq forward."""
        await self.mark_read_many([ReadMark(user_id, conversation, seq)])

    async def get(self, user_id: UserId, conversation: ConversationId) -> Session | None:
        """One session with its unread count; None when neither part exists."""
        key = session_key(user_id, conversation)
        last, read = await asyncio.gather(
            self._sessions.find_one({"_id": key}), self._reads.find_one({"_id": key})
        )
        if last is None and read is None:
            return None
        session = _session(user_id, conversation, last, read)
        return (await with_unread(self._inbox, user_id, [session]))[0]

    async def recent(
        self, user_id: UserId, updated_after_ms: int, limit: int, *, unread: bool = True
    ) -> list[Session]:
        """Sessions changed after `updated_after_ms`, newest first, with unread counts.

        The `limit` most recent of the union lie within the `limit` most recent last-message
        changes plus the `limit` most recent read changes; the other half of each is then
        fetched by ``_id``.
        """
        check_limit(limit)
        recent = {"user": user_id, "upd": {"$gt": updated_after_ms}}
        newest: list[tuple[str, int]] = [("upd", -1), ("conv", -1)]
        lasts_cursor = self._sessions.find({**recent, "last_seq": {"$gt": 0}}).sort(newest)
        reads_cursor = self._reads.find(recent).sort(newest)
        lasts, reads = await asyncio.gather(
            lasts_cursor.limit(limit).to_list(), reads_cursor.limit(limit).to_list()
        )
        by_conv_last = {doc["conv"]: doc for doc in lasts}
        by_conv_read = {doc["conv"]: doc for doc in reads}
        missing_lasts = [c for c in by_conv_read if c not in by_conv_last]
        missing_reads = [c for c in by_conv_last if c not in by_conv_read]
        more_lasts, more_reads = await asyncio.gather(
            self._by_keys(self._sessions, user_id, missing_lasts),
            self._by_keys(self._reads, user_id, missing_reads),
        )
        by_conv_last.update(more_lasts)
        by_conv_read.update(more_reads)
        sessions = [
            _session(user_id, ConversationId(conv), last, by_conv_read.get(conv))
            for conv, last in by_conv_last.items()
            if int(last.get("last_seq", 0)) > 0
        ]
        sessions.sort(key=lambda s: (s.updated_ms, s.conversation), reverse=True)
        if not unread:
            return sessions[:limit]
        return await with_unread(self._inbox, user_id, sessions[:limit])

    @staticmethod
    async def _by_keys(
        collection: AsyncCollection[Document], user_id: UserId, conversations: list[str]
    ) -> dict[str, Document]:
        if not conversations:
            return {}
        keys = [session_key(user_id, conv) for conv in conversations]
        query: Document = {"_id": keys[0]} if len(keys) == 1 else {"_id": {"$in": keys}}
        return {doc["conv"]: doc async for doc in collection.find(query)}

    async def read_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """The read seq (0 if none)."""
        doc = await self._reads.find_one({"_id": session_key(user_id, conversation)})
        return 0 if doc is None else int(doc["read"])

    async def peer_read_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """`read_seq`: the store has it whole."""
        return await self.read_seq(user_id, conversation)

    async def read_counts(
        self, conversation: ConversationId, member_ids: Iterable[UserId], seqs: Iterable[int]
    ) -> dict[int, int]:
        """How many members read each seq: one query for the reads at or above the lowest."""
        wanted = list(dict.fromkeys(seqs))
        members = set(member_ids)
        if not wanted or not members:
            return dict.fromkeys(wanted, 0)
        cursor = self._reads.find(
            {"conv": conversation, "read": {"$gte": min(wanted)}},
            {"user": True, "read": True, "_id": False},
        )
        reads = [int(doc["read"]) async for doc in cursor if int(doc["user"]) in members]
        return count_reads(reads, wanted)

    async def read_seqs_of(
        self, conversation: ConversationId, user_ids: Iterable[UserId]
    ) -> dict[UserId, int]:
        """Each user's read seq: one query by ``_id``."""
        users = list(dict.fromkeys(user_ids))
        found: dict[UserId, int] = dict.fromkeys(users, 0)
        if not users:
            return found
        keys = [session_key(u, conversation) for u in users]
        query: Document = {"_id": keys[0]} if len(keys) == 1 else {"_id": {"$in": keys}}
        async for doc in self._reads.find(query, {"user": True, "read": True}):
            found[UserId(int(doc["user"]))] = int(doc["read"])
        return found
