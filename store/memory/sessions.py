"""`SessionStore` in memory: the embedded mode's, and the twin in the contract tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from schemas.ids import ConversationId, UserId
from store.clock import Clock, SystemClock
from store.inbox import InboxStore
from store.messages import StoredMessage, check_limit
from store.sessions import (
    ReadMark,
    Session,
    SessionTouch,
    count_reads,
    session_peer,
    with_unread,
)


class _State:
    __slots__ = ("last", "last_updated", "read", "read_updated")

    def __init__(self) -> None:
        self.last: StoredMessage | None = None
        self.last_updated = 0
        self.read = 0
        self.read_updated = 0

    @property
    def updated(self) -> int:
        return max(self.last_updated, self.read_updated)


class MemorySessionStore:
    """In-memory `SessionStore`: the embedded mode's, and the twin in the contract tests.

    Args:
        inbox: the inbox unread counts are derived from.
        clock: the time read marks are stamped with.
    """

    def __init__(self, inbox: InboxStore, *, clock: Clock | None = None) -> None:
        self._inbox = inbox
        self._clock = clock or SystemClock()
        self._sessions: dict[tuple[UserId, ConversationId], _State] = {}

    def _state(self, user_id: UserId, conversation: ConversationId) -> _State:
        session_peer(user_id, conversation)  # validates the conversation id
        return self._sessions.setdefault((user_id, conversation), _State())

    async def touch_many(self, touches: Sequence[SessionTouch]) -> None:
        """Move last messages forward."""
        for touch in touches:
            msg = touch.message
            state = self._state(touch.user_id, msg.conversation)
            if state.last is None or msg.seq > state.last.seq:
                state.last = msg
            # As MongoDB's $max on the updated time: applied whether or not `last` moved.
            state.last_updated = max(state.last_updated, msg.created_ms)

    async def mark_read_many(self, marks: Sequence[ReadMark]) -> None:
        """Move read seqs forward."""
        now = self._clock.now_ms()
        for mark in marks:
            state = self._state(mark.user_id, mark.conversation)
            state.read = max(state.read, mark.seq)
            state.read_updated = max(state.read_updated, now)

    async def advance_reads(self, marks: Sequence[ReadMark]) -> list[int]:
        """Move read seqs forward; each session's read seq from before."""
        before: dict[tuple[UserId, ConversationId], int] = {}
        for mark in marks:
            key = (mark.user_id, mark.conversation)
            if key not in before:
                state = self._sessions.get(key)
                before[key] = 0 if state is None else state.read
        await self.mark_read_many(marks)
        return [before[(m.user_id, m.conversation)] for m in marks]

    async def mark_read(self, user_id: UserId, conversation: ConversationId, seq: int) -> None:
        """Move one read seq forward."""
        await self.mark_read_many([ReadMark(user_id, conversation, seq)])

    def _view(self, user_id: UserId, conversation: ConversationId, state: _State) -> Session:
        session_type, peer_id = session_peer(user_id, conversation)
        return Session(
            user_id=user_id,
            conversation=conversation,
            session_type=session_type,
            peer_id=peer_id,
            last=state.last,
            read_seq=state.read,
            updated_ms=state.updated,
        )

    async def get(self, user_id: UserId, conversation: ConversationId) -> Session | None:
        """One session with its unread count."""
        state = self._sessions.get((user_id, conversation))
        if state is None:
            return None
        unread = await self._inbox.count_unread(user_id, {conversation: state.read})
        view = self._view(user_id, conversation, state)
        return msgspec.structs.replace(view, unread=unread[conversation])

    async def recent(
        self, user_id: UserId, updated_after_ms: int, limit: int, *, unread: bool = True
    ) -> list[Session]:
        """Sessions changed after `updated_after_ms`, newest first, with unread counts."""
        check_limit(limit)
        found = [
            self._view(uid, conv, state)
            for (uid, conv), state in self._sessions.items()
            if uid == user_id and state.last is not None and state.updated > updated_after_ms
        ]
        found.sort(key=lambda s: (s.updated_ms, s.conversation), reverse=True)
        if not unread:
            return found[:limit]
        return await with_unread(self._inbox, user_id, found[:limit])

    async def read_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """The read seq (0 if none)."""
        state = self._sessions.get((user_id, conversation))
        return 0 if state is None else state.read

    async def peer_read_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """`read_seq`: nothing to complete in memory."""
        return await self.read_seq(user_id, conversation)

    async def read_counts(
        self, conversation: ConversationId, member_ids: Iterable[UserId], seqs: Iterable[int]
    ) -> dict[int, int]:
        """How many members read each seq."""
        reads = []
        for uid in set(member_ids):
            state = self._sessions.get((uid, conversation))
            reads.append(0 if state is None else state.read)
        return count_reads(reads, seqs)

    async def read_seqs_of(
        self, conversation: ConversationId, user_ids: Iterable[UserId]
    ) -> dict[UserId, int]:
        """Each user's read seq (0 if none)."""
        found: dict[UserId, int] = {}
        for uid in user_ids:
            state = self._sessions.get((uid, conversation))
            found[uid] = 0 if state is None else state.read
        return found
