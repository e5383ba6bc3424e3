"""Group notifications: the NOTIFICATION messages group changes put in the group's timeline.

Every group change (create, update, invite, kick, leave, dismiss) is also a message of the group's
conversation, so that members catch up on it by history, sync and the session list like on
any message. By the single-writer rule (DESIGN.md, invariant 2) the group handler does not
write it: it publishes it to ``im.up.msg`` as a *system* envelope — ``origin=None``, key the
group's conversation id — and the msg group stores, sequences and fans it out.

The message (``MsgData``, MsgType NOTIFICATION 9):

- ``from_user_id``: who made the change (the owner, the inviter, the leaver);
- ``to_session_id``: the group id, ``session_type`` GROUP;
- ``client_msg_id``: ``"gn-<trace id>"`` — the request's trace id, so a replayed request
  republishes the same id and the msg group's dedupe stores it once;
- ``msg_data``: the JSON of `GroupNotification` (field names as below); an update
  (GROUP_UPDATE 5) adds ``attributes``, the attributes it set with their new values
  (``group_name`` is then the new name).

Recipients: the msg group fans a system notification out to the group's current members
*plus* the users listed in ``member_id_list`` (`extra_recipients`). That is what lets a kicked
member, a leaver and — after a dismiss, when no member is left — every former member get the
notification, whichever of the store write and the fan-out happens first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import msgspec

from schemas.bizevents import GroupAttribute
from schemas.codes import MsgNotificationType, MsgType, SessionType
from schemas.commands import Cmd
from schemas.envelope import Envelope, make_envelope
from schemas.ids import GroupId, TraceId, UserId
from schemas.pb.coffeechat import base_pb2, message_pb2

__all__ = [
    "NOTIFICATION_ID_PREFIX",
    "GroupNotification",
    "extra_recipients",
    "is_group_notification",
    "notification_envelope",
    "notification_msg",
]

NOTIFICATION_ID_PREFIX: Final = "gn-"


class GroupNotification(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a group notification's ``msg_data`` says (JSON)."""

    #: a `schemas.codes.MsgNotificationType` value
    notification_type: int
    group_id: int
    group_name: str
    operator_user_id: int
    #: the users the change is about: created with, invited, kicked, left, or (dismiss) all
    #: the members it had; none for an update
    member_id_list: list[int]
    #: GROUP_UPDATE only: the attributes set, with their new values (absent otherwise)
    attributes: dict[GroupAttribute, str | int] = {}


_decoder: Final = msgspec.json.Decoder(GroupNotification)


def notification_msg(
    kind: MsgNotificationType,
    *,
    group_id: GroupId,
    group_name: str,
    operator: UserId,
    affected: Iterable[UserId],
    trace_id: TraceId,
    now_ms: int,
    attributes: Mapping[GroupAttribute, str | int] | None = None,
) -> message_pb2.MsgData:
    """The NOTIFICATION message of one group change (not yet sequenced: server_msg_id 0)."""
    payload = GroupNotification(
        notification_type=kind,
        group_id=group_id,
        group_name=group_name,
        operator_user_id=operator,
        member_id_list=sorted(set(affected)),
        attributes=dict(attributes or {}),
    )
    return message_pb2.MsgData(
        from_user_id=operator,
        to_session_id=group_id,
        client_msg_id=f"{NOTIFICATION_ID_PREFIX}{trace_id}",
        create_time=now_ms // 1000,
        msg_type=base_pb2.MsgType.ValueType(MsgType.NOTIFICATION),
        session_type=base_pb2.SessionType.ValueType(SessionType.GROUP),
        msg_data=msgspec.json.encode(payload),
    )


def notification_envelope(msg: message_pb2.MsgData, trace_id: TraceId) -> Envelope:
    """The system envelope (origin None) that carries `msg` on ``im.up.msg``."""
    return make_envelope(Cmd.MSG_DATA, msg.SerializeToString(), origin=None, trace_id=trace_id)


def is_group_notification(msg: message_pb2.MsgData) -> bool:
    """Whether `msg` is a group notification as built here."""
    return (
        int(msg.msg_type) == MsgType.NOTIFICATION
        and int(msg.session_type) == SessionType.GROUP
        and msg.client_msg_id.startswith(NOTIFICATION_ID_PREFIX)
    )


def extra_recipients(msg: message_pb2.MsgData) -> list[UserId]:
    """The users a system group notification must reach besides the current members.

    Empty for anything that is not a well-formed group notification (never raises: a bad
    payload is then delivered to the members only).
    """
    if not is_group_notification(msg):
        return []
    try:
        payload = _decoder.decode(msg.msg_data)
    except msgspec.DecodeError:
        return []
    return [UserId(u) for u in payload.member_id_list if u > 0]
