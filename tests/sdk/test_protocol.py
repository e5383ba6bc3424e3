"""`sdk.protocol.ClientProtocol` without sockets: seqs, matching, ErrorRsp, push acks."""

from __future__ import annotations

import asyncio

import pytest

from schemas.codes import ExtResultCode, ResCode, SessionType
from schemas.commands import Cmd, build_frame
from schemas.frame import MAX_SEQ, Frame, decode_frame
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import login_pb2, message_pb2
from sdk.errors import ConnectionLostError, ServerError, ServerProtocolError, TooManyPendingError
from sdk.protocol import ClientProtocol


def frame(cmd: Cmd, seq: int, message: object) -> Frame:
    return decode_frame(build_frame(cmd, seq, message))  # type: ignore[arg-type]


def heartbeat_request(protocol: ClientProtocol) -> tuple[int, asyncio.Future[object]]:
    seq, data, future = protocol.request(Cmd.HEARTBEAT, login_pb2.HeartBeat())
    assert future is not None
    assert decode_frame(data).seq == seq
    return seq, future  # type: ignore[return-value]


async def test_seqs_start_at_one_wrap_to_one_and_skip_pending() -> None:
    protocol = ClientProtocol()
    assert [protocol.next_seq() for _ in range(3)] == [1, 2, 3]
    protocol._seq = MAX_SEQ - 2
    first, _ = heartbeat_request(protocol)  # 65534, stays pending
    assert first == MAX_SEQ - 1
    assert protocol.next_seq() == MAX_SEQ
    assert protocol.next_seq() == 1  # wrapped, never 0
    protocol._seq = MAX_SEQ - 2
    assert protocol.next_seq() == MAX_SEQ  # 65534 is still pending: skipped


async def test_every_seq_pending_is_too_many() -> None:
    protocol = ClientProtocol()
    for _ in range(MAX_SEQ):
        heartbeat_request(protocol)
    assert protocol.pending == MAX_SEQ
    with pytest.raises(TooManyPendingError):
        protocol.next_seq()


async def test_response_matches_by_seq_and_command() -> None:
    protocol = ClientProtocol()
    seq, _, future = protocol.request(
        Cmd.MSG_DATA, message_pb2.MsgData(to_session_id=2, client_msg_id="c1")
    )
    assert future is not None
    # A push that reuses the seq with another command is not the response.
    push, _ = protocol.receive(frame(Cmd.MSG_READ_NOTIFY, seq, message_pb2.MsgDataReadNotify()))
    assert push is not None
    assert not future.done()
    ack = message_pb2.MsgDataAck(client_msg_id="c1", server_msg_id=7, res_code=ResCode.OK)  # type: ignore[arg-type]
    push, replies = protocol.receive(frame(Cmd.MSG_DATA_ACK, seq, ack))
    assert (push, replies) == (None, [])
    assert future.result() == ack
    assert protocol.pending == 0


async def test_error_rsp_fails_the_request_with_its_code() -> None:
    protocol = ClientProtocol()
    seq, future = heartbeat_request(protocol)
    other = ext_pb2.ErrorRsp(request_command_id=Cmd.SYNC_REQ, result_code=ExtResultCode.NOT_FOUND)  # type: ignore[arg-type]
    push, _ = protocol.receive(frame(Cmd.ERROR_RSP, seq, other))
    assert push is not None  # meant for another command: not ours
    assert not future.done()
    rsp = ext_pb2.ErrorRsp(
        request_command_id=Cmd.HEARTBEAT,
        result_code=ExtResultCode.RATE_LIMITED,  # type: ignore[arg-type]
        text="slow down",
    )
    push, _ = protocol.receive(frame(Cmd.ERROR_RSP, seq, rsp))
    assert push is None
    with pytest.raises(ServerError) as caught:
        future.result()
    error = caught.value
    assert error.code is ExtResultCode.RATE_LIMITED
    assert error.retriable
    assert error.request_command_id == Cmd.HEARTBEAT
    assert "slow down" in str(error)


async def test_bad_response_body_is_a_protocol_error() -> None:
    protocol = ClientProtocol()
    seq, future = heartbeat_request(protocol)
    protocol.receive(Frame(Cmd.HEARTBEAT, seq, b"\xff\xff\xff"))
    with pytest.raises(ServerProtocolError):
        future.result()


