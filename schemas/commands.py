"""Command ids and the command table: what each command carries and where it goes.

For every command the table (`spec`) says which protobuf message its body is, which command
answers it, which way it travels, and — for what a gate receives from a client — the uplink
topic of DESIGN.md it is published to and what the record key is. The gate reads this table
instead of a hand-written ``if command_id == ...`` chain; a command the table lacks is an
`UnknownCommandError`.

Routing decisions recorded here (DESIGN.md, "Topics"):

- ``im.up.msg`` (key: conversation id) — MsgData sent by clients, and the two extensions that
  concern a conversation's timeline: RevokeReq (a revoke changes the timeline, so it must be
  ordered with the conversation's messages by the timeline's single writer) and TypingNotify
  (transient and never stored, but ordering it with the messages keeps "typing…" from
  arriving after the message it announced, and it needs no topic of its own).
- ``im.up.ack`` (key: user id) — receivers' MsgDataAck, MsgDataReadAck, S2CPushAck.
- ``im.up.query`` (key: user id) — every read-only request: session list, history, latest id,
  by id, group list / info / members, user list, sync, group read state.
- ``im.up.group`` (key: group id; the creator's user id for GroupCreateReq, whose group has
  no id yet) — create, disband, exit, invite, kick.
- ``im.up.c2s`` (key: user id) — C2SUploadReq.
- ``im.up.call`` (key: user id) — VoIP signalling (0x0401, 0x0402, 0x0404, 0x0405). Two
  parties signal one call from two keys, and VoipHeartbeat names no call at all, so the key
  is the sender; the call group keeps every call's state in Redis and changes it atomically
  there (`store.calls`), which is what orders one call's signals.
- no topic — login, logout and heartbeat are handled by the gate itself, and server→client
  commands are never accepted from a client.
- ``im.up.room`` (key: room id) — RoomSendReq: the room group sequences a room's messages, so
  they must travel in one partition, in order.
- no topic — login, logout and heartbeat are handled by the gate itself, and so are joining
  and leaving a room and asking its member count (room membership lives in the gate that
  holds the connection); server→client commands are never accepted from a client.

"""

from __future__ import annotations

from enum import Enum, Flag, IntEnum, StrEnum, unique
from typing import TypeVar

import msgspec
from google.protobuf.message import DecodeError, Message

from schemas.errors import BodyDecodeError, UnknownCommandError
from schemas.frame import encode_frame
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import (
    friend_pb2,
    group_pb2,
    list_pb2,
    login_pb2,
    message_pb2,
    voip_pb2,
)

__all__ = [
    "COMMANDS",
    "Cmd",
    "CommandSpec",
    "Direction",
    "KeyKind",
    "UplinkTopic",
    "build_frame",
    "parse_as",
    "parse_body",
    "spec",
]

M = TypeVar("M", bound=Message)


