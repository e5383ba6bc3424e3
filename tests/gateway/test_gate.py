"""The gate over real sockets on loopback, TCP and WebSocket alike.

Every scenario runs on the in-memory wiring and (the `env` fixture's ``real`` case) on the
real Kafka, Redis and FerretDB; `kind` runs it over TCP and over WebSocket.
"""

from __future__ import annotations

import asyncio

import pytest

from schemas.codes import ClientType, ErrorCode, ExtResultCode, KickReason
from schemas.commands import Cmd
from schemas.envelope import Envelope
from schemas.frame import encode_frame
from schemas.ids import new_trace_id
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, list_pb2, login_pb2, message_pb2
from store.ids import UserId as StoreUserId
from tests.gateway.client import Kind
from tests.gateway.conftest import Env
from tests.waiting import wait_for

KINDS = ["tcp", "ws"]


def error_code(frame_body: bytes) -> ExtResultCode:
    return ExtResultCode(ext_pb2.ErrorRsp.FromString(frame_body).result_code)


def msg(to: int, text: str = "hi", *, from_user: int = 0) -> message_pb2.MsgData:
    return message_pb2.MsgData(
        from_user_id=from_user,
        to_session_id=to,
        client_msg_id=new_trace_id(),
        session_type=base_pb2.SESSION_TYPE_SINGLE,
        msg_type=base_pb2.MSG_TYPE_TEXT,
        msg_data=text.encode(),
    )


# --- login -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_token_login(env: Env, kind: Kind) -> None:
    await env.user(1001, nick="ann")
    gate = await env.gate()
    client = await env.connect(gate, kind)
    rsp = await client.login(1001, "token-1001")
    assert ErrorCode(rsp.result_code) is ErrorCode.SUCCESS
    assert (rsp.user_info.user_id, rsp.user_info.nick_name) == (1001, "ann")
    routes = await env.routes.get(StoreUserId(1001))
    assert [(str(r.gate_id), r.client_type) for r in routes] == [(gate.gate_id, 1)]
    await client.close()
    await wait_for(lambda: _no_routes(env, 1001))


async def _no_routes(env: Env, user_id: int) -> bool:
    return not await env.routes.get(StoreUserId(user_id))


@pytest.mark.parametrize(
    ("user_id", "token"),
    [(1002, "wrong"), (999_999, "token-999999"), (0, "")],
    ids=["wrong-token", "unknown-user", "user-0"],
)
async def test_bad_logins(env: Env, user_id: int, token: str) -> None:
    await env.user(1002)
    gate = await env.gate()
    client = await env.connect(gate, "tcp")
    rsp = await client.login(user_id, token)
    # One answer for "who are you": an unknown user looks like a wrong token (issue 14).
    assert ErrorCode(rsp.result_code) is ErrorCode.LOGIN_INVALID_USER_TOKEN
    assert rsp.result_string == "login_invalid_user_token"
    assert not rsp.HasField("user_info")
    # Still not logged in: a message is refused, the connection stays.
    await client.send(Cmd.MSG_DATA, msg(5))
    frame = await client.expect(Cmd.ERROR_RSP)
    assert error_code(frame.body) is ExtResultCode.NOT_AUTHENTICATED
    assert await env.routes.get(StoreUserId(1002)) == []
    # ... and a retry with the right token works on the same connection.
    rsp = await client.login(1002, "token-1002")
    assert ErrorCode(rsp.result_code) is ErrorCode.SUCCESS
    await client.close()


async def test_password_login(env: Env) -> None:
    await env.user(1003, password="s3cret!")
    gate = await env.gate()
    client = await env.connect(gate, "ws")
    for password, code in [
        ("nope", ErrorCode.LOGIN_INVALID_USER_OR_PWD),
        ("s3cret!", ErrorCode.SUCCESS),
    ]:
        req = login_pb2.AuthReq(
            user_name=f"{env.prefix}-u1003", user_pwd=password, client_type=base_pb2.CLIENT_TYPE_WEB
        )
        await client.send(Cmd.AUTH_REQ, req)
        rsp = login_pb2.AuthRsp.FromString((await client.expect(Cmd.AUTH_RSP)).body)
        assert ErrorCode(rsp.result_code) is code
    assert rsp.user_info.user_id == 1003
    await client.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_login_timeout_closes(memory_env: Env, kind: Kind) -> None:
    gate = await memory_env.gate(login_timeout_s=0.3)
    client = await memory_env.connect(gate, kind)
    assert await client.wait_closed() == []


