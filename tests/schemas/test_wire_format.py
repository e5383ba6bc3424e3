"""The .proto files say exactly what PROTOCOL.md says, down to the bytes on the wire.

Two independent checks:

1. `SPEC` below is PROTOCOL.md's "Messages" section transcribed (its "same 1-3" shorthands
   expanded, and names added where the page gives only a type); every message descriptor
   must have exactly those field numbers, types and repetition.
2. Frames encoded by the project are taken apart by a minimal protobuf wire-format reader
   written here from the encoding spec (tag = field << 3 | wire type, base-128 varints,
   length-delimited), without the protobuf library, and must show the field numbers and
   wire types PROTOCOL.md implies.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from schemas.commands import Cmd, build_frame
from schemas.frame import HEADER_SIZE, decode_frame
from schemas.pb.coffeechat import (
    base_pb2,
    friend_pb2,
    group_pb2,
    list_pb2,
    login_pb2,
    message_pb2,
    voip_pb2,
)

SPEC: dict[str, str] = {
    # Shared
    "UserInfo": "1 u64 user_id, 2 string nick_name, 3 string nick_name_spell, 9 string phone, "
    "10 string avatar_url, 11 string attach_info",
    "ContactSessionInfo": "1 u64 session_id, 2 SessionType session_type, 3 SessionStatusType "
    "session_status, 4 u32 unread_cnt, 5 u32 updated_time, 6 string msg_id, 7 u64 "
    "server_msg_id, 8 u32 msg_time_stamp, 9 bytes msg_data, 10 MsgType msg_type, 11 u64 "
    "msg_from_user_id, 12 MsgStatus msg_status, 13 string msg_attach, 14 string extend_data, "
    "15 bool is_robot_session",
    "MsgInfo": "1 string client_msg_id, 2 u64 server_msg_id, 3 ResCode msg_res_code, "
    "4 MsgFeature msg_feature, 5 SessionType session_type, 6 u64 from_user_id, 7 u64 "
    "to_session_id, 8 u32 create_time, 9 MsgType msg_type, 10 MsgStatus msg_status, "
    "11 bytes msg_data, 12 string attach, 13 ClientType sender_client_type",
    # Login
    "AuthTokenReq": "1 u64 user_id, 2 string nick_name, 3 string user_token, 4 ClientType "
    "client_type, 5 string client_version",
    "AuthTokenRsp": "1 u32 server_time, 2 ErrorCode result_code, 3 string result_string, "
    "4 UserInfo user_info",
    "AuthRsp": "1 u32 server_time, 2 ErrorCode result_code, 3 string result_string, "
    "4 UserInfo user_info",
    "AuthReq": "1 string user_name, 2 string user_pwd, 3 ClientType client_type, 4 string "
    "client_version",
    "LogoutReq": "1 u64 user_id, 2 ClientType client_type",
    "LogoutRsp": "1 u32 result_code",
    "HeartBeat": "",
    # List
    "RecentContactSessionReq": "1 u64 user_id, 2 u32 latest_update_time",
    "RecentContactSessionRsp": "1 u64 user_id, 2 u32 unread_counts, 3 repeated "
    "ContactSessionInfo contact_session_list",
    "GetMsgListReq": "1 u64 user_id, 2 SessionType session_type, 3 u64 session_id, 4 u64 "
    "end_msg_id, 6 u32 limit_count",
    "GetMsgListRsp": "1 u64 user_id, 2 SessionType session_type, 3 u64 session_id, 4 u64 "
    "end_msg_id, 6 repeated MsgInfo msg_list",
    # Message
    "MsgData": "1 u64 from_user_id, 2 string from_nick_name, 3 u64 to_session_id, 4 string "
    "client_msg_id, 5 u64 server_msg_id, 6 int32 create_time, 7 MsgType msg_type, "
    "8 SessionType session_type, 9 bytes msg_data",
    "MsgDataAck": "1 u64 from_user_id, 2 u64 to_session_id, 3 string client_msg_id, 4 u64 "
    "server_msg_id, 5 ResCode res_code, 6 SessionType session_type, 7 int32 create_time",
    "MsgDataReadAck": "1 u64 user_id, 2 u64 session_id, 3 u64 msg_id, 4 SessionType session_type",
    "MsgDataReadNotify": "1 u64 user_id, 2 u64 session_id, 3 u64 msg_id, 4 SessionType "
    "session_type",
    "GetLatestMsgIdReq": "1 u64 user_id, 2 SessionType session_type, 3 u64 session_id",
    "GetLatestMsgIdRsp": "1 u64 user_id, 2 SessionType session_type, 3 u64 session_id, "
    "4 string latest_msg_id",
    "GetMsgByIdReq": "1 u64 user_id, 2 SessionType session_type, 3 u64 session_id, 4 repeated "
    "string msg_id_list",
    "GetMsgByIdRsp": "1 u64 user_id, 2 SessionType session_type, 3 u64 session_id, 4 repeated "
    "MsgInfo msg_list",
    # Group
    "GroupInfo": "1 u64 group_id, 2 string group_name, 3 GroupType group_type, "
    "4 GroupJoinModel join_model, 5 GroupBeInviteMode be_invite_model, 6 GroupMuteModel "
    "mute_model, 7 u64 group_owner_id, 8 u32 create_time, 9 u32 update_time, 10 string "
    "group_intro, 11 string announcement, 12 string group_avatar",
    "GroupVersionInfo": "1 u64 group_id, 2 u32 group_version",
    "GroupCreateReq": "1 u64 user_id, 2 string group_name, 3 repeated u64 member_id_list",
    "GroupCreateRsp": "1 u64 user_id, 2 u32 result_code, 3 GroupInfo group_info, 4 repeated "
    "u64 member_id_list, 10 bytes attach_notification_msg",
    "GroupDisbandingReq": "1 u64 user_id, 2 u64 group_id",
    "GroupExitReq": "1 u64 user_id, 2 u64 group_id",
    "GroupDisbandingRsp": "1 u64 user_id, 2 u64 group_id, 3 u32 result_code, 10 bytes "
    "attach_notification_msg",
    "GroupExitRsp": "1 u64 user_id, 2 u64 group_id, 3 u32 result_code, 10 bytes "
    "attach_notification_msg",
    "GroupListReq": "1 u64 user_id",
    "GroupListRsp": "1 u64 user_id, 2 repeated GroupVersionInfo group_version_list",
    "GroupInfoReq": "1 u64 user_id, 2 repeated GroupVersionInfo group_version_list",
    "GroupInfoRsp": "1 u64 user_id, 2 u32 result_code, 3 repeated GroupInfo group_info_list",
    "GroupInviteMemberReq": "1 u64 user_id, 2 u64 group_id, 3 repeated u64 member_id_list",
    "GroupKickOutMemberReq": "1 u64 user_id, 2 u64 group_id, 3 repeated u64 member_id_list",
    "GroupInviteMemberRsp": "1 u64 user_id, 2 u64 group_id, 3 u32 result_code, 10 bytes "
    "attach_notification_msg",
    "GroupKickOutMemberRsp": "1 u64 user_id, 2 u64 group_id, 3 u32 result_code, 10 bytes "
    "attach_notification_msg",
    "GroupMemberListReq": "1 u64 user_id, 2 u64 group_id",
    "GroupMemberListRsp": "1 u64 user_id, 2 u64 group_id, 3 repeated u64 member_id_list",
    "GroupMemberChangedNotify": "1 u64 user_id, 2 u64 group_id, 3 repeated "
    "GroupMemberChangedInfo changed_list",
    "GroupMemberChangedInfo": "1 u64 user_id, 2 GroupMemberChangedType type",
    # Friend
    "FriendQueryUserListReq": "1 u64 user_id",
    "FriendQueryUserListRsp": "1 u64 user_id, 2 repeated UserInfo user_info_list",
    # VoIP signalling
    "ChannelInfo": "1 string channel_name, 2 string channel_token, 3 u64 creator_id",
    "VoipInviteReq": "1 u64 creator_user_id, 2 repeated u64 invite_user_list, 3 VoipInviteType "
    "invite_type, 4 ChannelInfo channel_info",
    "VoipInviteReply": "1 u64 user_id, 2 InviteRspCode rsp_code, 3 ChannelInfo channel_info",
    "VoipInviteReplyAck": "1 ChannelInfo channel_info",
    "VoipHeartbeat": "",
    "VoipByeReq": "1 u64 local_call_time_len, 2 u64 user_id, 3 ChannelInfo channel_info, "
    "4 VoipByeReason bye_reason",
    "VoipByeRsp": "1 ErrorCode error_code",
    "VoipByeNotify": "1 u64 user_id, 2 ChannelInfo channel_info, 3 VoipByeReason bye_reason",
}

SEED_MODULES = (base_pb2, login_pb2, list_pb2, message_pb2, group_pb2, friend_pb2, voip_pb2)

_SCALARS = {
    "u64": FieldDescriptor.TYPE_UINT64,
    "u32": FieldDescriptor.TYPE_UINT32,
    "int32": FieldDescriptor.TYPE_INT32,
    "string": FieldDescriptor.TYPE_STRING,
    "bytes": FieldDescriptor.TYPE_BYTES,
    "bool": FieldDescriptor.TYPE_BOOL,
}

# Wire types (protobuf encoding spec): 0 varint, 1 i64, 2 length-delimited, 5 i32.
VARINT, I64, LEN, I32 = 0, 1, 2, 5


class SpecField(NamedTuple):
    number: int
    type_name: str
    name: str
    repeated: bool


def _parse_spec(text: str) -> list[SpecField]:
    fields = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        words = item.split()
        repeated = words[1] == "repeated"
        if repeated:
            del words[1]
        number, type_name, name = words
        fields.append(SpecField(int(number), type_name, name, repeated))
    return fields


def _all_seed_messages() -> dict[str, Descriptor]:
    return {
        name: descriptor
        for module in SEED_MODULES
        for name, descriptor in module.DESCRIPTOR.message_types_by_name.items()
    }


def _wire_type_of(type_name: str) -> int:
    # Integers, bools and enums are varints; strings, bytes and messages length-delimited.
    if type_name in {"u64", "u32", "int32", "bool"}:
        return VARINT
    if any(type_name in m.DESCRIPTOR.enum_types_by_name for m in (base_pb2, voip_pb2)):
        return VARINT
    return LEN


def test_every_seed_message_is_specified_and_nothing_else() -> None:
    assert set(_all_seed_messages()) == set(SPEC)


@pytest.mark.parametrize("name", sorted(SPEC))
def test_descriptor_matches_protocol_md(name: str) -> None:
    descriptor = _all_seed_messages()[name]
    expected = _parse_spec(SPEC[name])
    assert [f.number for f in descriptor.fields] == [f.number for f in expected]
    for want in expected:
        got = descriptor.fields_by_number[want.number]
        assert got.name == want.name
        assert got.is_repeated == want.repeated, want
        if want.type_name in _SCALARS:
            assert got.type == _SCALARS[want.type_name], want
        elif got.type == FieldDescriptor.TYPE_ENUM:
            assert got.enum_type is not None
            assert got.enum_type.name == want.type_name, want
        else:
            assert got.type == FieldDescriptor.TYPE_MESSAGE, want
            assert got.message_type is not None
            assert got.message_type.name == want.type_name, want


# --- a minimal protobuf wire-format reader ------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        assert shift < 70, "varint longer than 10 bytes"


def read_fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field of a serialized message, in order."""
    fields: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        value: int | bytes
        if wire_type == VARINT:
            value, pos = _varint(data, pos)
        elif wire_type == LEN:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
            assert len(value) == size, "truncated length-delimited field"
        elif wire_type == I64:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire_type == I32:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise AssertionError(f"unexpected wire type {wire_type}")
        fields.append((number, wire_type, value))
    return fields