@unique
class Cmd(IntEnum):
    """Every command id of PROTOCOL.md and of the extensions (0x0801-0x08FF)."""

    # login
    AUTH_TOKEN_REQ = 0x0101
    AUTH_TOKEN_RSP = 0x0102
    LOGOUT_REQ = 0x0103
    LOGOUT_RSP = 0x0104
    HEARTBEAT = 0x0105
    AUTH_REQ = 0x0107
    AUTH_RSP = 0x0108
    # list
    RECENT_SESSION_REQ = 0x0201
    RECENT_SESSION_RSP = 0x0202
    MSG_LIST_REQ = 0x0205
    MSG_LIST_RSP = 0x0206
    # message
    MSG_DATA = 0x0301
    MSG_DATA_ACK = 0x0302
    MSG_READ_ACK = 0x0303
    MSG_READ_NOTIFY = 0x0304
    LATEST_MSG_ID_REQ = 0x0305
    LATEST_MSG_ID_RSP = 0x0306
    MSG_BY_ID_REQ = 0x0307
    MSG_BY_ID_RSP = 0x0308
    # VoIP signalling (consumers/call.py)
    VOIP_INVITE_REQ = 0x0401
    VOIP_INVITE_REPLY = 0x0402
    VOIP_INVITE_REPLY_ACK = 0x0403
    VOIP_HEARTBEAT = 0x0404
    VOIP_BYE_REQ = 0x0405
    VOIP_BYE_RSP = 0x0406
    VOIP_BYE_NOTIFY = 0x0407
    # group (0x050A-0x050F unused: the seed writes 0x0510 after 0x0509)
    GROUP_CREATE_REQ = 0x0501
    GROUP_CREATE_RSP = 0x0502
    GROUP_DISBAND_REQ = 0x0503
    GROUP_DISBAND_RSP = 0x0504
    GROUP_EXIT_REQ = 0x0505
    GROUP_EXIT_RSP = 0x0506
    GROUP_LIST_REQ = 0x0507
    GROUP_LIST_RSP = 0x0508
    GROUP_INFO_REQ = 0x0509
    GROUP_INFO_RSP = 0x0510
    GROUP_INVITE_MEMBER_REQ = 0x0511
    GROUP_INVITE_MEMBER_RSP = 0x0512
    GROUP_KICK_MEMBER_REQ = 0x0513
    GROUP_KICK_MEMBER_RSP = 0x0514
    GROUP_MEMBER_CHANGED_NOTIFY = 0x0515
    GROUP_MEMBER_LIST_REQ = 0x0516
    GROUP_MEMBER_LIST_RSP = 0x0517
    # friend
    FRIEND_QUERY_USER_LIST_REQ = 0x0601
    FRIEND_QUERY_USER_LIST_RSP = 0x0602
    # coffeebus extensions (schemas/proto/coffeebus/ext.proto)
    KICK_NOTIFY = 0x0801
    ERROR_RSP = 0x0802
    SYNC_REQ = 0x0803
    SYNC_RSP = 0x0804
    REVOKE_REQ = 0x0805
    REVOKE_RSP = 0x0806
    REVOKE_NOTIFY = 0x0807
    TYPING_NOTIFY = 0x0808
    C2S_UPLOAD_REQ = 0x0809
    C2S_UPLOAD_RSP = 0x080A
    S2C_PUSH = 0x080B
    S2C_PUSH_ACK = 0x080C
    GROUP_READ_STATE_REQ = 0x080D
    GROUP_READ_STATE_RSP = 0x080E
    GROUP_UPDATE_REQ = 0x080F
    GROUP_UPDATE_RSP = 0x0810
    API_GROUP_CREATE_REQ = 0x0811
    # chat rooms (0x0812-0x081F)
    ROOM_JOIN_REQ = 0x0812
    ROOM_JOIN_RSP = 0x0813
    ROOM_LEAVE_REQ = 0x0814
    ROOM_LEAVE_RSP = 0x0815
    ROOM_SEND_REQ = 0x0816
    ROOM_SEND_RSP = 0x0817
    ROOM_MSG = 0x0818
    ROOM_MEMBER_COUNT_REQ = 0x0819
    ROOM_MEMBER_COUNT_RSP = 0x081A
    ROOM_EXIT_NOTIFY = 0x081B
    DELIVERED_NOTIFY = 0x0820

    @property
    def is_extension(self) -> bool:
        """Whether this is a CoffeeBus extension (a seed client never needs it)."""
        return 0x0801 <= self <= 0x08FF


class Direction(Flag):
    """Which way a command travels."""

    UP = 1  # client -> server
    DOWN = 2  # server -> client
    BOTH = UP | DOWN


@unique
class UplinkTopic(StrEnum):
    """The uplink topics of DESIGN.md a gate publishes client commands to.

    The names must be declared in topology.yaml (a test checks it); use
    `bus.topology` to resolve them at run time.
    """

    MSG = "im.up.msg"
    ACK = "im.up.ack"
    QUERY = "im.up.query"
    GROUP = "im.up.group"
    C2S = "im.up.c2s"
    CALL = "im.up.call"
    ROOM = "im.up.room"


@unique
class KeyKind(Enum):
    """What the record key of an uplink command is (it fixes ordering).

    CONVERSATION: `schemas.ids.conversation_id` of (session type, sender, to_session_id);
    USER: the sender's user id; GROUP: the body's group_id; ROOM: the body's room_id.
    """

    CONVERSATION = "conversation"
    USER = "user"
    GROUP = "group"
    ROOM = "room"


class CommandSpec(msgspec.Struct, frozen=True):
    """How one command is carried and routed."""

    cmd: Cmd
    message: type[Message]
    direction: Direction
    response: Cmd | None = None
    topic: UplinkTopic | None = None
    key: KeyKind | None = None

    @property
    def name(self) -> str:
        """The protobuf message name, e.g. ``coffeechat.MsgData``."""
        return str(self.message.DESCRIPTOR.full_name)


_UP, _DOWN, _BOTH = Direction.UP, Direction.DOWN, Direction.BOTH
_MSG, _ACK, _QUERY, _GROUP, _C2S, _CALL = (
    UplinkTopic.MSG,
    UplinkTopic.ACK,
    UplinkTopic.QUERY,
    UplinkTopic.GROUP,
    UplinkTopic.C2S,
    UplinkTopic.CALL,
)
_CONV, _USER, _GID = KeyKind.CONVERSATION, KeyKind.USER, KeyKind.GROUP


