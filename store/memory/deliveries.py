"""`DeliveryStore` in memory (embedded mode and tests)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from schemas.ids import ConversationId, UserId
from store.deliveries import DeliveryMark


class MemoryDeliveryStore:
    """In-memory `DeliveryStore` (embedded mode and tests)."""

    def __init__(self) -> None:
        self._marks: dict[tuple[UserId, ConversationId], int] = {}

    async def mark_delivered_many(self, marks: Sequence[DeliveryMark]) -> None:
        """Move marks forward."""
        for mark in marks:
            key = (mark.user_id, mark.conversation)
            self._marks[key] = max(self._marks.get(key, 0), mark.seq)

    async def delivered_seq(self, user_id: UserId, conversation: ConversationId) -> int:
        """The highest acked seq (0 if none)."""
        return self._marks.get((user_id, conversation), 0)

    async def delivered_seqs(
        self, pairs: Iterable[tuple[UserId, ConversationId]]
    ) -> dict[tuple[UserId, ConversationId], int]:
        """The highest acked seq of each pair (0 if none)."""
        return {pair: self._marks.get(pair, 0) for pair in pairs}