def _expected_wire(name: str) -> dict[int, int]:
    return {f.number: _wire_type_of(f.type_name) for f in _parse_spec(SPEC[name])}


def _packed_varints(data: bytes) -> list[int]:
    values, pos = [], 0
    while pos < len(data):
        value, pos = _varint(data, pos)
        values.append(value)
    return values


def _frame_fields(cmd: Cmd, message: Message) -> list[tuple[int, int, int | bytes]]:
    frame = decode_frame(build_frame(cmd, 42, message))
    assert frame.command_id == cmd
    assert frame.seq == 42
    return read_fields(frame.body)


def test_reader_on_the_golden_body() -> None:
    # The reader itself, on bytes from the encoding spec: 150 = 0x96 0x01.
    assert read_fields(b"\x08\x96\x01\x12\x02hi") == [(1, VARINT, 150), (2, LEN, b"hi")]


def test_auth_token_req_on_the_wire() -> None:
    fields = _frame_fields(
        Cmd.AUTH_TOKEN_REQ,
        login_pb2.AuthTokenReq(
            user_id=2**64 - 1,
            nick_name="n",
            user_token="t",
            client_type=base_pb2.CLIENT_TYPE_MAC_OS,
            client_version="v",
        ),
    )
    assert fields == [
        (1, VARINT, 2**64 - 1),
        (2, LEN, b"n"),
        (3, LEN, b"t"),
        (4, VARINT, 6),
        (5, LEN, b"v"),
    ]
    assert {n: w for n, w, _ in fields} == _expected_wire("AuthTokenReq")