def _up(
    cmd: Cmd, message: type[Message], response: Cmd | None, topic: UplinkTopic, key: KeyKind
) -> CommandSpec:
    return CommandSpec(cmd, message, _UP, response, topic, key)


def _gate(cmd: Cmd, message: type[Message], response: Cmd) -> CommandSpec:
    return CommandSpec(cmd, message, _UP, response)


def _down(cmd: Cmd, message: type[Message]) -> CommandSpec:
    return CommandSpec(cmd, message, _DOWN)


_TABLE: tuple[CommandSpec, ...] = (
    # login: handled by the gate
    _gate(Cmd.AUTH_TOKEN_REQ, login_pb2.AuthTokenReq, Cmd.AUTH_TOKEN_RSP),
    _down(Cmd.AUTH_TOKEN_RSP, login_pb2.AuthTokenRsp),
    _gate(Cmd.LOGOUT_REQ, login_pb2.LogoutReq, Cmd.LOGOUT_RSP),
    _down(Cmd.LOGOUT_RSP, login_pb2.LogoutRsp),
    # The seed gate answers every heartbeat with a heartbeat; either side may send one.
    CommandSpec(Cmd.HEARTBEAT, login_pb2.HeartBeat, _BOTH, Cmd.HEARTBEAT),
    _gate(Cmd.AUTH_REQ, login_pb2.AuthReq, Cmd.AUTH_RSP),
    _down(Cmd.AUTH_RSP, login_pb2.AuthRsp),
    # list
    _up(
        Cmd.RECENT_SESSION_REQ,
        list_pb2.RecentContactSessionReq,
        Cmd.RECENT_SESSION_RSP,
        _QUERY,
        _USER,
    ),
    _down(Cmd.RECENT_SESSION_RSP, list_pb2.RecentContactSessionRsp),
    _up(Cmd.MSG_LIST_REQ, list_pb2.GetMsgListReq, Cmd.MSG_LIST_RSP, _QUERY, _USER),
    _down(Cmd.MSG_LIST_RSP, list_pb2.GetMsgListRsp),
    # message: MsgData goes up from the sender and down to receivers; MsgDataAck goes down to
    # the sender once stored and up from a receiver on receipt.
    CommandSpec(Cmd.MSG_DATA, message_pb2.MsgData, _BOTH, Cmd.MSG_DATA_ACK, _MSG, _CONV),
    CommandSpec(Cmd.MSG_DATA_ACK, message_pb2.MsgDataAck, _BOTH, None, _ACK, _USER),
    _up(Cmd.MSG_READ_ACK, message_pb2.MsgDataReadAck, None, _ACK, _USER),
    _down(Cmd.MSG_READ_NOTIFY, message_pb2.MsgDataReadNotify),
    _up(Cmd.LATEST_MSG_ID_REQ, message_pb2.GetLatestMsgIdReq, Cmd.LATEST_MSG_ID_RSP, _QUERY, _USER),
    _down(Cmd.LATEST_MSG_ID_RSP, message_pb2.GetLatestMsgIdRsp),
    _up(Cmd.MSG_BY_ID_REQ, message_pb2.GetMsgByIdReq, Cmd.MSG_BY_ID_RSP, _QUERY, _USER),
    _down(Cmd.MSG_BY_ID_RSP, message_pb2.GetMsgByIdRsp),
    # VoIP signalling: the invite goes up from the caller and down to the callee's devices
    # (answered with a 100 InviteReply); a callee device's InviteReply goes up and is
    # forwarded down to the caller (a 200 is answered with InviteReplyAck).
    CommandSpec(
        Cmd.VOIP_INVITE_REQ, voip_pb2.VoipInviteReq, _BOTH, Cmd.VOIP_INVITE_REPLY, _CALL, _USER
    ),
    CommandSpec(
        Cmd.VOIP_INVITE_REPLY,
        voip_pb2.VoipInviteReply,
        _BOTH,
        Cmd.VOIP_INVITE_REPLY_ACK,
        _CALL,
        _USER,
    ),
    _down(Cmd.VOIP_INVITE_REPLY_ACK, voip_pb2.VoipInviteReplyAck),
    _up(Cmd.VOIP_HEARTBEAT, voip_pb2.VoipHeartbeat, None, _CALL, _USER),
    _up(Cmd.VOIP_BYE_REQ, voip_pb2.VoipByeReq, Cmd.VOIP_BYE_RSP, _CALL, _USER),
    _down(Cmd.VOIP_BYE_RSP, voip_pb2.VoipByeRsp),
    _down(Cmd.VOIP_BYE_NOTIFY, voip_pb2.VoipByeNotify),
    # group
    _up(Cmd.GROUP_CREATE_REQ, group_pb2.GroupCreateReq, Cmd.GROUP_CREATE_RSP, _GROUP, _USER),
    _down(Cmd.GROUP_CREATE_RSP, group_pb2.GroupCreateRsp),
    _up(Cmd.GROUP_DISBAND_REQ, group_pb2.GroupDisbandingReq, Cmd.GROUP_DISBAND_RSP, _GROUP, _GID),
    _down(Cmd.GROUP_DISBAND_RSP, group_pb2.GroupDisbandingRsp),
    _up(Cmd.GROUP_EXIT_REQ, group_pb2.GroupExitReq, Cmd.GROUP_EXIT_RSP, _GROUP, _GID),
    _down(Cmd.GROUP_EXIT_RSP, group_pb2.GroupExitRsp),
    _up(Cmd.GROUP_LIST_REQ, group_pb2.GroupListReq, Cmd.GROUP_LIST_RSP, _QUERY, _USER),
    _down(Cmd.GROUP_LIST_RSP, group_pb2.GroupListRsp),
    _up(Cmd.GROUP_INFO_REQ, group_pb2.GroupInfoReq, Cmd.GROUP_INFO_RSP, _QUERY, _USER),
    _down(Cmd.GROUP_INFO_RSP, group_pb2.GroupInfoRsp),
    _up(
        Cmd.GROUP_INVITE_MEMBER_REQ,
        group_pb2.GroupInviteMemberReq,
        Cmd.GROUP_INVITE_MEMBER_RSP,
        _GROUP,
        _GID,
    ),
    _down(Cmd.GROUP_INVITE_MEMBER_RSP, group_pb2.GroupInviteMemberRsp),
    _up(
        Cmd.GROUP_KICK_MEMBER_REQ,
        group_pb2.GroupKickOutMemberReq,
        Cmd.GROUP_KICK_MEMBER_RSP,
        _GROUP,
        _GID,
    ),
    _down(Cmd.GROUP_KICK_MEMBER_RSP, group_pb2.GroupKickOutMemberRsp),
    _down(Cmd.GROUP_MEMBER_CHANGED_NOTIFY, group_pb2.GroupMemberChangedNotify),
    _up(
        Cmd.GROUP_MEMBER_LIST_REQ,
        group_pb2.GroupMemberListReq,
        Cmd.GROUP_MEMBER_LIST_RSP,
        _QUERY,
        _USER,
    ),
    _down(Cmd.GROUP_MEMBER_LIST_RSP, group_pb2.GroupMemberListRsp),
    # friend
    _up(
        Cmd.FRIEND_QUERY_USER_LIST_REQ,
        friend_pb2.FriendQueryUserListReq,
        Cmd.FRIEND_QUERY_USER_LIST_RSP,
        _QUERY,
        _USER,
    ),
    _down(Cmd.FRIEND_QUERY_USER_LIST_RSP, friend_pb2.FriendQueryUserListRsp),
    # extensions
    _down(Cmd.KICK_NOTIFY, ext_pb2.KickNotify),
    _down(Cmd.ERROR_RSP, ext_pb2.ErrorRsp),
    _up(Cmd.SYNC_REQ, ext_pb2.SyncReq, Cmd.SYNC_RSP, _QUERY, _USER),
    _down(Cmd.SYNC_RSP, ext_pb2.SyncRsp),
    _up(Cmd.REVOKE_REQ, ext_pb2.RevokeReq, Cmd.REVOKE_RSP, _MSG, _CONV),
    _down(Cmd.REVOKE_RSP, ext_pb2.RevokeRsp),
    _down(Cmd.REVOKE_NOTIFY, ext_pb2.RevokeNotify),
    CommandSpec(Cmd.TYPING_NOTIFY, ext_pb2.TypingNotify, _BOTH, None, _MSG, _CONV),
    _up(Cmd.C2S_UPLOAD_REQ, ext_pb2.C2SUploadReq, Cmd.C2S_UPLOAD_RSP, _C2S, _USER),
    _down(Cmd.C2S_UPLOAD_RSP, ext_pb2.C2SUploadRsp),
    _down(Cmd.S2C_PUSH, ext_pb2.S2CPush),
    _up(Cmd.S2C_PUSH_ACK, ext_pb2.S2CPushAck, None, _ACK, _USER),
    _up(
        Cmd.GROUP_READ_STATE_REQ,
        ext_pb2.GroupReadStateReq,
        Cmd.GROUP_READ_STATE_RSP,
        _QUERY,
        _USER,
    ),
    _down(Cmd.GROUP_READ_STATE_RSP, ext_pb2.GroupReadStateRsp),
    _up(Cmd.GROUP_UPDATE_REQ, ext_pb2.GroupUpdateReq, Cmd.GROUP_UPDATE_RSP, _GROUP, _GID),
    _down(Cmd.GROUP_UPDATE_RSP, ext_pb2.GroupUpdateRsp),
    # The server API's create (0x0811): keyed by the group id the API allocated. A gate
    # forwards it like any request; the group consumer refuses it from a client.
    _up(Cmd.API_GROUP_CREATE_REQ, ext_pb2.ApiGroupCreateReq, Cmd.GROUP_CREATE_RSP, _GROUP, _GID),
    # chat rooms: join, leave and member count are answered by the gate (gateway/rooms.py);
    # a send goes to the room group, keyed by room.
    _gate(Cmd.ROOM_JOIN_REQ, ext_pb2.RoomJoinReq, Cmd.ROOM_JOIN_RSP),
    _down(Cmd.ROOM_JOIN_RSP, ext_pb2.RoomJoinRsp),
    _gate(Cmd.ROOM_LEAVE_REQ, ext_pb2.RoomLeaveReq, Cmd.ROOM_LEAVE_RSP),
    _down(Cmd.ROOM_LEAVE_RSP, ext_pb2.RoomLeaveRsp),
    _up(Cmd.ROOM_SEND_REQ, ext_pb2.RoomSendReq, Cmd.ROOM_SEND_RSP, UplinkTopic.ROOM, KeyKind.ROOM),
    _down(Cmd.ROOM_SEND_RSP, ext_pb2.RoomSendRsp),
    _down(Cmd.ROOM_MSG, ext_pb2.RoomMsg),
    _gate(Cmd.ROOM_MEMBER_COUNT_REQ, ext_pb2.RoomMemberCountReq, Cmd.ROOM_MEMBER_COUNT_RSP),
    _down(Cmd.ROOM_MEMBER_COUNT_RSP, ext_pb2.RoomMemberCountRsp),
    _down(Cmd.ROOM_EXIT_NOTIFY, ext_pb2.RoomExitNotify),
    _down(Cmd.DELIVERED_NOTIFY, ext_pb2.DeliveredNotify),
)

