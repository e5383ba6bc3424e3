"""`sdk.Client` over real sockets against the raw-frame test peer (tests/sdk/peer.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from schemas.codes import ErrorCode, ExtResultCode, KickReason, SessionType
from schemas.commands import Cmd, build_frame
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, list_pb2, login_pb2, message_pb2
from sdk import (
    Client,
    ConnectionLostError,
    Disconnected,
    Kicked,
    LoginError,
    NotConnectedError,
    Push,
    Reconnected,
    RequestTimeoutError,
    ServerError,
)
from sdk.events import Event
from tests.sdk.peer import TIMEOUT, Peer, PeerConnection

USER = 1001


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    async with Peer() as server:
        yield server


def make_client(**options: object) -> Client:
    defaults: dict[str, object] = {
        "heartbeat_interval": None,
        "reconnect": False,
        "request_timeout": TIMEOUT,
    }
    defaults.update(options)
    return Client(**defaults)  # type: ignore[arg-type]


async def logged_in(peer: Peer, client: Client) -> PeerConnection:
    await client.connect("127.0.0.1", peer.port)
    conn = await peer.accept()
    login = asyncio.create_task(client.login(USER, "token"))
    req = await conn.accept_login(USER)
    assert login_pb2.AuthTokenReq.FromString(req.body).user_token == "token"
    rsp = await login
    assert ErrorCode(rsp.result_code) is ErrorCode.SUCCESS
    assert client.user_id == USER
    return conn


async def next_event(client: Client) -> Event:
    async with asyncio.timeout(TIMEOUT):
        return await client.next_event()


async def test_request_not_connected() -> None:
    client = make_client()
    with pytest.raises(NotConnectedError):
        await client.heartbeat()


async def test_login_refused_raises_login_error(peer: Peer) -> None:
    async with make_client() as client:
        await client.connect("127.0.0.1", peer.port)
        conn = await peer.accept()
        login = asyncio.create_task(client.login(USER, "bad"))
        await conn.accept_login(USER, ErrorCode.LOGIN_INVALID_USER_TOKEN)
        with pytest.raises(LoginError) as caught:
            await login
        assert caught.value.code is ErrorCode.LOGIN_INVALID_USER_TOKEN


async def test_responses_split_at_every_byte_and_coalesced(peer: Peer) -> None:
    async with make_client() as client:
        conn = await logged_in(peer, client)
        first = asyncio.create_task(client.recent_sessions())
        second = asyncio.create_task(client.history(1002))
        req1 = await conn.recv_cmd(Cmd.RECENT_SESSION_REQ)
        req2 = await conn.recv_cmd(Cmd.MSG_LIST_REQ)
        assert list_pb2.GetMsgListReq.FromString(req2.body).limit_count == 20
        rsp1 = build_frame(
            Cmd.RECENT_SESSION_RSP, req1.seq, list_pb2.RecentContactSessionRsp(unread_counts=3)
        )
        rsp2 = build_frame(Cmd.MSG_LIST_RSP, req2.seq, list_pb2.GetMsgListRsp(session_id=1002))
        for i in range(len(rsp1)):  # one byte per write
            await conn.send_raw(rsp1[i : i + 1])
        assert (await first).unread_counts == 3
        third = asyncio.create_task(client.latest_msg_id(1002))
        req3 = await conn.recv_cmd(Cmd.LATEST_MSG_ID_REQ)
        rsp3 = build_frame(
            Cmd.LATEST_MSG_ID_RSP, req3.seq, message_pb2.GetLatestMsgIdRsp(latest_msg_id="9")
        )
        await conn.send_raw(rsp3 + rsp2)  # two responses in one write, out of order
        assert (await second).session_id == 1002
        assert (await third).latest_msg_id == "9"
        assert client.pending_requests == 0


async def test_send_text_waits_for_the_ack_with_the_same_seq(peer: Peer) -> None:
    async with make_client() as client:
        conn = await logged_in(peer, client)
        sending = asyncio.create_task(client.send_text(1002, "héllo"))
        req = await conn.recv_cmd(Cmd.MSG_DATA)
        msg = message_pb2.MsgData.FromString(req.body)
        assert (msg.from_user_id, msg.to_session_id) == (USER, 1002)
        assert msg.msg_data.decode() == "héllo"
        assert SessionType(msg.session_type) is SessionType.SINGLE
        assert len(msg.client_msg_id) == 36
        ack = message_pb2.MsgDataAck(client_msg_id=msg.client_msg_id, server_msg_id=5)
        await conn.send(Cmd.MSG_DATA_ACK, req.seq + 1, ack)  # wrong seq: a push, not ours
        assert isinstance(await next_event(client), Push)
        assert not sending.done()
        await conn.send(Cmd.MSG_DATA_ACK, req.seq, ack)
        assert (await sending).server_msg_id == 5


async def test_timeout_raises_and_a_late_response_is_harmless(peer: Peer) -> None:
    async with make_client() as client:
        conn = await logged_in(peer, client)
        with pytest.raises(RequestTimeoutError) as caught:
            await client.heartbeat(timeout=0.05)
        assert caught.value.command_id == Cmd.HEARTBEAT
        assert client.pending_requests == 0
        req = await conn.recv_cmd(Cmd.HEARTBEAT)
        await conn.send(Cmd.HEARTBEAT, req.seq, login_pb2.HeartBeat())
        # The connection still works: the next request gets a new seq and its answer.
        nxt = asyncio.create_task(client.heartbeat())
        req2 = await conn.recv()
        assert req2.seq == req.seq + 1
        await conn.send(Cmd.HEARTBEAT, req2.seq, login_pb2.HeartBeat())
        assert await nxt >= 0


async def test_error_rsp_raises_server_error(peer: Peer) -> None:
    async with make_client() as client:
        conn = await logged_in(peer, client)
        syncing = asyncio.create_task(client.sync(after_seq=10))
        req = await conn.recv_cmd(Cmd.SYNC_REQ)
        await conn.send(
            Cmd.ERROR_RSP,
            req.seq,
            ext_pb2.ErrorRsp(
                request_command_id=Cmd.SYNC_REQ,
                result_code=ExtResultCode.UNAVAILABLE,  # type: ignore[arg-type]
                text="draining",
            ),
        )
        with pytest.raises(ServerError) as caught:
            await syncing
        assert caught.value.code is ExtResultCode.UNAVAILABLE
        assert caught.value.retriable


async def test_pushed_message_is_delivered_and_acked(peer: Peer) -> None:
    async with make_client() as client:
        conn = await logged_in(peer, client)
        msg = message_pb2.MsgData(
            from_user_id=1002, to_session_id=USER, client_msg_id="m-1", server_msg_id=3
        )
        await conn.send(Cmd.MSG_DATA, 40000, msg)
        event = await next_event(client)
        assert isinstance(event, Push)
        assert event.message == msg
        assert event.seq == 40000
        ack_frame = await conn.recv_cmd(Cmd.MSG_DATA_ACK)
        assert ack_frame.seq == 40000
        ack = message_pb2.MsgDataAck.FromString(ack_frame.body)
        assert (ack.from_user_id, ack.to_session_id, ack.server_msg_id) == (USER, 1002, 3)


async def test_heartbeat_task_sends_and_an_unanswered_one_drops_the_link(peer: Peer) -> None:
    async with make_client(heartbeat_interval=0.05, request_timeout=0.2) as client:
        conn = await logged_in(peer, client)
        beat = await conn.recv_cmd(Cmd.HEARTBEAT)
        await conn.send(Cmd.HEARTBEAT, beat.seq, login_pb2.HeartBeat())
        await conn.recv_cmd(Cmd.HEARTBEAT)  # the next one comes; this one is not answered
        event = await next_event(client)
        assert isinstance(event, Disconnected)
        assert event.reconnecting is False
        assert not client.connected


async def test_drop_fails_pending_then_reconnects_and_logs_in_again(peer: Peer) -> None:
    client = make_client(reconnect=True, reconnect_min_delay=0.01, reconnect_max_delay=0.05)
    async with client:
        conn = await logged_in(peer, client)
        waiting = asyncio.create_task(client.group_list())
        await conn.recv_cmd(Cmd.GROUP_LIST_REQ)
        await conn.drop()
        with pytest.raises(ConnectionLostError):
            await waiting
        event = await next_event(client)
        assert isinstance(event, Disconnected)
        assert event.reconnecting
        second = await peer.accept()
        req = await second.accept_login(USER)
        assert login_pb2.AuthTokenReq.FromString(req.body).user_token == "token"
        reconnected = await next_event(client)
        assert isinstance(reconnected, Reconnected)
        assert reconnected.attempts >= 1
        # Seqs start over on the new connection, and requests flow again.
        beat = asyncio.create_task(client.heartbeat())
        frame = await second.recv_cmd(Cmd.HEARTBEAT)
        await second.send(Cmd.HEARTBEAT, frame.seq, login_pb2.HeartBeat())
        await beat


async def test_a_request_made_while_reconnecting_waits_for_the_re_login(peer: Peer) -> None:
    client = make_client(reconnect=True, reconnect_min_delay=0.01, reconnect_max_delay=0.05)
    async with client:
        conn = await logged_in(peer, client)
        await conn.drop()
        assert isinstance(await next_event(client), Disconnected)
        second = await peer.accept()
        login = await second.recv_cmd(Cmd.AUTH_TOKEN_REQ)
        # The new connection is open, its login not answered yet: a request made now must
        # not go out before the login (a gate would refuse it NOT_AUTHENTICATED).
        beat = asyncio.create_task(client.heartbeat())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(second.recv(), 0.3)  # nothing arrives
        rsp = login_pb2.AuthTokenRsp(
            result_code=ErrorCode.SUCCESS,  # type: ignore[arg-type]
            user_info=base_pb2.UserInfo(user_id=USER),
        )
        await second.send(Cmd.AUTH_TOKEN_RSP, login.seq, rsp)
        frame = await second.recv()  # the first frame after the login is the request
        assert frame.command_id == Cmd.HEARTBEAT
        await second.send(Cmd.HEARTBEAT, frame.seq, login_pb2.HeartBeat())
        await beat
        assert isinstance(await next_event(client), Reconnected)


async def test_kick_stops_reconnecting(peer: Peer) -> None:
    async with make_client(reconnect=True, reconnect_min_delay=0.01) as client:
        conn = await logged_in(peer, client)
        kick = ext_pb2.KickNotify(
            user_id=USER,
            reason=KickReason.DUPLICATE_LOGIN,  # type: ignore[arg-type]
            text="logged in elsewhere",
        )
        await conn.send(Cmd.KICK_NOTIFY, 1, kick)
        await conn.drop()
        kicked = await next_event(client)
        assert isinstance(kicked, Kicked)
        assert KickReason(kicked.notify.reason) is KickReason.DUPLICATE_LOGIN
        gone = await next_event(client)
        assert isinstance(gone, Disconnected)
        assert gone.reconnecting is False


async def test_garbage_from_the_server_ends_the_connection(peer: Peer) -> None:
    async with make_client() as client:
        conn = await logged_in(peer, client)
        await conn.send_raw(b"\x00\x00\x00\x03")  # a frame length below the header size
        event = await next_event(client)
        assert isinstance(event, Disconnected)
        assert "below" in event.reason


async def test_close_fails_pending_and_ends_events(peer: Peer) -> None:
    client = make_client()
    conn = await logged_in(peer, client)
    waiting = asyncio.create_task(client.user_list())
    await conn.recv_cmd(Cmd.FRIEND_QUERY_USER_LIST_REQ)
    await client.close()
    with pytest.raises(ConnectionLostError):
        await waiting
    seen = [event async for event in client.events()]
    assert all(isinstance(event, Disconnected) for event in seen)
    with pytest.raises(NotConnectedError):
        await client.heartbeat()
    await client.close()  # idempotent


async def test_events_can_go_to_a_callback_only(peer: Peer) -> None:
    got: list[Event] = []
    async with make_client(event_queue_size=0, on_event=got.append) as client:
        conn = await logged_in(peer, client)
        await conn.send(Cmd.MSG_READ_NOTIFY, 9, message_pb2.MsgDataReadNotify(msg_id=4))
        beat = asyncio.create_task(client.heartbeat())
        frame = await conn.recv_cmd(Cmd.HEARTBEAT)
        await conn.send(Cmd.HEARTBEAT, frame.seq, login_pb2.HeartBeat())
        await beat  # the notify, sent before the heartbeat's answer, was handled first
        assert len(got) == 1
        assert isinstance(got[0], Push)
        with pytest.raises(RuntimeError):
            await client.next_event()


async def test_reconnects_to_an_alternate_gate_when_its_gate_is_gone(peer: Peer) -> None:
    async with Peer() as other:
        client = make_client(reconnect=True, reconnect_min_delay=0.01, reconnect_max_delay=0.05)
        async with client:
            await client.connect("127.0.0.1", peer.port, alternates=[("127.0.0.1", other.port)])
            conn = await peer.accept()
            login = asyncio.create_task(client.login(USER, "token"))
            await conn.accept_login(USER)
            await login
            assert client.endpoint == ("127.0.0.1", peer.port)
            await peer.stop_listening()  # the gate dies: its connections and its port
            await conn.drop()
            event = await next_event(client)
            assert isinstance(event, Disconnected)
            assert event.reconnecting
            moved = await other.accept()
            req = await moved.accept_login(USER)
            assert login_pb2.AuthTokenReq.FromString(req.body).user_token == "token"
            assert isinstance(await next_event(client), Reconnected)
            assert client.endpoint == ("127.0.0.1", other.port)


async def test_connect_tries_the_alternates_in_order(peer: Peer) -> None:
    async with Peer() as gone:
        await gone.stop_listening()
        async with make_client() as client:
            await client.connect(
                "127.0.0.1",
                gone.port,
                alternates=[("127.0.0.1", gone.port), ("127.0.0.1", peer.port)],
            )
            await peer.accept()
            assert client.endpoint == ("127.0.0.1", peer.port)
        async with make_client() as client:
            with pytest.raises(ConnectionRefusedError):
                await client.connect("127.0.0.1", gone.port, alternates=[("127.0.0.1", gone.port)])
            assert not client.connected