def test_msg_data_on_the_wire() -> None:
    fields = _frame_fields(
        Cmd.MSG_DATA,
        message_pb2.MsgData(
            from_user_id=1,
            from_nick_name="a",
            to_session_id=2,
            client_msg_id="uuid",
            server_msg_id=3,
            create_time=-1,  # int32: negative values are 10-byte varints
            msg_type=base_pb2.MSG_TYPE_AVCHAT,
            session_type=base_pb2.SESSION_TYPE_GROUP,
            msg_data=b"\x00\xff",
        ),
    )
    assert fields == [
        (1, VARINT, 1),
        (2, LEN, b"a"),
        (3, VARINT, 2),
        (4, LEN, b"uuid"),
        (5, VARINT, 3),
        (6, VARINT, 2**64 - 1),
        (7, VARINT, 10),
        (8, VARINT, 2),
        (9, LEN, b"\x00\xff"),
    ]
    assert {n: w for n, w, _ in fields} == _expected_wire("MsgData")


def test_msg_data_ack_on_the_wire() -> None:
    fields = _frame_fields(
        Cmd.MSG_DATA_ACK,
        message_pb2.MsgDataAck(
            from_user_id=5,
            to_session_id=6,
            client_msg_id="c",
            server_msg_id=7,
            res_code=base_pb2.RES_CODE_OK,
            session_type=base_pb2.SESSION_TYPE_SINGLE,
            create_time=1_700_000_000,
        ),
    )
    assert [(n, w) for n, w, _ in fields] == sorted(_expected_wire("MsgDataAck").items())
    assert fields[4] == (5, VARINT, 1)
    assert fields[6] == (7, VARINT, 1_700_000_000)


