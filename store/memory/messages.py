"""`MessageStore` in memory: the embedded mode's, and the twin in the contract tests."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import msgspec

from schemas.ids import ConversationId, UserId
from store.messages import (
    InsertResult,
    MessageRef,
    SeqConflictError,
    StoredMessage,
    check_limit,
)


class _Timeline:
    __slots__ = ("by_client_id", "by_seq", "seqs")

    def __init__(self) -> None:
        self.by_client_id: dict[str, StoredMessage] = {}
        self.by_seq: dict[int, StoredMessage] = {}
        self.seqs: list[int] = []


class MemoryMessageStore:
    """In-memory `MessageStore`: the embedded mode's, and the twin in the contract tests.

    No coroutine awaits between reading and writing, so each message is stored atomically,
    as a single-document write is.
    """

    def __init__(self) -> None:
        self._timelines: dict[ConversationId, _Timeline] = {}

    async def insert_many(self, messages: Sequence[StoredMessage]) -> list[InsertResult]:
        """Store the new messages; hand back the originals of duplicates."""
        results: list[InsertResult] = []
        conflict: SeqConflictError | None = None
        for msg in messages:
            timeline = self._timelines.setdefault(msg.conversation, _Timeline())
            original = timeline.by_client_id.get(msg.client_msg_id)
            if original is not None:
                results.append(InsertResult(original, duplicate=True))
                continue
            if msg.seq in timeline.by_seq:
                conflict = conflict or SeqConflictError(
                    f"seq {msg.seq} of {msg.conversation} belongs to another message"
                )
                continue
            timeline.by_client_id[msg.client_msg_id] = msg
            timeline.by_seq[msg.seq] = msg
            bisect.insort(timeline.seqs, msg.seq)
            results.append(InsertResult(msg, duplicate=False))
        if conflict is not None:
            raise conflict
        return results

    async def insert(self, message: StoredMessage) -> InsertResult:
        """Store one message."""
        return (await self.insert_many([message]))[0]

    async def get_by_client_ids(
        self, conversation: ConversationId, client_msg_ids: Iterable[str]
    ) -> list[StoredMessage]:
        """The stored messages among `client_msg_ids`, ascending by seq."""
        timeline = self._timelines.get(conversation)
        if timeline is None:
            return []
        found = {timeline.by_client_id.get(cid) for cid in client_msg_ids}
        return sorted((m for m in found if m is not None), key=lambda m: m.seq)

    async def get_by_seqs(
        self, conversation: ConversationId, seqs: Iterable[int]
    ) -> list[StoredMessage]:
        """The stored messages among `seqs`, ascending by seq."""
        timeline = self._timelines.get(conversation)
        if timeline is None:
            return []
        found = {timeline.by_seq.get(seq) for seq in seqs}
        return sorted((m for m in found if m is not None), key=lambda m: m.seq)

    async def get_many(self, refs: Iterable[MessageRef]) -> dict[MessageRef, StoredMessage]:
        """The stored messages among `refs`."""
        found: dict[MessageRef, StoredMessage] = {}
        for conversation, seq in refs:
            timeline = self._timelines.get(conversation)
            msg = None if timeline is None else timeline.by_seq.get(seq)
            if msg is not None:
                found[(conversation, seq)] = msg
        return found

    async def history(
        self, conversation: ConversationId, end_seq: int, limit: int
    ) -> list[StoredMessage]:
        """The newest `limit` messages below `end_seq` (0 = no bound), ascending."""
        check_limit(limit)
        timeline = self._timelines.get(conversation)
        if timeline is None:
            return []
        stop = len(timeline.seqs) if end_seq <= 0 else bisect.bisect_left(timeline.seqs, end_seq)
        return [timeline.by_seq[seq] for seq in timeline.seqs[max(0, stop - limit) : stop]]

    async def latest(self, conversation: ConversationId) -> StoredMessage | None:
        """The newest message, or None."""
        timeline = self._timelines.get(conversation)
        if timeline is None or not timeline.seqs:
            return None
        return timeline.by_seq[timeline.seqs[-1]]

    async def latest_seqs(
        self, conversations: Iterable[ConversationId]
    ) -> dict[ConversationId, int]:
        """Each conversation's highest seq (0 if none)."""
        heads: dict[ConversationId, int] = {}
        for conversation in conversations:
            timeline = self._timelines.get(conversation)
            heads[conversation] = timeline.seqs[-1] if timeline is not None and timeline.seqs else 0
        return heads

    async def mark_revoked(
        self, conversation: ConversationId, seq: int, *, by: UserId, at_ms: int
    ) -> StoredMessage | None:
        """Mark revoked (first revocation wins) and return the message."""
        if at_ms <= 0:
            raise ValueError("a revocation time is a positive ms timestamp")
        timeline = self._timelines.get(conversation)
        msg = None if timeline is None else timeline.by_seq.get(seq)
        if timeline is None or msg is None:
            return None
        if not msg.revoked:
            msg = msgspec.structs.replace(msg, revoked_by=by, revoked_ms=at_ms)
            timeline.by_seq[seq] = msg
            timeline.by_client_id[msg.client_msg_id] = msg
        return msg