@pytest.mark.parametrize(
    ("session_type", "expected_session"), [(SessionType.SINGLE, 1001), (SessionType.GROUP, 9)]
)
async def test_pushed_message_is_acked_with_its_seq(
    session_type: SessionType, expected_session: int
) -> None:
    protocol = ClientProtocol()
    protocol.user_id = 1002
    msg = message_pb2.MsgData(
        from_user_id=1001,
        to_session_id=9 if session_type is SessionType.GROUP else 1002,
        client_msg_id="uuid-1",
        server_msg_id=42,
        create_time=1_700_000_000,
        session_type=session_type,  # type: ignore[arg-type]
        msg_data=b"hi",
    )
    push, replies = protocol.receive(frame(Cmd.MSG_DATA, 777, msg))
    assert push is not None
    assert push.command is Cmd.MSG_DATA
    assert push.message == msg
    assert len(replies) == 1
    reply = decode_frame(replies[0])
    assert (reply.command_id, reply.seq) == (Cmd.MSG_DATA_ACK, 777)
    ack = message_pb2.MsgDataAck.FromString(reply.body)
    assert ack.from_user_id == 1002
    assert ack.to_session_id == expected_session
    assert (ack.client_msg_id, ack.server_msg_id) == ("uuid-1", 42)
    assert SessionType(ack.session_type) is session_type
    assert ResCode(ack.res_code) is ResCode.OK
    assert ack.create_time == 1_700_000_000


async def test_s2c_push_is_acked_and_auto_ack_can_be_off() -> None:
    protocol = ClientProtocol()
    protocol.user_id = 5
    push_msg = ext_pb2.S2CPush(push_id="p-1", to_user_id=5, msg_data=b"x")
    _, replies = protocol.receive(frame(Cmd.S2C_PUSH, 3, push_msg))
    reply = decode_frame(replies[0])
    assert (reply.command_id, reply.seq) == (Cmd.S2C_PUSH_ACK, 3)
    assert ext_pb2.S2CPushAck.FromString(reply.body) == ext_pb2.S2CPushAck(user_id=5, push_id="p-1")

    quiet = ClientProtocol(auto_ack=False)
    push, replies = quiet.receive(frame(Cmd.MSG_DATA, 4, message_pb2.MsgData()))
    assert push is not None
    assert replies == []


async def test_unsolicited_heartbeat_is_not_echoed() -> None:
    protocol = ClientProtocol()
    assert protocol.receive(frame(Cmd.HEARTBEAT, 12, login_pb2.HeartBeat())) == (None, [])


async def test_unknown_command_is_a_raw_push() -> None:
    protocol = ClientProtocol()
    push, replies = protocol.receive(Frame(0x08FE, 1, b"\x01\x02"))
    assert push is not None
    assert push.command is None
    assert (push.message, push.body, replies) == (None, b"\x01\x02", [])


async def test_fail_all_fails_every_pending_request() -> None:
    protocol = ClientProtocol()
    futures = [heartbeat_request(protocol)[1] for _ in range(3)]
    protocol.fail_all(ConnectionLostError("gone"))
    assert protocol.pending == 0
    for future in futures:
        with pytest.raises(ConnectionLostError):
            future.result()


async def test_forgotten_seq_turns_a_late_response_into_a_push() -> None:
    protocol = ClientProtocol()
    seq, future = heartbeat_request(protocol)
    future.cancel()
    protocol.forget(seq)
    assert protocol.receive(frame(Cmd.HEARTBEAT, seq, login_pb2.HeartBeat())) == (None, [])
    ack = frame(Cmd.MSG_DATA_ACK, seq, message_pb2.MsgDataAck())
    push, _ = protocol.receive(ack)
    assert push is not None


async def test_a_delivered_notify_is_a_decoded_push_that_needs_no_answer() -> None:
    protocol = ClientProtocol()
    note = ext_pb2.DeliveredNotify(
        user_id=2,
        session_id=2,
        msg_id=9,
        session_type=SessionType.SINGLE,  # type: ignore[arg-type]
    )
    push, replies = protocol.receive(frame(Cmd.DELIVERED_NOTIFY, 5, note))
    assert push is not None
    assert (push.command, push.message, replies) == (Cmd.DELIVERED_NOTIFY, note, [])
