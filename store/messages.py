"""Conversation timelines: the stored message and the `MessageStore` protocol.

A conversation (``s:<low>:<high>`` or ``g:<group_id>``, see `schemas.ids`) is a timeline of
messages ordered by ``seq`` — the conversation seq that the single owner of the
conversation's ``im.up.msg`` partition allocates (`store.seq`) and that clients see as
``server_msg_id``. Seqs strictly increase but may have gaps.

Idempotency: a message is identified by ``(conversation, client_msg_id)``. Storing it again
— a client's resend, or the msg consumer replaying its topic with a freshly allocated seq —
stores nothing and hands back the message as first stored (its seq and creation time), so the
sender's ack always carries the original ``server_msg_id``. A second message claiming an
already used ``(conversation, seq)`` is a broken single-writer invariant and raises
`SeqConflictError`.

Implementations: `store.memory.messages.MemoryMessageStore`,
`store.mongo.messages.MongoMessageStore`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec

from schemas.ids import ConversationId, UserId
from store.errors import StoreError

#: A message by its conversation and seq.
MessageRef = tuple[ConversationId, int]

MAX_CLIENT_MSG_ID_LENGTH = 128


class SeqConflictError(StoreError):
    """A different message already holds this (conversation, seq): two writers allocated
    seqs for one timeline, which the single-writer design rules out."""


class StoredMessage(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One message as stored in its conversation timeline (and copied into inboxes).

    ``gc=False`` here and on the other store records that hold only scalars, bytes and such
    records (inbox entries, sessions, marks): they cannot be part of a reference cycle, and a
    process holding hundreds of thousands of them (the embedded stores, a batch of reads)
    would otherwise make every full collection walk them all.
    """

    conversation: ConversationId
    seq: int
    """The conversation seq, = ``server_msg_id``."""
    client_msg_id: str
    """The sender's idempotency key (a UUID in CoffeeChat clients)."""
    from_user_id: UserId
    to_session_id: int
    """As the sender addressed it: the peer's user id (single chat) or the group id."""
    session_type: int
    """`schemas.codes.SessionType` value."""
    msg_type: int
    """`schemas.codes.MsgType` value (kept as an int: clients may send newer values)."""
    msg_data: bytes
    created_ms: int
    """Server time of storing, ms since the epoch (the wire's ``create_time`` is seconds)."""
    attach: str = ""
    sender_client_type: int = 0
    revoked_by: int = 0
    """The user who revoked the message; 0 while it is not revoked."""
    revoked_ms: int = 0
    """When it was revoked; 0 while it is not revoked."""

    def __post_init__(self) -> None:
        if self.seq < 1:
            raise ValueError(f"a message seq starts at 1, not {self.seq}")
        if not 0 < len(self.client_msg_id) <= MAX_CLIENT_MSG_ID_LENGTH:
            raise ValueError(
                f"client_msg_id must be 1-{MAX_CLIENT_MSG_ID_LENGTH} characters, "
                f"not {len(self.client_msg_id)}"
            )

    @property
    def revoked(self) -> bool:
        """Whether the message was revoked."""
        return self.revoked_ms != 0


class InsertResult(msgspec.Struct, frozen=True):
    """What storing a message did: the message as stored, and whether it was there before."""

    message: StoredMessage
    duplicate: bool


class MessageStore(Protocol):
    """Where conversation timelines live."""

    async def insert_many(self, messages: Sequence[StoredMessage]) -> list[InsertResult]:
        """Store each message unless its (conversation, client_msg_id) is already stored.

        Returns one result per message, in order; a duplicate's result carries the stored
        original. One bulk write (plus one read per duplicate). Raises `SeqConflictError`
        when a message's seq is taken by another message (the others are still stored).
        """
        ...

    async def insert(self, message: StoredMessage) -> InsertResult:
        """Store one message (see `insert_many`)."""
        ...

    async def get_by_client_ids(
        self, conversation: ConversationId, client_msg_ids: Iterable[str]
    ) -> list[StoredMessage]:
        """The stored messages among `client_msg_ids`, ascending by seq."""
        ...

    async def get_by_seqs(
        self, conversation: ConversationId, seqs: Iterable[int]
    ) -> list[StoredMessage]:
        """The stored messages among `seqs`, ascending by seq."""
        ...

    async def get_many(self, refs: Iterable[MessageRef]) -> dict[MessageRef, StoredMessage]:
        """The stored messages among `refs` ((conversation, seq) pairs, of any number of
        conversations), keyed by ref: one round trip (what the current versions of the
        message copies in a session list or a sync page need)."""
        ...

    async def history(
        self, conversation: ConversationId, end_seq: int, limit: int
    ) -> list[StoredMessage]:
        """At most `limit` messages with seq < `end_seq` (0 = no bound: the newest),
        the newest of them, returned ascending by seq."""
        ...

    async def latest(self, conversation: ConversationId) -> StoredMessage | None:
        """The newest message of the conversation, or None when it has none."""
        ...

    async def latest_seqs(
        self, conversations: Iterable[ConversationId]
    ) -> dict[ConversationId, int]:
        """Each conversation's highest stored seq (0 when it has no message), every one of
        `conversations` a key: what capping a client's claimed seq needs, without the
        messages themselves."""
        ...

    async def mark_revoked(
        self, conversation: ConversationId, seq: int, *, by: UserId, at_ms: int
    ) -> StoredMessage | None:
        """Mark a message revoked and return it; None when there is no such message.
        The first revocation wins: repeating it (with any time) changes nothing."""
        ...


def check_limit(limit: int) -> None:
    """Reject a non-positive page size (callers cap the upper end with a clear error)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
