"""Stored messages and sessions as the wire shows them (MsgInfo, ContactSessionInfo).

Revoked messages (docs/protocol-extensions.md, "Revoke"): the content never leaves the server
again. A revoked message is shown as a TIPS message (MsgType 8) whose ``msg_data`` is the
UTF-8 text `REVOKED_TEXT`, with ``msg_status`` SEND_CANCEL (8) and an empty ``attach``. An
unmodified CoffeeChat client renders a tip line in place of the message; a client that knows
the extension recognises SEND_CANCEL (and got a RevokeNotify when it happened).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from schemas.codes import MsgFeature, MsgStatus, MsgType, ResCode, SessionStatusType
from schemas.ids import UserId
from schemas.pb.coffeechat import base_pb2
from store.messages import StoredMessage
from store.sessions import Session

__all__ = [
    "REVOKED_TEXT",
    "PeerReceipts",
    "msg_info",
    "session_info",
    "shown_content",
    "status_for",
]

REVOKED_TEXT: Final = "This message was revoked"


def shown_content(msg: StoredMessage) -> tuple[int, bytes, str]:
    """(msg_type, msg_data, attach) as clients may see them: a tip once revoked."""
    if msg.revoked:
        return MsgType.TIPS, REVOKED_TEXT.encode(), ""
    return msg.msg_type, msg.msg_data, msg.attach


@dataclass(frozen=True, slots=True)
class PeerReceipts:
    """How far the peer of a single chat has the chat: its delivery mark (the highest seq a
    device of the peer acked) and its read seq."""

    delivered: int = 0
    read: int = 0


def status_for(
    msg: StoredMessage, viewer: UserId, read_seq: int, peer: PeerReceipts | None = None
) -> MsgStatus:
    """The status of `msg` for `viewer`: SEND_CANCEL once revoked; others' messages are READ
    up to the viewer's read seq, UNREAD above. The viewer's own messages are SENT, or, given
    the peer's receipts of a single chat, READ up to the peer's read seq and RECEIPT
    (delivered) up to its delivery mark: the ticks of a client that was not there when
    DeliveredNotify and MsgDataReadNotify went out."""
    if msg.revoked:
        return MsgStatus.SEND_CANCEL
    if msg.from_user_id == viewer:
        if peer is not None and msg.seq <= peer.read:
            return MsgStatus.READ
        if peer is not None and msg.seq <= peer.delivered:
            return MsgStatus.RECEIPT
        return MsgStatus.SENT
    return MsgStatus.READ if msg.seq <= read_seq else MsgStatus.UNREAD


def msg_info(
    msg: StoredMessage,
    viewer: UserId,
    read_seq: int,
    *,
    roam: bool = True,
    peer: PeerReceipts | None = None,
) -> base_pb2.MsgInfo:
    """`msg` as a MsgInfo for `viewer` (`roam`: it comes from history, MsgFeature ROAM_MSG;
    `peer`: the receipts of a single chat's peer, for the status of the viewer's own)."""
    msg_type, data, attach = shown_content(msg)
    return base_pb2.MsgInfo(
        client_msg_id=msg.client_msg_id,
        server_msg_id=msg.seq,
        msg_res_code=base_pb2.ResCode.ValueType(ResCode.OK),
        msg_feature=base_pb2.MsgFeature.ValueType(
            MsgFeature.ROAM_MSG if roam else MsgFeature.DEFAULT
        ),
        session_type=base_pb2.SessionType.ValueType(msg.session_type),
        from_user_id=msg.from_user_id,
        to_session_id=msg.to_session_id,
        create_time=msg.created_ms // 1000,
        msg_type=base_pb2.MsgType.ValueType(msg_type),
        msg_status=base_pb2.MsgStatus.ValueType(status_for(msg, viewer, read_seq, peer)),
        msg_data=data,
        attach=attach,
        sender_client_type=base_pb2.ClientType.ValueType(msg.sender_client_type),
    )


def session_info(session: Session, last: StoredMessage) -> base_pb2.ContactSessionInfo:
    """A session with its latest message (`last`: the session's, revocation applied)."""
    msg_type, data, _ = shown_content(last)
    return base_pb2.ContactSessionInfo(
        session_id=session.peer_id,
        session_type=base_pb2.SessionType.ValueType(session.session_type),
        session_status=base_pb2.SessionStatusType.ValueType(SessionStatusType.OK),
        unread_cnt=session.unread,
        updated_time=session.updated_ms // 1000,
        msg_id=last.client_msg_id,
        server_msg_id=last.seq,
        msg_time_stamp=last.created_ms // 1000,
        msg_data=data,
        msg_type=base_pb2.MsgType.ValueType(msg_type),
        msg_from_user_id=last.from_user_id,
        msg_status=base_pb2.MsgStatus.ValueType(
            status_for(last, session.user_id, session.read_seq)
        ),
    )
