"""Builders shared by the messaging store tests."""

from __future__ import annotations

from schemas.codes import MsgType, SessionType
from schemas.ids import ConversationId, GroupId, UserId, c2c_conversation_id, group_conversation_id
from store.messages import StoredMessage

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
