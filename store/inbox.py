"""User timelines (inboxes): the `InboxStore` protocol and its memory twin.

Write fan-out: every message a user sends or receives is copied into the user's inbox with
an *inbox seq* — the user's own timeline seq, allocated (`store.seq`, timeline
``u:<user_id>``) by the owner of the user's ``im.fanout`` partition. A device that was away
asks for "entries after inbox seq N" (`InboxStore.after`) and gets everything it missed, in
order, in one query, each entry carrying its message.

Idempotency: an entry is identified by (user, conversation, message seq). A replayed fan-out
record comes with a *freshly allocated* inbox seq, so uniqueness cannot rest on the inbox seq:
the replay is recognised by its message and skipped, and its new inbox seq stays unused (a
gap). Inbox seqs may have gaps; they never go backwards.

Unread counts are derived from the inbox when read (`InboxStore.count_unread`): the entries of
a conversation above the user's read seq that someone else sent. Counting rather than
subtracting seqs keeps them exact across seq gaps and whatever order read acks and fan-out
writes land in.

Implementations: `MemoryInboxStore` (here), `store.inbox_mongo.MongoInboxStore`.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Protocol

import msgspec

from schemas.ids import ConversationId, UserId
from store.messages import StoredMessage, check_limit


class InboxEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a user's inbox: a copy of the message, at the user's inbox seq."""

    user_id: UserId
    inbox_seq: int
    message: StoredMessage

    def __post_init__(self) -> None:
        if self.inbox_seq < 1:
            raise ValueError(f"an inbox seq starts at 1, not {self.inbox_seq}")


class InboxPage(msgspec.Struct, frozen=True):
    """Entries after an inbox seq, ascending, and whether more follow."""

    entries: list[InboxEntry]
    has_more: bool


class InboxStore(Protocol):
    """Where users' inbox timelines live."""

    async def append_many(self, entries: Sequence[InboxEntry]) -> int:
        """Append the entries in one bulk write, skipping those whose (user, conversation,
        message seq) is already in the inbox; return how many were new."""
        ...

    async def append_new(self, entries: Sequence[InboxEntry]) -> list[bool]:
        """`append_many`, telling for each entry whether this call appended it (False: it
        was there already, or an earlier entry of the same call had its key). The fanout
        group pushes only what is new, so a replay never delivers twice."""
        ...

    async def append(self, entries: Sequence[InboxEntry]) -> list[int]:
        """`append_new`, telling for each entry its inbox seq if this call appended it, minus
        the original's inbox seq if it was there already (when the store knows it cheaply),
        or 0 if it was there at a seq not known. The fanout group logs a replayed entry
        again at its original seq."""
        ...

    async def after(self, user_id: UserId, after_seq: int, limit: int) -> InboxPage:
        """At most `limit` entries with inbox seq > `after_seq`, ascending."""
        ...

    async def head(self, user_id: UserId) -> int:
        """The user's highest inbox seq (0 when the inbox is empty)."""
        ...

    async def count_unread(
        self, user_id: UserId, read_seqs: Mapping[ConversationId, int]
    ) -> dict[ConversationId, int]:
        """For each conversation, how many of the user's entries have a message seq above
        the given read seq and were sent by someone else (every key is in the result)."""
        ...

    async def unread_seqs(
        self, user_id: UserId, read_seqs: Mapping[ConversationId, int]
    ) -> dict[ConversationId, list[int]]:
        """For each conversation, the message seqs `count_unread` counts, ascending (every
        key is in the result). One query: what rebuilding a user's unread counts needs."""
        ...


class _UserInbox:
    __slots__ = ("by_message", "by_seq", "from_others", "seqs")

    def __init__(self) -> None:
        self.by_message: dict[tuple[ConversationId, int], InboxEntry] = {}
        self.by_seq: dict[int, InboxEntry] = {}
        self.seqs: list[int] = []
        # Per conversation, the sorted message seqs of entries others sent: unread counts.
        self.from_others: dict[ConversationId, list[int]] = {}


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
            if entry.message.from_user_id != entry.user_id:
                bisect.insort(inbox.from_others.setdefault(key[0], []), key[1])
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
        """Entries above each read seq, sent by someone else."""
        inbox = self._inboxes.get(user_id)
        counts: dict[ConversationId, int] = {}
        for conversation, read in read_seqs.items():
            seqs = inbox.from_others.get(conversation, []) if inbox is not None else []
            counts[conversation] = len(seqs) - bisect.bisect_right(seqs, read)
        return counts

    async def unread_seqs(
        self, user_id: UserId, read_seqs: Mapping[ConversationId, int]
    ) -> dict[ConversationId, list[int]]:
        """The seqs above each read seq, sent by someone else."""
        inbox = self._inboxes.get(user_id)
        found: dict[ConversationId, list[int]] = {}
        for conversation, read in read_seqs.items():
            seqs = inbox.from_others.get(conversation, []) if inbox is not None else []
            found[conversation] = seqs[bisect.bisect_right(seqs, read) :]
        return found
