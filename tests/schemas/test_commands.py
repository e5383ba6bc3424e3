"""The command table: complete, consistent with the .proto files, DESIGN.md and topology.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from schemas.commands import (
    COMMANDS,
    Cmd,
    Direction,
    KeyKind,
    UplinkTopic,
    build_frame,
    parse_as,
    parse_body,
    spec,
)
from schemas.errors import BodyDecodeError, CommandError, ProtocolError, UnknownCommandError
from schemas.frame import decode_frame
from schemas.generate import PROTO_DIR
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import login_pb2, message_pb2

REPO = Path(__file__).resolve().parents[2]
GATE_HANDLED = {
    Cmd.AUTH_TOKEN_REQ,
    Cmd.AUTH_REQ,
    Cmd.LOGOUT_REQ,
    Cmd.HEARTBEAT,
    # chat room membership lives in the gate (gateway/rooms.py)
    Cmd.ROOM_JOIN_REQ,
    Cmd.ROOM_LEAVE_REQ,
    Cmd.ROOM_MEMBER_COUNT_REQ,
}

# DESIGN.md "Topics", plus the routing decisions of schemas/commands.py.
EXPECTED_TOPICS = {
    UplinkTopic.MSG: {Cmd.MSG_DATA, Cmd.REVOKE_REQ, Cmd.TYPING_NOTIFY},
    UplinkTopic.ACK: {Cmd.MSG_DATA_ACK, Cmd.MSG_READ_ACK, Cmd.S2C_PUSH_ACK},
    UplinkTopic.GROUP: {
        Cmd.GROUP_CREATE_REQ,
        Cmd.GROUP_DISBAND_REQ,
        Cmd.GROUP_EXIT_REQ,
        Cmd.GROUP_INVITE_MEMBER_REQ,
        Cmd.GROUP_KICK_MEMBER_REQ,
        Cmd.GROUP_UPDATE_REQ,
        Cmd.API_GROUP_CREATE_REQ,
    },
    UplinkTopic.C2S: {Cmd.C2S_UPLOAD_REQ},
    UplinkTopic.CALL: {
        Cmd.VOIP_INVITE_REQ,
        Cmd.VOIP_INVITE_REPLY,
        Cmd.VOIP_HEARTBEAT,
        Cmd.VOIP_BYE_REQ,
    },
    UplinkTopic.ROOM: {Cmd.ROOM_SEND_REQ},
    UplinkTopic.QUERY: {
        Cmd.RECENT_SESSION_REQ,
        Cmd.MSG_LIST_REQ,
        Cmd.LATEST_MSG_ID_REQ,
        Cmd.MSG_BY_ID_REQ,
        Cmd.GROUP_LIST_REQ,
        Cmd.GROUP_INFO_REQ,
        Cmd.GROUP_MEMBER_LIST_REQ,
        Cmd.FRIEND_QUERY_USER_LIST_REQ,
        Cmd.SYNC_REQ,
        Cmd.GROUP_READ_STATE_REQ,
    },
}
# What the key of each topic is (DESIGN.md), with GroupCreateReq's documented exception.
TOPIC_KEYS = {
    UplinkTopic.MSG: KeyKind.CONVERSATION,
    UplinkTopic.ACK: KeyKind.USER,
    UplinkTopic.QUERY: KeyKind.USER,
    UplinkTopic.GROUP: KeyKind.GROUP,
    UplinkTopic.C2S: KeyKind.USER,
    UplinkTopic.CALL: KeyKind.USER,
    UplinkTopic.ROOM: KeyKind.ROOM,
}


def test_every_command_has_a_spec() -> None:
    assert set(COMMANDS) == set(Cmd)
    for cmd, entry in COMMANDS.items():
        assert entry.cmd == cmd


# PROTOCOL.md "Command ids", transcribed (0x0401..0x0407 in the order the page lists them).
PROTOCOL_MD_IDS = {
    "AUTH_TOKEN_REQ": 0x0101, "AUTH_TOKEN_RSP": 0x0102, "LOGOUT_REQ": 0x0103,
    "LOGOUT_RSP": 0x0104, "HEARTBEAT": 0x0105, "AUTH_REQ": 0x0107, "AUTH_RSP": 0x0108,
    "RECENT_SESSION_REQ": 0x0201, "RECENT_SESSION_RSP": 0x0202,
    "MSG_LIST_REQ": 0x0205, "MSG_LIST_RSP": 0x0206,
    "MSG_DATA": 0x0301, "MSG_DATA_ACK": 0x0302, "MSG_READ_ACK": 0x0303,
    "MSG_READ_NOTIFY": 0x0304, "LATEST_MSG_ID_REQ": 0x0305, "LATEST_MSG_ID_RSP": 0x0306,
    "MSG_BY_ID_REQ": 0x0307, "MSG_BY_ID_RSP": 0x0308,
    "VOIP_INVITE_REQ": 0x0401, "VOIP_INVITE_REPLY": 0x0402, "VOIP_INVITE_REPLY_ACK": 0x0403,
    "VOIP_HEARTBEAT": 0x0404, "VOIP_BYE_REQ": 0x0405, "VOIP_BYE_RSP": 0x0406,
    "VOIP_BYE_NOTIFY": 0x0407,
    "GROUP_CREATE_REQ": 0x0501, "GROUP_CREATE_RSP": 0x0502,
    "GROUP_DISBAND_REQ": 0x0503, "GROUP_DISBAND_RSP": 0x0504,
    "GROUP_EXIT_REQ": 0x0505, "GROUP_EXIT_RSP": 0x0506,
    "GROUP_LIST_REQ": 0x0507, "GROUP_LIST_RSP": 0x0508,
    "GROUP_INFO_REQ": 0x0509, "GROUP_INFO_RSP": 0x0510,
    "GROUP_INVITE_MEMBER_REQ": 0x0511, "GROUP_INVITE_MEMBER_RSP": 0x0512,
    "GROUP_KICK_MEMBER_REQ": 0x0513, "GROUP_KICK_MEMBER_RSP": 0x0514,
    "GROUP_MEMBER_CHANGED_NOTIFY": 0x0515,
    "GROUP_MEMBER_LIST_REQ": 0x0516, "GROUP_MEMBER_LIST_RSP": 0x0517,
    "FRIEND_QUERY_USER_LIST_REQ": 0x0601, "FRIEND_QUERY_USER_LIST_RSP": 0x0602,
}  # fmt: skip


def test_command_ids_match_protocol_md() -> None:
    assert {c.name: c.value for c in Cmd if not c.is_extension} == PROTOCOL_MD_IDS


def test_extensions_are_in_their_range() -> None:
    for cmd in Cmd:
        assert cmd.is_extension == (0x0801 <= cmd <= 0x08FF)
        if cmd.is_extension:
            assert spec(cmd).message.DESCRIPTOR.file.package == "coffeebus"
        else:
            assert spec(cmd).message.DESCRIPTOR.file.package == "coffeechat"


def test_requests_and_responses_pair_up() -> None:
    for entry in COMMANDS.values():
        if entry.response is None:
            continue
        assert Direction.UP in entry.direction, entry
        assert Direction.DOWN in spec(entry.response).direction, entry


def test_topics_follow_design_md() -> None:
    routed = {topic: {c for c, e in COMMANDS.items() if e.topic is topic} for topic in UplinkTopic}
    assert routed == EXPECTED_TOPICS
    for entry in COMMANDS.values():
        if entry.topic is None:
            assert entry.key is None
            assert entry.direction is Direction.DOWN or entry.cmd in GATE_HANDLED, entry
        elif entry.cmd is Cmd.GROUP_CREATE_REQ:
            assert entry.key is KeyKind.USER  # the group has no id yet
        else:
            assert entry.key is TOPIC_KEYS[entry.topic], entry


def test_uplink_topics_are_declared_in_topology_yaml() -> None:
    declared = yaml.safe_load((REPO / "topology.yaml").read_text(encoding="utf-8"))["topics"]
    assert {str(t) for t in UplinkTopic} <= set(declared)


def test_command_ids_written_in_the_proto_files_match_the_table() -> None:
    in_comments: dict[int, str] = {}
    in_header: dict[int, str] = {}
    for path in sorted(PROTO_DIR.rglob("*.proto")):
        text = path.read_text(encoding="utf-8")
        # "// 0x0301: ..." (possibly more comment lines) directly above "message MsgData".
        for hex_id, name in re.findall(
            r"^// (0x[0-9A-F]{4})\b.*\n(?://.*\n)*message (\w+)", text, re.MULTILINE
        ):
            assert int(hex_id, 16) not in in_comments, hex_id
            in_comments[int(hex_id, 16)] = name
        # The command list at the top of ext.proto.
        for hex_id, name in re.findall(r"^// {2,}(0x08[0-9A-F]{2}) +(\w+)", text, re.MULTILINE):
            in_header[int(hex_id, 16)] = name
    table = {cmd: e.message.DESCRIPTOR.name for cmd, e in COMMANDS.items()}
    assert in_comments == table
    assert in_header == {cmd: name for cmd, name in table.items() if cmd >= 0x0801}


def test_frame_round_trip_through_the_table() -> None:
    sent = message_pb2.MsgData(from_user_id=1, to_session_id=2, client_msg_id="u", msg_data=b"x")
    frame = decode_frame(build_frame(Cmd.MSG_DATA, 9, sent))
    assert frame.command_id == Cmd.MSG_DATA
    assert parse_body(frame.command_id, frame.body) == sent
    received = parse_as(frame.command_id, frame.body, message_pb2.MsgData)
    assert received.client_msg_id == "u"


def test_build_frame_rejects_the_wrong_message() -> None:
    with pytest.raises(ValueError, match=r"carries coffeechat\.MsgData"):
        build_frame(Cmd.MSG_DATA, 1, message_pb2.MsgDataAck())


def test_parse_as_rejects_the_wrong_message_type() -> None:
    with pytest.raises(ValueError, match=r"carries coffeechat\.AuthTokenReq"):
        parse_as(Cmd.AUTH_TOKEN_REQ, b"", login_pb2.AuthReq)


@pytest.mark.parametrize("cmd", [0, 0x0106, 0x050A, 0x08FF, 0xFFFF])
def test_unknown_command(cmd: int) -> None:
    with pytest.raises(UnknownCommandError, match="unknown command id") as info:
        parse_body(cmd, b"")
    assert info.value.command_id == cmd
    assert isinstance(info.value, ProtocolError)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff",  # a tag that is a truncated varint
        b"\x22\x05ab",  # client_msg_id claims 5 bytes, has 2
        b"\x22\x02\xff\xfe",  # client_msg_id is not UTF-8
        b"\x0f",  # wire type 7 does not exist
    ],
)
def test_undecodable_body(body: bytes) -> None:
    with pytest.raises(BodyDecodeError, match=r"not a valid coffeechat.MsgData \(command 0x0301\)"):
        parse_body(Cmd.MSG_DATA, body)


@given(cmd=st.sampled_from(sorted(COMMANDS)), body=st.binary(max_size=64))
def test_any_body_parses_or_raises_body_decode_error(cmd: int, body: bytes) -> None:
    # Anything but a message of the command's type or a BodyDecodeError fails the test.
    errors: list[BodyDecodeError] = []
    try:
        message = parse_body(cmd, body)
    except BodyDecodeError as exc:
        errors.append(exc)
    if errors:
        assert errors[0].command_id == cmd
        assert isinstance(errors[0], CommandError)
    else:
        assert type(message) is spec(cmd).message


def test_spec_names() -> None:
    assert spec(Cmd.SYNC_REQ).name == "coffeebus.SyncReq"
    assert spec(Cmd.SYNC_REQ).message is ext_pb2.SyncReq
