"""Delivery marks of single chats: the model and the `DeliveryStore` protocol.

When a receiver's device acks a pushed message (MsgDataAck 0x0302), the ack group records
that the user has received the conversation's messages up to that seq: one mark per (user,
conversation), moved forward only (``$max``), so marks may arrive in any order, any number
of times. Group messages use the per-member ack seqs of `store.groups.GroupStore.record_acks`
instead, which have the same meaning.

"Delivered up to seq N" rather than a flag per message: a device receives one conversation's
pushes in order on one connection and acks them in that order, so the highest acked seq says
the same as one flag per message at one write per (user, conversation) per batch. The delivery
timer (issue 5) asks `DeliveryStore.delivered_seq` whether a message reached a device.

Implementations: `store.memory.deliveries.MemoryDeliveryStore`,
`store.mongo.deliveries.MongoDeliveryStore`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec

from schemas.ids import ConversationId, UserId

__all__ = ["DeliveryMark", "DeliveryStore", "merge_marks"]


class DeliveryMark(msgspec.Struct, frozen=True, gc=False):
    """`user_id` received `conversation`'s messages up to `seq` (at `at_ms`)."""

    user_id: UserId
    conversation: ConversationId
    seq: int
    at_ms: int


class DeliveryStore(Protocol):
    """Where delivery marks live."""

    async def mark_delivered_many(self, marks: Sequence[DeliveryMark]) -> None:
        """Move each (user, conversation) mark forward (never back). One bulk write."""
        ...

    async def delivered_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """The highest seq the user acked in the conversation (0 if none)."""
        ...

    async def delivered_seqs(
        self, pairs: Iterable[tuple[UserId, ConversationId]]
    ) -> dict[tuple[UserId, ConversationId], int]:
        """`delivered_seq` of each (user, conversation), every pair a key: one round trip."""
        ...


def merge_marks(marks: Sequence[DeliveryMark]) -> list[DeliveryMark]:
    """One mark per (user, conversation): the highest seq and the latest time."""
    merged: dict[tuple[UserId, ConversationId], DeliveryMark] = {}
    for mark in marks:
        key = (mark.user_id, mark.conversation)
        old = merged.get(key)
        merged[key] = (
            mark
            if old is None
            else DeliveryMark(
                mark.user_id, mark.conversation, max(old.seq, mark.seq), max(old.at_ms, mark.at_ms)
            )
        )
    return list(merged.values())
