"""`InboxStore` in memory: the embedded mode's, and the twin in the contract tests."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

from schemas.ids import ConversationId, UserId
from store.inbox import InboxEntry, InboxPage, counts_as_unread
from store.messages import check_limit


class _UserInbox:
    __slots__ = ("by_message", "by_seq", "counted", "seqs")

    def __init__(self) -> None:
        self.by_message: dict[tuple[ConversationId, int], InboxEntry] = {}
        self.by_seq: dict[int, InboxEntry] = {}
        self.seqs: list[int] = []
        # Per conversation, the sorted message seqs of the entries that count as unread
        # until read (`counts_as_unread`).
        self.counted: dict[ConversationId, list[int]] = {}


class MemoryInboxStore:
    """In-memory `InboxStore`: the embedded mode's, and the twin in the contract tests."""

    def __init__(self) -> None:
        self._inboxes: dict[UserId, _UserInbox] = {}

    async def append_many(self, entries: Sequence[InboxEntry]) -> int:
        """Append the new entries; skip replays."""
        return sum(await self.append_new(entries))

    async def append_new(self, entries: Sequence[InboxEntry]) -> list[bool]:
        """Append the new entries; skip replays; tell which were new."""
        return [seq > 0 for seq in await self.append(entries)]

    async def append(self, entries: Sequence[InboxEntry]) -> list[int]:
        """Append the new entries; skip replays; each one's seq (negated: the original's)."""
        done: list[int] = []
        for entry in entries:
            inbox = self._inboxes.setdefault(entry.user_id, _UserInbox())
            key = (entry.message.conversation, entry.message.seq)
            original = inbox.by_message.get(key)
            if original is not None:
                done.append(-original.inbox_seq)
                continue
            if entry.inbox_seq in inbox.by_seq:
                # As on MongoDB, a taken inbox seq is a duplicate key too; with a correct
                # allocator it cannot happen.
                done.append(0)
                continue
            inbox.by_message[key] = entry
            inbox.by_seq[entry.inbox_seq] = entry
            bisect.insort(inbox.seqs, entry.inbox_seq)
            if counts_as_unread(entry.message, entry.user_id):
                bisect.insort(inbox.counted.setdefault(key[0], []), key[1])
            done.append(entry.inbox_seq)
        return done

    async def after(self, user_id: UserId, after_seq: int, limit: int) -> InboxPage:
        """Entries after `after_seq`, ascending."""
        check_limit(limit)
        inbox = self._inboxes.get(user_id)
        if inbox is None:
            return InboxPage([], has_more=False)
        start = bisect.bisect_right(inbox.seqs, after_seq)
        page = inbox.seqs[start : start + limit]
        return InboxPage(
            [inbox.by_seq[seq] for seq in page], has_more=start + limit < len(inbox.seqs)
        )

    async def head(self, user_id: UserId) -> int:
        """The highest inbox seq (0 if none)."""
        inbox = self._inboxes.get(user_id)
        return inbox.seqs[-1] if inbox is not None and inbox.seqs else 0

    async def count_unread(
        self, user_id: UserId, read_seqs: Mapping[ConversationId, int]
    ) -> dict[ConversationId, int]:
        """Entries above each read seq that count (`counts_as_unread`)."""
        inbox = self._inboxes.get(user_id)
        counts: dict[ConversationId, int] = {}
        for conversation, read in read_seqs.items():
            seqs = inbox.counted.get(conversation, []) if inbox is not None else []
            counts[conversation] = len(seqs) - bisect.bisect_right(seqs, read)
        return counts

    async def unread_seqs(
        self, user_id: UserId, read_seqs: Mapping[ConversationId, int]
    ) -> dict[ConversationId, list[int]]:
        """The seqs above each read seq that count (`counts_as_unread`)."""
        inbox = self._inboxes.get(user_id)
        found: dict[ConversationId, list[int]] = {}
        for conversation, read in read_seqs.items():
            seqs = inbox.counted.get(conversation, []) if inbox is not None else []
            found[conversation] = seqs[bisect.bisect_right(seqs, read) :]
        return found
