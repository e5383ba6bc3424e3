"""From an authenticated client frame to a bus record: topic, key and envelope.

The key fixes ordering (topology.yaml): the conversation id for ``im.up.msg``, the sender's
user id for ``im.up.ack`` / ``im.up.query`` / ``im.up.c2s`` (and GroupCreateReq, whose group
has no id yet), the group id for the rest of ``im.up.group``, the room id for
``im.up.room``. Keys are ASCII: ids in decimal (``b"1008"``), conversation ids as
`schemas.ids` writes them (``b"s:7:8"``).

Identity comes from the connection, never from the body: the envelope's origin carries the
authenticated user id and client type, and the conversation key is computed from the
authenticated sender too. The body travels untouched, so a consumer must read the sender
from `Envelope.origin`, not from a ``from_user_id`` the client wrote.
"""

from __future__ import annotations

from google.protobuf.message import Message

from schemas.commands import CommandSpec, KeyKind
from schemas.envelope import Envelope, Origin, make_envelope
from schemas.frame import Frame
from schemas.ids import ConnId, GateId, UserId, conversation_id
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import message_pb2

__all__ = ["InvalidRequest", "build_envelope", "record_key"]


class InvalidRequest(ValueError):
    """The body decodes but cannot be routed (no session type, a zero group id, ...)."""


def _conversation_key(message: Message, user_id: UserId) -> bytes:
    if isinstance(message, message_pb2.MsgData | ext_pb2.TypingNotify):
        session_type, to = message.session_type, message.to_session_id
    elif isinstance(message, ext_pb2.RevokeReq):
        session_type, to = message.session_type, message.session_id
    else:
        raise InvalidRequest(f"{message.DESCRIPTOR.full_name} has no conversation")
    try:
        return conversation_id(session_type, user_id, to).encode("ascii")
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc


def record_key(spec: CommandSpec, message: Message, user_id: UserId) -> bytes:
    """The record key of an uplink command from the authenticated `user_id`."""
    if spec.key is KeyKind.CONVERSATION:
        return _conversation_key(message, user_id)
    if spec.key is KeyKind.GROUP:
        group_id = getattr(message, "group_id", 0)
        if not isinstance(group_id, int) or group_id <= 0:
            raise InvalidRequest(f"{message.DESCRIPTOR.full_name} needs a group_id")
        return b"%d" % group_id
    if spec.key is KeyKind.USER:
        return b"%d" % user_id
    if spec.key is KeyKind.ROOM:
        room_id = getattr(message, "room_id", 0)
        if not isinstance(room_id, int) or room_id <= 0:
            raise InvalidRequest(f"{message.DESCRIPTOR.full_name} needs a room_id")
        return b"%d" % room_id
    raise InvalidRequest(f"command 0x{spec.cmd:04X} is not published")


def build_envelope(
    frame: Frame,
    *,
    gate_id: GateId,
    conn_id: ConnId,
    user_id: UserId,
    client_type: int,
) -> Envelope:
    """The envelope of `frame` from the authenticated connection, stamped now."""
    origin = Origin(
        gate_id=gate_id,
        conn_id=conn_id,
        user_id=user_id,
        client_type=client_type,
        frame_seq=frame.seq,
    )
    return make_envelope(frame.command_id, frame.body, origin=origin)
