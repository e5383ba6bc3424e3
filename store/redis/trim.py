"""What the projection group tells Redis once the document store has a timeline's entries."""

from __future__ import annotations

from schemas.ids import ConversationId, UserId
from store.redis.inbox import RedisInboxStore
from store.redis.messages import RedisMessageStore

__all__ = ["HotTimelines"]


class HotTimelines:
    """The projection's view of the hot state: trim what the document store now has
    (`consumers.projection.HotTrim`)."""

    def __init__(self, messages: RedisMessageStore, inbox: RedisInboxStore) -> None:
        self._messages = messages
        self._inbox = inbox

    async def trim_conversations(self, upto: dict[ConversationId, int]) -> int:
        """`RedisMessageStore.trim`."""
        return await self._messages.trim(upto) if upto else 0

    async def trim_inboxes(self, upto: dict[UserId, int]) -> int:
        """`RedisInboxStore.trim`."""
        return await self._inbox.trim(upto) if upto else 0
