"""Conversation timelines: the stored message, the `MessageStore` protocol, its memory twin.

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

Implementations: `MemoryMessageStore` (here), `store.messages_mongo.MongoMessageStore`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import msgspec

from schemas.ids import ConversationId, UserId
from store.errors import StoreError

Document = dict[str, Any]
#: A message by its conversation and seq.
MessageRef = tuple[ConversationId, int]

MAX_CLIENT_MSG_ID_LENGTH = 128


class SeqConflictError(StoreError):
    """A different message already holds this (conversation, seq): two writers allocated
    seqs for one timeline, which the single-writer design rules out."""


class StoredMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One message as stored in its conversation timeline (and copied into inboxes)."""

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


# --- memory twin --------------------------------------------------------------------------


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