# --- heartbeat, idle, logout -----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_heartbeat_keeps_a_connection_and_silence_closes_it(env: Env, kind: Kind) -> None:
    await env.user(1004)
    await env.user(1005)
    # idle after 2 x 0.25 s = 0.5 s of silence
    gate = await env.gate(heartbeat_interval_s=0.25, idle_heartbeats=2)
    talker, silent = await env.connect(gate, kind), await env.connect(gate, kind)
    await talker.login(1004, "token-1004")
    await silent.login(1005, "token-1005")
    for _ in range(8):  # 8 x 0.15 s = 1.2 s, well past the idle timeout
        seq = await talker.send(Cmd.HEARTBEAT)
        assert (await talker.expect(Cmd.HEARTBEAT, within=0.3)).seq == seq
        if _ < 7:
            await _pause(0.15)
    assert await silent.wait_closed() == []
    await wait_for(lambda: _no_routes(env, 1005))
    assert await env.routes.get(StoreUserId(1004))  # refreshed, still there
    await talker.close()


async def _pause(seconds: float) -> None:
    # The client heartbeats on a schedule: this is the client's own clock, not a wait for
    # the system under test to do something.
    await asyncio.sleep(seconds)


@pytest.mark.parametrize("kind", KINDS)
async def test_logout_answers_and_removes_the_route(env: Env, kind: Kind) -> None:
    await env.user(1006)
    gate = await env.gate()
    client = await env.connect(gate, kind)
    await client.login(1006, "token-1006")
    seq = await client.send(Cmd.LOGOUT_REQ, login_pb2.LogoutReq(user_id=1006))
    frame = await client.expect(Cmd.LOGOUT_RSP)
    assert frame.seq == seq
    assert await env.routes.get(StoreUserId(1006)) == []  # removed before the answer
    assert await client.wait_closed() == []


# --- multi-login -----------------------------------------------------------------------------


@pytest.mark.parametrize("same_gate", [True, False])
async def test_same_login_kicks_the_older_connection(env: Env, same_gate: bool) -> None:
    await env.user(1007)
    gate_a = await env.gate()
    gate_b = gate_a if same_gate else await env.gate()
    old = await env.connect(gate_a, "tcp")
    await old.login(1007, "token-1007")
    web = await env.connect(gate_a, "ws")  # another client type: not kicked
    await web.login(1007, "token-1007", client_type=ClientType.WEB)
    new = await env.connect(gate_b, "ws")
    rsp = await new.login(1007, "token-1007")
    assert ErrorCode(rsp.result_code) is ErrorCode.SUCCESS
    [notify] = await old.wait_closed()
    assert notify.command_id == Cmd.KICK_NOTIFY
    kick = ext_pb2.KickNotify.FromString(notify.body)
    assert KickReason(kick.reason) is KickReason.DUPLICATE_LOGIN
    assert (kick.user_id, ClientType(kick.new_client_type)) == (1007, ClientType.ANDROID)
    routes = {r.client_type: r for r in await env.routes.get(StoreUserId(1007))}
    assert str(routes[ClientType.ANDROID].gate_id) == gate_b.gate_id
    assert ClientType.WEB in routes
    # The web connection still works.
    seq = await web.send(Cmd.HEARTBEAT)
    assert (await web.expect(Cmd.HEARTBEAT)).seq == seq
    await new.close()
    await web.close()


# --- framing on real sockets -----------------------------------------------------------------