#: The command table, by command id.
COMMANDS: dict[int, CommandSpec] = {s.cmd: s for s in _TABLE}


def spec(cmd: int) -> CommandSpec:
    """The table entry of a command id; `UnknownCommandError` if it has none."""
    try:
        return COMMANDS[cmd]
    except KeyError:
        try:
            known = Cmd(cmd)
        except ValueError:
            raise UnknownCommandError(f"unknown command id 0x{cmd:04X}", command_id=cmd) from None
        raise UnknownCommandError(
            f"command {known.name} (0x{cmd:04X}) is not supported", command_id=cmd
        ) from None


def parse_body(cmd: int, body: bytes) -> Message:
    """Parse a frame body as the message of its command.

    Raises `UnknownCommandError` for a command without a table entry and `BodyDecodeError`
    when the bytes are not a valid encoding of the command's message.
    """
    message_type = spec(cmd).message
    try:
        return message_type.FromString(body)
    except DecodeError as exc:
        raise BodyDecodeError(
            f"body of {len(body)} bytes is not a valid "
            f"{message_type.DESCRIPTOR.full_name} (command 0x{cmd:04X}): {exc}",
            command_id=cmd,
        ) from exc


def parse_as(cmd: int, body: bytes, message_type: type[M]) -> M:
    """`parse_body` for a caller that knows which message it expects (typed result).

    Raises `ValueError` if `message_type` is not the command's message: that is a bug in
    the caller, not bad input.
    """
    expected = spec(cmd).message
    if expected is not message_type:
        raise ValueError(
            f"command 0x{cmd:04X} carries {expected.DESCRIPTOR.full_name}, "
            f"not {message_type.DESCRIPTOR.full_name}"
        )
    message = parse_body(cmd, body)
    assert isinstance(message, message_type)
    return message


def build_frame(cmd: Cmd, seq: int, message: Message) -> bytes:
    """Encode `message` as a frame of command `cmd`, checking it is the command's message."""
    expected = spec(cmd).message
    if type(message) is not expected:
        raise ValueError(
            f"command {cmd.name} carries {expected.DESCRIPTOR.full_name}, "
            f"not {message.DESCRIPTOR.full_name}"
        )
    return encode_frame(cmd, seq, message.SerializeToString())
