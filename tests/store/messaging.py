"""Builders shared by the messaging store tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from pymongo.asynchronous.database import AsyncDatabase

from schemas.codes import MsgType, SessionType
from schemas.ids import ConversationId, GroupId, UserId, c2c_conversation_id, group_conversation_id
from store.clock import Clock
from store.inbox import InboxEntry, InboxPage
from store.messages import StoredMessage
from store.mongo.client import Document
from store.mongo.inbox import MongoInboxStore
from store.mongo.messages import MongoMessageStore
from store.mongo.sessions import MongoSessionStore
from store.redis.client import RedisClient
from store.redis.inbox import RedisInboxStore
from store.redis.keys import RedisKeys
from store.redis.messages import RedisMessageStore
from store.redis.sessions import RedisSessionStore

T0 = 1_700_000_000_000


def c2c(
    sender: int, receiver: int, seq: int, *, client_msg_id: str | None = None, data: bytes = b"hi"
) -> StoredMessage:
    """A single-chat message from `sender` to `receiver` at conversation seq `seq`."""
    return StoredMessage(
        conversation=c2c_conversation_id(UserId(sender), UserId(receiver)),
        seq=seq,
        client_msg_id=client_msg_id or f"c-{sender}-{seq}",
        from_user_id=UserId(sender),
        to_session_id=receiver,
        session_type=SessionType.SINGLE,
        msg_type=MsgType.TEXT,
        msg_data=data,
        created_ms=T0 + seq,
        attach='{"k": 1}',
        sender_client_type=1,
    )


def group_msg(
    sender: int, group: int, seq: int, *, client_msg_id: str | None = None
) -> StoredMessage:
    """A message from `sender` to group `group` at conversation seq `seq`."""
    return StoredMessage(
        conversation=group_conversation_id(GroupId(group)),
        seq=seq,
        client_msg_id=client_msg_id or f"g-{sender}-{seq}",
        from_user_id=UserId(sender),
        to_session_id=group,
        session_type=SessionType.GROUP,
        msg_type=MsgType.TEXT,
        msg_data=bytes([seq % 256]) * 3,
        created_ms=T0 + seq,
    )


def conv(a: int, b: int) -> ConversationId:
    """The single-chat conversation of `a` and `b`."""
    return c2c_conversation_id(UserId(a), UserId(b))


class InboxOverTimelines:
    """A hot inbox (`store.redis.user_state.RedisInboxStore`) whose entries' messages are first
    put into their conversations' timelines — what the msg group does before any fan-out:
    the hot inbox keeps references to messages, not copies."""

    def __init__(self, inbox: RedisInboxStore, messages: RedisMessageStore) -> None:
        self.hot = inbox
        self._messages = messages

    async def _timelines(self, entries: Sequence[InboxEntry]) -> None:
        unique = {(e.message.conversation, e.message.seq): e.message for e in entries}
        await self._messages.insert_many(list(unique.values()))

    async def append(self, entries: Sequence[InboxEntry]) -> list[int]:
        await self._timelines(entries)
        return await self.hot.append(entries)

    async def append_new(self, entries: Sequence[InboxEntry]) -> list[bool]:
        await self._timelines(entries)
        return await self.hot.append_new(entries)

    async def append_many(self, entries: Sequence[InboxEntry]) -> int:
        await self._timelines(entries)
        return await self.hot.append_many(entries)

    async def after(self, user_id: UserId, after_seq: int, limit: int) -> InboxPage:
        return await self.hot.after(user_id, after_seq, limit)

    async def head(self, user_id: UserId) -> int:
        return await self.hot.head(user_id)

    async def count_unread(
        self, user_id: UserId, read_seqs: Mapping[ConversationId, int]
    ) -> dict[ConversationId, int]:
        return await self.hot.count_unread(user_id, read_seqs)

    async def unread_seqs(
        self, user_id: UserId, read_seqs: Mapping[ConversationId, int]
    ) -> dict[ConversationId, list[int]]:
        return await self.hot.unread_seqs(user_id, read_seqs)


class HotStores(NamedTuple):
    """The real services' timeline stores: Redis in front of MongoDB."""

    messages: RedisMessageStore
    inbox: InboxOverTimelines
    sessions: RedisSessionStore
    cold_messages: MongoMessageStore
    cold_inbox: MongoInboxStore
    cold_sessions: MongoSessionStore


def hot_stores(
    redis: RedisClient,
    keys: RedisKeys,
    db: AsyncDatabase[Document],
    *,
    clock: Clock | None = None,
    conversation_window: int = 200,
    inbox_window: int = 1000,
) -> HotStores:
    """Hot stores over a fresh MongoDB database, as `coffeebus.wiring` builds them."""
    cold_messages = MongoMessageStore(db)
    cold_inbox = MongoInboxStore(db)
    cold_sessions = MongoSessionStore(db, cold_inbox, clock=clock)
    messages = RedisMessageStore(redis, cold_messages, keys=keys, window=conversation_window)
    inbox = RedisInboxStore(redis, cold_inbox, messages, keys=keys, window=inbox_window)
    sessions = RedisSessionStore(redis, cold_sessions, cold_inbox, keys=keys, clock=clock)
    return HotStores(
        messages,
        InboxOverTimelines(inbox, messages),
        sessions,
        cold_messages,
        cold_inbox,
        cold_sessions,
    )