async def test_frames_split_at_every_byte_boundary_and_coalesced_on_tcp(memory_env: Env) -> None:
    await memory_env.user(1008)
    gate = await memory_env.gate(rate_limit_burst=10_000, rate_limit_per_s=10_000)
    client = await memory_env.connect(gate, "tcp")
    await client.login(1008, "token-1008")
    heartbeat = encode_frame(Cmd.HEARTBEAT, 0)
    stream = b"".join(encode_frame(Cmd.HEARTBEAT, seq) for seq in range(1, 4))
    seq_expected = []
    for split in range(1, len(stream)):
        await client.send_raw(stream[:split])
        await client.send_raw(stream[split:])
        seq_expected += [1, 2, 3]
    assert heartbeat  # a frame without body is still a frame
    got = [(await client.expect(Cmd.HEARTBEAT)).seq for _ in seq_expected]
    assert got == seq_expected
    # coalesced: many frames in one write
    await client.send_raw(b"".join(encode_frame(Cmd.HEARTBEAT, s) for s in range(100, 300)))
    assert [(await client.expect(Cmd.HEARTBEAT)).seq for _ in range(200)] == list(range(100, 300))
    await client.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x03" + b"\x00" * 12,  # length below the header
        (2048 + 1).to_bytes(4, "big") + b"\x00" * 2045,  # above max_frame_size
        b"\xde\xad\xbe\xef" * 8,
    ],
    ids=["short", "oversize", "junk"],
)
async def test_garbage_closes_only_its_own_connection(
    memory_env: Env, kind: Kind, garbage: bytes
) -> None:
    await memory_env.user(1009)
    gate = await memory_env.gate(max_frame_size=2048)
    bystander = await memory_env.connect(gate, kind)
    await bystander.login(1009, "token-1009")
    bad = await memory_env.connect(gate, kind)
    await bad.send_raw(garbage)
    assert await bad.wait_closed() == []
    seq = await bystander.send(Cmd.HEARTBEAT)
    assert (await bystander.expect(Cmd.HEARTBEAT)).seq == seq
    await bystander.close()


async def test_websocket_text_message_closes_with_1003(memory_env: Env) -> None:
    gate = await memory_env.gate()
    client = await memory_env.connect(gate, "ws")
    await client.send_text("hello")
    assert await client.wait_closed() == []
    assert client.close_code == 1003


@pytest.mark.parametrize(
    "message",
    [
        # the length field says 64 bytes, the message has 16: inconsistent
        (64).to_bytes(4, "big") + encode_frame(Cmd.HEARTBEAT, 1)[4:],
        encode_frame(Cmd.HEARTBEAT, 1) + b"extra",  # longer than its length field
        b"\x00\x00\x00\x10short",  # shorter than a header
    ],
    ids=["length-above-size", "length-below-size", "short-header"],
)
async def test_websocket_protocol_error_closes_with_1002(memory_env: Env, message: bytes) -> None:
    await memory_env.user(1010)
    gate = await memory_env.gate()
    bystander = await memory_env.connect(gate, "ws")
    await bystander.login(1010, "token-1010")
    client = await memory_env.connect(gate, "ws")
    await client.send_raw(message)
    assert await client.wait_closed() == []
    assert client.close_code == 1002  # protocol error, not 1000 ("normal")
    # a logout is still a normal close
    await bystander.send(Cmd.LOGOUT_REQ, login_pb2.LogoutReq())
    await bystander.expect(Cmd.LOGOUT_RSP)
    assert await bystander.wait_closed() == []
    assert bystander.close_code == 1000


# --- uplink ----------------------------------------------------------------------------------


async def _get(queue: asyncio.Queue[Envelope]) -> Envelope:
    async with asyncio.timeout(10):
        return await queue.get()


@pytest.mark.parametrize("kind", KINDS)
async def test_uplink_carries_the_authenticated_user(env: Env, kind: Kind) -> None:
    await env.user(1010)
    gate = await env.gate()
    client = await env.connect(gate, kind)
    await client.login(1010, "token-1010")
    async with env.tap("im.up.msg") as msgs, env.tap("im.up.query") as queries:
        forged = msg(2002, "hello", from_user=666)  # the body claims to be user 666
        seq = await client.send(Cmd.MSG_DATA, forged)
        await client.send(Cmd.RECENT_SESSION_REQ, list_pb2.RecentContactSessionReq(user_id=666))
        envelope = await _get(msgs)
        query = await _get(queries)
    assert envelope.cmd == Cmd.MSG_DATA
    assert envelope.origin is not None
    assert (envelope.origin.user_id, envelope.origin.gate_id) == (1010, gate.gate_id)
    assert (envelope.origin.client_type, envelope.origin.frame_seq) == (ClientType.ANDROID, seq)
    assert envelope.body == forged.SerializeToString()  # published untouched
    assert query.cmd == Cmd.RECENT_SESSION_REQ
    assert query.origin is not None
    assert query.origin.user_id == 1010
    await client.close()
