"""User timelines (inboxes): the entry and the `InboxStore` protocol.

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
a conversation above the user's read seq that count (`counts_as_unread`: someone else sent
them, and they are what a user calls a message — not a group notification or a tip line).
Counting rather than subtracting seqs keeps them exact across seq gaps and whatever order
read acks and fan-out writes land in. Every implementation — the memory twin, MongoDB and
Redis's hot state — applies the same rule; the contract tests run all three.

Implementations: `store.memory.inbox.MemoryInboxStore`, `store.mongo.inbox.MongoInboxStore`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Protocol

import msgspec

from schemas.codes import MsgType
from schemas.ids import ConversationId, UserId
from store.messages import StoredMessage

#: Message types that never count as unread: a group's member-change and update notices
#: (NOTIFICATION) and tip lines (TIPS, e.g. "this message was revoked") are shown in the
#: timeline but are not something a user reads as a message (docs/protocol-extensions.md).
NOT_UNREAD_TYPES: Final = frozenset({MsgType.TIPS, MsgType.NOTIFICATION})


def counts_as_unread(message: StoredMessage, user_id: UserId) -> bool:
    """Whether `message` in `user_id`'s inbox counts as unread until read: a message of
    someone else's whose type is not in `NOT_UNREAD_TYPES`."""
    return message.from_user_id != user_id and message.msg_type not in NOT_UNREAD_TYPES


class InboxEntry(msgspec.Struct, frozen=True, kw_only=True, gc=False):
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
        the given read seq and count (`counts_as_unread`; every key is in the result)."""
        ...

    async def unread_seqs(
        self, user_id: UserId, read_seqs: Mapping[ConversationId, int]
    ) -> dict[ConversationId, list[int]]:
        """For each conversation, the message seqs `count_unread` counts, ascending (every
        key is in the result). One query: what rebuilding a user's unread counts needs."""
        ...
