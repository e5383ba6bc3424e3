"""Sessions — a user's view of one conversation: the model and the `SessionStore` protocol.

A session holds the conversation's last message (moved by the fanout group when it appends
to the user's inbox), the user's read seq (moved by the ack group on a read ack) and the time
each last changed. No write reads-then-writes, and every write is order-independent:

- last message: ``$max`` of the embedded message document, whose first field is its seq —
  BSON compares documents field by field, so the newest message wins whatever order the
  touches arrive in, and replaying an old one changes nothing;
- read seq: ``$max`` (never back);
- updated times: ``$max``;
- creation: an upsert on ``_id``; when two upserts race to create one document, the loser
  is sent again (`store.mongo.bulk.update_all`) and then updates.

The last message and the read seq live in two documents (``sessions``, ``session_reads``),
each written by one consumer group only, keyed by user like that group's topic: see
`store.mongo.sessions` for why.

Unread counts are never stored: `SessionStore.recent` and `SessionStore.get` derive them from
the user's inbox when read (`store.inbox.InboxStore.count_unread`), so they are exact across
seq gaps and any interleaving of fan-out writes and read acks.

Group read state (`SessionStore.read_counts`): how many of the group's members have a read
seq at or above a message's seq.

Implementations: `store.memory.sessions.MemorySessionStore`,
`store.mongo.sessions.MongoSessionStore`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec

from schemas.codes import SessionType
from schemas.ids import ConversationId, UserId, parse_conversation_id
from store.inbox import InboxStore
from store.messages import StoredMessage


class SessionTouch(msgspec.Struct, frozen=True, gc=False):
    """A message appended to `user_id`'s inbox: it may become the session's last message."""

    user_id: UserId
    message: StoredMessage


class ReadMark(msgspec.Struct, frozen=True, gc=False):
    """`user_id` has read every message of `conversation` up to and including `seq`."""

    user_id: UserId
    conversation: ConversationId
    seq: int


class Session(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A user's view of a conversation."""

    user_id: UserId
    conversation: ConversationId
    session_type: SessionType
    peer_id: int
    """The other user (single chat) or the group (group chat): the wire's session_id."""
    last: StoredMessage | None
    """The newest message appended to the user's inbox for this conversation."""
    read_seq: int
    updated_ms: int
    """When the last message or the read seq last changed (the later of the two)."""
    unread: int = 0
    """Entries of the conversation in the user's inbox above `read_seq`, sent by others."""


def session_peer(user_id: UserId, conversation: ConversationId) -> tuple[SessionType, int]:
    """The session type and session id (peer user or group) of `conversation` for `user_id`."""
    session_type, ids = parse_conversation_id(conversation)
    if session_type == SessionType.GROUP:
        return session_type, ids[0]
    low, high = ids
    return session_type, high if user_id == low else low


class SessionStore(Protocol):
    """Where sessions live."""

    async def touch_many(self, touches: Sequence[SessionTouch]) -> None:
        """Move each session's last message forward to the touch's message unless a newer
        one is there (creating the session on first use). One bulk write."""
        ...

    async def mark_read_many(self, marks: Sequence[ReadMark]) -> None:
        """Move each session's read seq forward (never back). One bulk write."""
        ...

    async def advance_reads(self, marks: Sequence[ReadMark]) -> list[int]:
        """`mark_read_many`, returning each session's read seq from before the call (for
        marks of one session, the value before the first of them). The ack group, the single
        writer of read seqs, notifies only what moved."""
        ...

    async def mark_read(self, user_id: UserId, conversation: ConversationId, seq: int) -> None:
        """Move one session's read seq forward (never back)."""
        ...

    async def get(self, user_id: UserId, conversation: ConversationId) -> Session | None:
        """One session with its exact unread count, or None."""
        ...

    async def recent(
        self, user_id: UserId, updated_after_ms: int, limit: int, *, unread: bool = True
    ) -> list[Session]:
        """The user's sessions that have a message and changed after `updated_after_ms`,
        most recently changed first, at most `limit`, with exact unread counts (0 without
        `unread`: counting may cost a store what the caller does not need)."""
        ...

    async def read_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """The user's read seq in the conversation (0 if none)."""
        ...

    async def peer_read_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """The user's read seq as *others* are shown it (the "read" of their messages in
        history): `read_seq`, except where knowing it exactly would mean completing the
        user's state on their peer's request (Redis's hot state: a store query) — there, what
        the state holds, reads since it began. Never above `read_seq`."""
        ...

    async def read_counts(
        self, conversation: ConversationId, member_ids: Iterable[UserId], seqs: Iterable[int]
    ) -> dict[int, int]:
        """For each seq, how many of `member_ids` have a read seq ≥ it."""
        ...

    async def read_seqs_of(
        self, conversation: ConversationId, user_ids: Iterable[UserId]
    ) -> dict[UserId, int]:
        """Each user's read seq in the conversation (0 if none; every user a key): one
        query, by the sessions' keys."""
        ...


def count_reads(read_seqs: Iterable[int], seqs: Iterable[int]) -> dict[int, int]:
    """For each of `seqs`, how many of `read_seqs` are at or above it."""
    ordered = sorted(read_seqs)
    return {seq: len(ordered) - bisect.bisect_left(ordered, seq) for seq in seqs}


async def with_unread(inbox: InboxStore, user_id: UserId, sessions: list[Session]) -> list[Session]:
    """`sessions` with their unread counts, from one `InboxStore.count_unread` call."""
    if not sessions:
        return []
    counts = await inbox.count_unread(user_id, {s.conversation: s.read_seq for s in sessions})
    return [msgspec.structs.replace(s, unread=counts[s.conversation]) for s in sessions]
