"""The sans-I/O connection core, driven without sockets and with a hand-moved clock."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from gateway.core import (
    CloseReason,
    Connection,
    ConnectionClosed,
    ConnectionLimits,
    HeartbeatReceived,
    LogoutRequested,
    PasswordLoginRequested,
    State,
    TokenLoginRequested,
    UplinkFrame,
)
from schemas.codes import ClientType, ErrorCode, ExtResultCode, KickReason
from schemas.commands import Cmd, UplinkTopic
from schemas.frame import MAX_SEQ, Frame, FrameDecoder, SharedPush, encode_frame
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, login_pb2, message_pb2

T0 = 1000.0
LIMITS = ConnectionLimits(
    max_frame_size=4096, login_timeout_s=15.0, idle_timeout_s=180.0, rate_per_s=50, rate_burst=100
)


def frame(cmd: int, seq: int, message: Message | None = None) -> bytes:
    return encode_frame(cmd, seq, b"" if message is None else message.SerializeToString())


def auth_token(seq: int = 1, user_id: int = 7, token: str = "tok") -> bytes:
    req = login_pb2.AuthTokenReq(
        user_id=user_id,
        user_token=token,
        client_type=base_pb2.CLIENT_TYPE_ANDROID,
        client_version="1.0",
    )
    return frame(Cmd.AUTH_TOKEN_REQ, seq, req)


def msg_data(seq: int, text: str = "hi") -> bytes:
    data = message_pb2.MsgData(
        from_user_id=7, to_session_id=8, client_msg_id=f"m{seq}", msg_data=text.encode()
    )
    return frame(Cmd.MSG_DATA, seq, data)


def sent(conn: Connection) -> list[Frame]:
    return decode_all(conn.data_to_send())


def decode_all(frames: list[bytes]) -> list[Frame]:
    return FrameDecoder().feed(b"".join(frames))


def error_of(f: Frame) -> ext_pb2.ErrorRsp:
    assert f.command_id == Cmd.ERROR_RSP
    return ext_pb2.ErrorRsp.FromString(f.body)


def code_of(f: Frame) -> ExtResultCode:
    return ExtResultCode(error_of(f).result_code)


def logged_in(now: float = T0, limits: ConnectionLimits = LIMITS) -> Connection:
    conn = Connection(1, limits=limits, now=now)
    conn.receive_data(auth_token(), now)
    [event] = conn.events_received()
    assert isinstance(event, TokenLoginRequested)
    conn.login_accepted(
        event, base_pb2.UserInfo(user_id=7, nick_name="ann"), now=now, server_time=5
    )
    sent(conn)
    return conn


# --- framing ---------------------------------------------------------------------------------


def test_token_login_request_becomes_an_event() -> None:
    conn = Connection(1, limits=LIMITS, now=T0)
    conn.receive_data(auth_token(seq=9, user_id=42, token="secret"), T0)
    assert conn.events_received() == [
        TokenLoginRequested(9, 42, "secret", ClientType.ANDROID, "1.0", "")
    ]
    assert conn.state is State.AUTHENTICATING
    assert conn.data_to_send() == []


SPLIT_STREAM = msg_data(1, "first") + msg_data(2, "second") + frame(Cmd.HEARTBEAT, 3)


@pytest.mark.parametrize("split", range(1, len(SPLIT_STREAM)))
def test_frames_split_at_every_byte_boundary(split: int) -> None:
    conn = logged_in()
    conn.receive_data(SPLIT_STREAM[:split], T0)
    conn.receive_data(SPLIT_STREAM[split:], T0)
    events = conn.events_received()
    uplinks = [e for e in events if isinstance(e, UplinkFrame)]
    assert [e.frame.seq for e in uplinks] == [1, 2]
    assert [e.message.msg_data for e in uplinks] == [b"first", b"second"]  # type: ignore[attr-defined]
    assert isinstance(events[-1], HeartbeatReceived)


def test_one_byte_at_a_time_and_coalesced_give_the_same_events() -> None:
    stream = b"".join(msg_data(i) for i in range(1, 30))
    one = logged_in()
    for i in range(len(stream)):
        one.receive_data(stream[i : i + 1], T0)
    coalesced = logged_in()
    coalesced.receive_data(stream, T0)
    a, b = one.events_received(), coalesced.events_received()
    assert len(a) == 29
    assert [e.frame for e in a] == [e.frame for e in b]  # type: ignore[union-attr]


def test_uplink_carries_the_spec_and_the_original_body() -> None:
    conn = logged_in()
    raw = msg_data(5)
    conn.receive_data(raw, T0)
    [event] = conn.events_received()
    assert isinstance(event, UplinkFrame)
    assert event.spec.topic is UplinkTopic.MSG
    assert event.frame.body == raw[16:]


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x05" + b"x" * 20,  # length below the header
        b"\xff\xff\xff\xff",  # far above the limit
        b"GET / HTTP/1.1\r\n\r\n",  # not our protocol at all
        (4097).to_bytes(4, "big"),  # one byte above max_frame_size
    ],
)
def test_bad_length_closes_without_answer(garbage: bytes) -> None:
    conn = logged_in()
    conn.receive_data(garbage, T0)
    [event] = conn.events_received()
    assert isinstance(event, ConnectionClosed)
    assert event.reason is CloseReason.PROTOCOL_ERROR
    assert conn.closed
    assert conn.data_to_send() == []
    conn.receive_data(msg_data(1), T0)  # ignored once closed
    assert conn.events_received() == []


def test_frame_at_max_size_is_accepted() -> None:
    conn = logged_in()
    body = b"\x00" * (4096 - 16)  # not a valid MsgData though: answered, not closed
    conn.receive_data(encode_frame(Cmd.MSG_DATA, 3, body), T0)
    assert not conn.closed
    [answer] = sent(conn)
    assert code_of(answer) == ExtResultCode.MALFORMED_BODY
    assert answer.seq == 3


def test_websocket_message_must_be_exactly_one_frame() -> None:
    conn = logged_in()
    conn.receive_message(msg_data(1), T0)
    assert isinstance(conn.events_received()[0], UplinkFrame)
    conn.receive_message(msg_data(2) + msg_data(3), T0)
    [event] = conn.events_received()
    assert isinstance(event, ConnectionClosed)
    assert event.reason is CloseReason.PROTOCOL_ERROR


def test_websocket_short_message_closes() -> None:
    conn = Connection(1, limits=LIMITS, now=T0)
    conn.receive_message(b"\x00\x01", T0)
    assert conn.closed
    assert conn.close_reason is CloseReason.PROTOCOL_ERROR


def test_eof_in_the_middle_of_a_frame_is_reported() -> None:
    conn = logged_in()
    conn.receive_data(msg_data(1)[:10], T0)
    conn.receive_eof()
    [event] = conn.events_received()
    assert event == ConnectionClosed(
        CloseReason.PEER_CLOSED, "closed in the middle of a frame (10 bytes)"
    )


# --- login -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cmd", [Cmd.MSG_DATA, Cmd.LOGOUT_REQ, Cmd.RECENT_SESSION_REQ, 0x7777, Cmd.AUTH_TOKEN_RSP]
)
def test_commands_before_login_get_not_authenticated(cmd: int) -> None:
    conn = Connection(1, limits=LIMITS, now=T0)
    conn.receive_data(encode_frame(cmd, 11, b"\x08\x01"), T0)
    assert conn.events_received() == []
    [answer] = sent(conn)
    rsp = error_of(answer)
    assert (answer.seq, rsp.request_command_id) == (11, cmd)
    assert ExtResultCode(rsp.result_code) is ExtResultCode.NOT_AUTHENTICATED
    assert conn.state is State.CONNECTING


def test_heartbeat_is_answered_before_login() -> None:
    conn = Connection(1, limits=LIMITS, now=T0)
    conn.receive_data(frame(Cmd.HEARTBEAT, 4), T0)
    assert conn.events_received() == [HeartbeatReceived(4)]
    assert sent(conn) == [Frame(Cmd.HEARTBEAT, 4, b"")]


def test_login_accepted_answers_success_and_authenticates() -> None:
    conn = Connection(1, limits=LIMITS, now=T0)
    conn.receive_data(auth_token(seq=3), T0)
    [event] = conn.events_received()
    assert isinstance(event, TokenLoginRequested)
    user = base_pb2.UserInfo(user_id=7, nick_name="ann")
    conn.login_accepted(event, user, now=T0, server_time=1_700_000_000)
    [answer] = sent(conn)
    assert (answer.command_id, answer.seq) == (Cmd.AUTH_TOKEN_RSP, 3)
    rsp = login_pb2.AuthTokenRsp.FromString(answer.body)
    assert ErrorCode(rsp.result_code) is ErrorCode.SUCCESS
    assert rsp.user_info == user
    assert rsp.server_time == 1_700_000_000
    assert (conn.state, conn.user_id, conn.client_type) == (State.AUTHENTICATED, 7, 1)


def test_password_login_is_answered_with_auth_rsp() -> None:
    conn = Connection(1, limits=LIMITS, now=T0)
    req = login_pb2.AuthReq(user_name="ann", user_pwd="pw", client_type=base_pb2.CLIENT_TYPE_WEB)
    conn.receive_data(frame(Cmd.AUTH_REQ, 2, req), T0)
    [event] = conn.events_received()
    assert isinstance(event, PasswordLoginRequested)
    assert "pw" not in repr(event)
    conn.login_rejected(event, ErrorCode.LOGIN_INVALID_USER_OR_PWD, "bad", server_time=1)
    [answer] = sent(conn)
    assert answer.command_id == Cmd.AUTH_RSP
    assert login_pb2.AuthRsp.FromString(answer.body).result_code == 2003
    assert conn.state is State.CONNECTING


def test_rejected_login_may_retry_but_keeps_the_deadline() -> None:
    conn = Connection(1, limits=LIMITS, now=T0)
    conn.receive_data(auth_token(seq=1, token="bad"), T0)
    [event] = conn.events_received()
    assert isinstance(event, TokenLoginRequested)
    conn.login_rejected(event, ErrorCode.LOGIN_INVALID_USER_TOKEN, "bad token", server_time=1)
    rsp = login_pb2.AuthTokenRsp.FromString(sent(conn)[0].body)
    assert ErrorCode(rsp.result_code) is ErrorCode.LOGIN_INVALID_USER_TOKEN
    assert not rsp.HasField("user_info")
    conn.receive_data(auth_token(seq=2), T0 + 10)
    assert isinstance(conn.events_received()[0], TokenLoginRequested)
    assert conn.next_deadline() == T0 + 15


def test_a_login_refused_unchecked_may_not_retry_before_its_time() -> None:
    conn = Connection(1, limits=LIMITS, now=T0)
    conn.receive_data(auth_token(seq=1), T0)
    [event] = conn.events_received()
    assert isinstance(event, TokenLoginRequested)
    conn.login_refused(event, ExtResultCode.RATE_LIMITED, "busy: retry in 1 s", retry_at=T0 + 1)
    [answer] = sent(conn)
    assert (answer.seq, ExtResultCode(error_of(answer).result_code)) == (
        1,
        ExtResultCode.RATE_LIMITED,
    )
    assert error_of(answer).request_command_id == Cmd.AUTH_TOKEN_REQ
    assert conn.state is State.CONNECTING
    # Too early: refused here, no event for the gate; the connection stays.
    conn.receive_data(auth_token(seq=2), T0 + 0.5)
    assert conn.events_received() == []
    [early] = sent(conn)
    assert ExtResultCode(error_of(early).result_code) is ExtResultCode.RATE_LIMITED
    assert "retry in 1 s" in error_of(early).text
    # On time: the login goes to the gate again.
    conn.receive_data(auth_token(seq=3), T0 + 1)
    assert isinstance(conn.events_received()[0], TokenLoginRequested)


def test_second_login_while_checking_or_after_success_is_refused() -> None:
    conn = Connection(1, limits=LIMITS, now=T0)
    conn.receive_data(auth_token(seq=1) + auth_token(seq=2), T0)
    [event] = conn.events_received()
    [answer] = sent(conn)
    assert answer.seq == 2
    assert code_of(answer) == ExtResultCode.INVALID_PARAMETER
    assert isinstance(event, TokenLoginRequested)
    conn.login_accepted(event, base_pb2.UserInfo(user_id=7), now=T0, server_time=1)
    sent(conn)
    conn.receive_data(auth_token(seq=3), T0)
    assert conn.events_received() == []
    assert code_of(sent(conn)[0]) is ExtResultCode.INVALID_PARAMETER


def test_malformed_login_body_is_answered() -> None:
    conn = Connection(1, limits=LIMITS, now=T0)
    conn.receive_data(encode_frame(Cmd.AUTH_TOKEN_REQ, 1, b"\xff\xff\xff"), T0)
    assert conn.events_received() == []
    assert code_of(sent(conn)[0]) is ExtResultCode.MALFORMED_BODY
    assert conn.state is State.CONNECTING


# --- authenticated commands ------------------------------------------------------------------


def test_unknown_and_downlink_commands_get_error_not_close() -> None:
    conn = logged_in()
    conn.receive_data(
        frame(0x7777, 1) + frame(Cmd.MSG_READ_NOTIFY, 2) + frame(Cmd.VOIP_BYE_NOTIFY, 3), T0
    )
    answers = sent(conn)
    assert [a.seq for a in answers] == [1, 2, 3]
    assert {code_of(a) for a in answers} == {ExtResultCode.UNKNOWN_COMMAND}
    assert not conn.closed
    assert conn.events_received() == []


def test_bad_body_gets_malformed_body() -> None:
    conn = logged_in()
    conn.receive_data(encode_frame(Cmd.MSG_DATA, 8, b"\x0a\x05ab"), T0)
    [answer] = sent(conn)
    assert (answer.seq, code_of(answer)) == (8, ExtResultCode.MALFORMED_BODY)
    assert conn.events_received() == []


def test_logout_is_answered_after_the_gate_is_done() -> None:
    conn = logged_in()
    conn.receive_data(frame(Cmd.LOGOUT_REQ, 6, login_pb2.LogoutReq(user_id=7)), T0)
    [event] = conn.events_received()
    assert event == LogoutRequested(6)
    assert conn.data_to_send() == []
    conn.logout_done(event)
    [answer] = sent(conn)
    assert (answer.command_id, answer.seq) == (Cmd.LOGOUT_RSP, 6)
    assert conn.events_received() == [ConnectionClosed(CloseReason.LOGOUT, "")]


def test_kick_sends_kick_notify_then_closes() -> None:
    conn = logged_in()
    conn.kick(KickReason.DUPLICATE_LOGIN, new_client_type=ClientType.ANDROID, text="elsewhere")
    [notify] = sent(conn)
    assert notify.command_id == Cmd.KICK_NOTIFY
    body = ext_pb2.KickNotify.FromString(notify.body)
    assert (body.user_id, KickReason(body.reason)) == (7, KickReason.DUPLICATE_LOGIN)
    [event] = conn.events_received()
    assert isinstance(event, ConnectionClosed)
    assert event.reason is CloseReason.KICKED
    conn.send_frame(Cmd.MSG_DATA, b"")  # nothing after the close
    assert conn.data_to_send() == []


def test_push_seq_counts_from_one_and_wraps_to_one() -> None:
    conn = logged_in()
    conn.send_frame(Cmd.MSG_DATA, b"")
    conn.send_frame(Cmd.MSG_DATA_ACK, b"", seq=77)  # a response echoes its request
    conn.send_frame(Cmd.MSG_DATA, b"")
    assert [f.seq for f in sent(conn)] == [1, 77, 2]
    for _ in range(MAX_SEQ - 3):
        conn.send_frame(Cmd.MSG_DATA, b"")
    assert sent(conn)[-1].seq == MAX_SEQ - 1
    conn.send_frame(Cmd.MSG_DATA, b"")
    conn.send_frame(Cmd.MSG_DATA, b"")
    assert [f.seq for f in sent(conn)] == [MAX_SEQ, 1]


def test_pushed_frames_share_the_push_counter_and_nothing_after_close() -> None:
    conn = logged_in()
    conn.send_frame(Cmd.MSG_DATA, b"")
    pushed = conn.push_shared(
        Cmd.ROOM_MSG, [SharedPush(Cmd.ROOM_MSG, b"a"), SharedPush(Cmd.ROOM_MSG, b"b")]
    )
    # Returned behind what was queued, not queued themselves.
    assert [(f.command_id, f.seq, f.body) for f in decode_all(pushed)] == [
        (Cmd.MSG_DATA, 1, b""),
        (Cmd.ROOM_MSG, 2, b"a"),
        (Cmd.ROOM_MSG, 3, b"b"),
    ]
    assert conn.push_shared(Cmd.ROOM_MSG, []) == []
    assert sent(conn) == []
    conn.send_frame(Cmd.MSG_DATA, b"")
    pushed = conn.push_shared(Cmd.ROOM_MSG, [SharedPush(Cmd.ROOM_MSG, b"c")])
    assert [f.seq for f in decode_all(pushed)] == [4, 5]
    conn.close(CloseReason.SHUTDOWN)
    sent(conn)
    assert conn.push_shared(Cmd.ROOM_MSG, [SharedPush(Cmd.ROOM_MSG, b"d")]) == []


# --- timers ----------------------------------------------------------------------------------


def test_login_timeout() -> None:
    conn = Connection(1, limits=LIMITS, now=T0)
    assert conn.next_deadline() == T0 + 15
    conn.on_timer(T0 + 14.999)
    assert not conn.closed
    conn.on_timer(T0 + 15)
    assert conn.events_received() == [
        ConnectionClosed(CloseReason.LOGIN_TIMEOUT, "no login within 15 s")
    ]
    assert conn.next_deadline() is None


def test_login_timeout_applies_while_a_login_is_checked() -> None:
    conn = Connection(1, limits=LIMITS, now=T0)
    conn.receive_data(auth_token(), T0 + 1)
    conn.events_received()
    conn.on_timer(T0 + 15)
    assert conn.close_reason is CloseReason.LOGIN_TIMEOUT


def test_idle_timeout_moves_with_every_frame() -> None:
    conn = logged_in()
    assert conn.next_deadline() == T0 + 180
    conn.receive_data(frame(Cmd.HEARTBEAT, 1), T0 + 100)
    assert conn.next_deadline() == T0 + 280
    conn.on_timer(T0 + 180)  # the old deadline: a lazy timer firing late must not close
    assert not conn.closed
    conn.on_timer(T0 + 280)
    assert conn.close_reason is CloseReason.IDLE_TIMEOUT


# --- rate limit ------------------------------------------------------------------------------


def test_rate_limit_answers_rate_limited_then_refills() -> None:
    limits = ConnectionLimits(rate_per_s=10, rate_burst=3)
    conn = logged_in(limits=limits)  # the login frame took one token
    conn.receive_data(b"".join(msg_data(i) for i in range(1, 5)), T0)
    assert [e.frame.seq for e in conn.events_received()] == [1, 2]  # type: ignore[union-attr]
    answers = sent(conn)
    assert [(a.seq, code_of(a)) for a in answers] == [
        (3, ExtResultCode.RATE_LIMITED),
        (4, ExtResultCode.RATE_LIMITED),
    ]
    conn.receive_data(msg_data(5), T0 + 0.1)  # one token back after 0.1 s at 10/s
    assert [e.frame.seq for e in conn.events_received()] == [5]  # type: ignore[union-attr]


def test_a_flood_while_limited_closes() -> None:
    limits = ConnectionLimits(rate_per_s=1, rate_burst=2)
    conn = logged_in(limits=limits)
    conn.receive_data(b"".join(frame(Cmd.HEARTBEAT, i) for i in range(1, 10)), T0)
    events = conn.events_received()
    assert isinstance(events[-1], ConnectionClosed)
    assert events[-1].reason is CloseReason.RATE_LIMITED


def test_logout_naming_another_user_is_refused() -> None:
    conn = logged_in()
    conn.receive_data(frame(Cmd.LOGOUT_REQ, 6, login_pb2.LogoutReq(user_id=8)), T0)
    assert conn.events_received() == []
    [answer] = sent(conn)
    assert (answer.seq, code_of(answer)) == (6, ExtResultCode.FORBIDDEN)
    assert conn.authenticated
    conn.receive_data(frame(Cmd.LOGOUT_REQ, 7, login_pb2.LogoutReq(user_id=0)), T0)
    assert conn.events_received() == [LogoutRequested(7)]


def test_a_frame_trickled_slower_than_the_frame_timeout_closes() -> None:
    limits = ConnectionLimits(frame_timeout_s=30.0, idle_timeout_s=180.0)
    conn = logged_in(limits=limits)
    raw = msg_data(1)
    conn.receive_data(raw[:3], T0 + 1)  # not even a whole header
    assert conn.next_deadline() == T0 + 31
    for i in range(3, len(raw) - 1):  # a byte every second: each one is no activity
        conn.receive_data(raw[i : i + 1], T0 + i - 1)
        conn.on_timer(T0 + i - 1)
    assert not conn.closed
    conn.on_timer(T0 + 31)
    [event] = conn.events_received()
    assert event == ConnectionClosed(CloseReason.FRAME_TIMEOUT, "frame not completed within 30 s")


def test_the_frame_timer_restarts_with_each_frame() -> None:
    conn = logged_in(limits=ConnectionLimits(frame_timeout_s=30.0))
    stream = msg_data(1) + msg_data(2)
    conn.receive_data(stream[:20], T0)  # frame 1 begins
    conn.receive_data(stream[20:40], T0 + 29)  # frame 1 done, frame 2 begins
    assert conn.next_deadline() == T0 + 59
    conn.receive_data(stream[40:], T0 + 50)  # frame 2 done: no partial frame
    assert conn.next_deadline() == T0 + 50 + 180
    conn.on_timer(T0 + 59)
    assert not conn.closed
    assert len(conn.events_received()) == 2