def test_contact_session_info_on_the_wire() -> None:
    session = base_pb2.ContactSessionInfo(
        session_id=1,
        session_type=base_pb2.SESSION_TYPE_SINGLE,
        session_status=base_pb2.SESSION_STATUS_TYPE_DELETE,
        unread_cnt=4,
        updated_time=5,
        msg_id="m",
        server_msg_id=7,
        msg_time_stamp=8,
        msg_data=b"d",
        msg_type=base_pb2.MSG_TYPE_TIPS,
        msg_from_user_id=11,
        msg_status=base_pb2.MSG_STATUS_FAILED,
        msg_attach="a",
        extend_data="e",
        is_robot_session=True,
    )
    fields = _frame_fields(
        Cmd.RECENT_SESSION_RSP,
        list_pb2.RecentContactSessionRsp(
            user_id=1, unread_counts=9, contact_session_list=[session, session]
        ),
    )
    assert fields[:2] == [(1, VARINT, 1), (2, VARINT, 9)]
    assert [(n, w) for n, w, _ in fields[2:]] == [(3, LEN), (3, LEN)]
    inner = fields[2][2]
    assert isinstance(inner, bytes)
    inner_fields = read_fields(inner)
    assert [(n, w) for n, w, _ in inner_fields] == sorted(
        _expected_wire("ContactSessionInfo").items()
    )
    assert inner_fields[2] == (3, VARINT, 2)
    assert inner_fields[14] == (15, VARINT, 1)


def test_get_msg_list_req_on_the_wire() -> None:
    fields = _frame_fields(
        Cmd.MSG_LIST_REQ,
        list_pb2.GetMsgListReq(
            user_id=1,
            session_type=base_pb2.SESSION_TYPE_GROUP,
            session_id=3,
            end_msg_id=4,
            limit_count=20,
        ),
    )
    # Field 5 does not exist: limit_count is 6.
    assert fields == [
        (1, VARINT, 1),
        (2, VARINT, 2),
        (3, VARINT, 3),
        (4, VARINT, 4),
        (6, VARINT, 20),
    ]


def test_group_create_req_on_the_wire() -> None:
    fields = _frame_fields(
        Cmd.GROUP_CREATE_REQ,
        group_pb2.GroupCreateReq(user_id=1, group_name="g", member_id_list=[2, 300]),
    )
    # proto3 packs repeated scalars: one length-delimited field of varints.
    assert fields[:2] == [(1, VARINT, 1), (2, LEN, b"g")]
    number, wire_type, packed = fields[2]
    assert (number, wire_type) == (3, LEN)
    assert isinstance(packed, bytes)
    assert _packed_varints(packed) == [2, 300]


def test_group_create_rsp_notification_is_field_10() -> None:
    fields = _frame_fields(
        Cmd.GROUP_CREATE_RSP,
        group_pb2.GroupCreateRsp(
            user_id=1,
            result_code=0,
            group_info=group_pb2.GroupInfo(group_id=8, group_type=base_pb2.GROUP_TYPE_SUPER),
            member_id_list=[1],
            attach_notification_msg=b"n",
        ),
    )
    assert [(n, w) for n, w, _ in fields] == [(1, VARINT), (3, LEN), (4, LEN), (10, LEN)]
    group_info = fields[1][2]
    assert isinstance(group_info, bytes)
    assert read_fields(group_info) == [(1, VARINT, 8), (3, VARINT, 2)]


def test_group_member_changed_notify_on_the_wire() -> None:
    fields = _frame_fields(
        Cmd.GROUP_MEMBER_CHANGED_NOTIFY,
        group_pb2.GroupMemberChangedNotify(
            user_id=1,
            group_id=2,
            changed_list=[
                group_pb2.GroupMemberChangedInfo(
                    user_id=3, type=base_pb2.GROUP_MEMBER_CHANGED_TYPE_DEL
                )
            ],
        ),
    )
    assert fields[:2] == [(1, VARINT, 1), (2, VARINT, 2)]
    number, wire_type, changed = fields[2]
    assert (number, wire_type) == (3, LEN)
    assert isinstance(changed, bytes)
    assert read_fields(changed) == [(1, VARINT, 3), (2, VARINT, 2)]


def test_heartbeat_is_a_bare_header() -> None:
    data = build_frame(Cmd.HEARTBEAT, 1, login_pb2.HeartBeat())
    assert len(data) == HEADER_SIZE
    assert read_fields(decode_frame(data).body) == []


def test_voip_invite_req_on_the_wire() -> None:
    fields = _frame_fields(
        Cmd.VOIP_INVITE_REQ,
        voip_pb2.VoipInviteReq(
            creator_user_id=7,
            invite_user_list=[8],
            invite_type=voip_pb2.VOIP_INVITE_TYPE_VIDEO_CALL,
            channel_info=voip_pb2.ChannelInfo(channel_name="c", channel_token="t", creator_id=7),
        ),
    )
    # proto3 packs repeated scalars: field 2 is one length-delimited run of varints.
    assert fields == [
        (1, VARINT, 7),
        (2, LEN, b"\x08"),
        (3, VARINT, 2),
        (4, LEN, b"\x0a\x01c\x12\x01t\x18\x07"),
    ]
    assert _packed_varints(b"\x08") == [8]


def test_voip_enums_match_protocol_md() -> None:
    # PROTOCOL.md "VoIP signalling": the enum values are the contract.
    def values(name: str) -> list[int]:
        return [v.number for v in voip_pb2.DESCRIPTOR.enum_types_by_name[name].values]

    assert values("VoipInviteType") == [0, 1, 2]
    assert values("InviteRspCode") == [0, 100, 180, 200]
    assert values("VoipByeReason") == [0, 1, 2, 3, 4, 5]
