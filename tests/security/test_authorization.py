"""Authorization through real gates, the consumer groups and the SDK (embedded and real
services): every refusal has its code (docs/protocol-extensions.md, "Identity and
refusals"), is logged, and stores nothing.

- Commands before login: every command a client may send, on a connection that has not
  logged in, is answered ErrorRsp NOT_AUTHENTICATED and never published.
- Impersonation: every uplink command whose body carries a user id (found from the command
  table, so a new command is covered or fails here) sent with another user's id.
- Access to what is not one's own: another pair's chat, a group one is not in (history,
  latest id, by id, members, read state, posting), another user's message (revoke), acks
  and read marks in a group one is not in.
"""

from __future__ import annotations

import logging
import re
import uuid
from functools import partial

import pytest
from google.protobuf.message import Message

from schemas.codes import ExtResultCode, SessionType
from schemas.commands import COMMANDS, Cmd, Direction, spec
from schemas.frame import encode_frame
from schemas.ids import GroupId, c2c_conversation_id, group_conversation_id
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, message_pb2
from sdk.client import Client as SdkClient
from sdk.errors import ServerError
from tests.consumers.conftest import System, next_push
from tests.gateway.client import Client as RawClient
from tests.waiting import wait_for

USER_FIELDS = ("user_id", "from_user_id")
#: Uplink bodies with a user id that is not a claim of identity, and why.
NOT_A_CLAIM = {
    # login: the token (or password) proves the user id
    Cmd.AUTH_TOKEN_REQ,
    # a receipt echoes the pushed message's from_user_id (its sender), by the protocol; the
    # acking user is the connection's and the conversation always includes it
    Cmd.MSG_DATA_ACK,
}
SINGLE = base_pb2.SessionType.ValueType(SessionType.SINGLE)
GROUP = base_pb2.SessionType.ValueType(SessionType.GROUP)


def claims_identity(cmd: int) -> bool:
    s = COMMANDS[cmd]
    fields = {f.name for f in s.message.DESCRIPTOR.fields}
    return Direction.UP in s.direction and bool(fields & set(USER_FIELDS))


IMPERSONABLE = sorted(c for c in COMMANDS if claims_identity(c) and c not in NOT_A_CLAIM)
UPLINK = sorted(c for c, s in COMMANDS.items() if Direction.UP in s.direction)


class Scene:
    """alice (victim) and bob chat and share group `group`; mallory is the attacker."""

    def __init__(self, system: System) -> None:
        self.system = system

    async def setup(self) -> None:
        system = self.system
        await system.start_consumers()
        self.alice, self.bob, self.mallory = [await system.user() for _ in range(3)]
        self.alice_c = await system.login(self.alice)
        self.bob_c = await system.login(self.bob)
        self.mallory_c = await system.login(self.mallory)
        self.sent = await self.alice_c.send_text(self.bob, "for bob only")
        self.received = await self.bob_c.send_text(self.alice, "for alice only")
        created = await self.alice_c.create_group("private", [self.bob])
        self.group = GroupId(created.group_info.group_id)
        self.group_msg = await self.alice_c.send_text(
            self.group, "members only", session_type=SessionType.GROUP
        )
        # Settle what the set-up started (fan-out, the SDK's automatic delivery acks).
        for name in ("msg", "fanout", "ack", "group"):
            await wait_for(partial(self.system.caught_up, name))
        self.before = await self.snapshot()

    async def snapshot(self) -> dict[str, object]:
        """What an attack must not change."""
        rt = self.system.runtime
        a, b, m = self.alice, self.bob, self.mallory
        convs = [
            c2c_conversation_id(a, b),
            c2c_conversation_id(a, m),
            c2c_conversation_id(b, m),
            group_conversation_id(self.group),
        ]
        group = await rt.groups.get(self.group)
        assert group is not None
        return {
            "messages": {c: await rt.messages.history(c, 0, 50) for c in convs},
            "group": (group.disbanded, sorted(await rt.groups.members(self.group))),
            "groups_of": {u: await rt.groups.groups_of(u) for u in (a, b, m)},
            "read": {u: await rt.sessions.read_seq(u, c) for u in (a, b, m) for c in convs},
            # members' delivery acks race the test (the SDK acks pushes); a non-member's not
            "mallory_acked": m in await rt.groups.acks(self.group),
            "routes": sorted(r.conn_id for r in await rt.routes.get(a)),
        }

    def forged(self, cmd: int, victim: int) -> Message:
        """A body of `cmd` aimed at the victim's things, with the victim's id in it."""
        message = spec(cmd).message()
        fields = {f.name for f in message.DESCRIPTOR.fields}
        values: dict[str, object] = {
            "session_type": SINGLE,
            "session_id": self.bob,
            "to_session_id": self.bob,
            "group_id": self.group,
            "member_id_list": [self.mallory if cmd == Cmd.GROUP_INVITE_MEMBER_REQ else self.bob],
            "msg_id": self.received.server_msg_id,
            "server_msg_id": self.sent.server_msg_id,
            "client_msg_id": self.sent.client_msg_id,
            "msg_id_list": [self.sent.client_msg_id],
            "server_msg_id_list": [self.group_msg.server_msg_id],
            "msg_data": b"forged",
            "group_name": "forged",
            "client_req_id": str(uuid.uuid4()),
            "payload": b"{}",
            "push_id": "p1",
            "state": 1,
        }
        if cmd == Cmd.MSG_DATA:
            values["client_msg_id"] = str(uuid.uuid4())
        for name, value in values.items():
            if name not in fields:
                continue
            if isinstance(value, list):
                getattr(message, name).extend(value)
            else:
                setattr(message, name, value)
        for name in USER_FIELDS:
            if name in fields:
                setattr(message, name, victim)
        return message


def _claims(caplog: pytest.LogCaptureFixture, victim: int) -> list[str]:
    pattern = re.compile(rf"claim\w* to be user {victim}\b")
    return [r.getMessage() for r in caplog.records if pattern.search(r.getMessage())]


async def _refusal_code(client: SdkClient, cmd: int, message: Message) -> ExtResultCode | None:
    """Send; the refusal's code (ErrorRsp, or the response's result_code); None if the
    command has no response."""
    if spec(cmd).response is None:
        await client.send(Cmd(cmd), message)
        return None
    try:
        response = await client.request(Cmd(cmd), message)
    except ServerError as refused:
        return ExtResultCode(refused.code)
    return ExtResultCode(getattr(response, "result_code"))  # noqa: B009 - varies by type


def test_every_identity_field_is_covered() -> None:
    """A new uplink command with a user id fails here until it is decided on."""
    assert Cmd.MSG_DATA in IMPERSONABLE
    assert Cmd.LOGOUT_REQ in IMPERSONABLE
    assert len(IMPERSONABLE) >= 20
    for cmd in NOT_A_CLAIM:
        assert claims_identity(cmd), f"{Cmd(cmd).name} no longer carries a user id"


async def test_impersonation_is_refused_logged_and_stores_nothing(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    scene = Scene(system)
    await scene.setup()
    attacker, victim = scene.mallory_c, scene.alice
    for cmd in IMPERSONABLE:
        caplog.clear()
        code = await _refusal_code(attacker, cmd, scene.forged(cmd, victim))
        name = Cmd(cmd).name
        if code is not None:
            assert code is ExtResultCode.FORBIDDEN, f"{name}: {code!r}"
        # The refusal is logged before any answer leaves; a command without an answer is
        # awaited through its log line.
        await wait_for(lambda: bool(_claims(caplog, victim)), within=20)
        assert len(_claims(caplog, victim)) == 1, name
    assert await scene.snapshot() == scene.before
    assert await attacker.heartbeat() >= 0  # refused, not disconnected


async def test_commands_before_login_are_refused_and_never_published(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.core")
    gate = await system.gate()
    raw = await RawClient.connect("tcp", gate.tcp_port)
    try:
        await _unauthenticated(raw, caplog)
    finally:
        await raw.close()
    assert gate.stats.published == 0
    # The SDK sees the same: a request before login is a NOT_AUTHENTICATED ServerError.
    sdk = SdkClient(heartbeat_interval=None, reconnect=False)
    system.clients.append(sdk)
    await sdk.connect("127.0.0.1", gate.tcp_port)
    with pytest.raises(ServerError) as refused:
        await sdk.recent_sessions()
    assert refused.value.code is ExtResultCode.NOT_AUTHENTICATED
    assert gate.stats.published == 0


async def _unauthenticated(raw: RawClient, caplog: pytest.LogCaptureFixture) -> None:
    """Every command a client may send but a login or a heartbeat, before login."""
    not_login = [c for c in UPLINK if c not in (Cmd.AUTH_TOKEN_REQ, Cmd.AUTH_REQ, Cmd.HEARTBEAT)]
    for seq, cmd in enumerate(not_login, start=1):
        await raw.send_raw(encode_frame(cmd, seq, b"\x08\x01"))
        answer = await raw.expect(Cmd.ERROR_RSP)
        rsp = ext_pb2.ErrorRsp.FromString(answer.body)
        assert (answer.seq, rsp.request_command_id) == (seq, cmd)
        assert ExtResultCode(rsp.result_code) is ExtResultCode.NOT_AUTHENTICATED
    logged = " ".join(r.getMessage() for r in caplog.records)
    for cmd in not_login:
        assert f"refused command 0x{cmd:04X}" in logged


async def test_nobody_reads_writes_or_revokes_what_is_not_theirs(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    scene = Scene(system)
    await scene.setup()
    mallory, bob, group = scene.mallory_c, scene.bob_c, scene.group

    # Another pair's chat cannot even be named: "session bob" is mallory's own chat with bob.
    assert list((await mallory.history(scene.bob)).msg_list) == []
    by_id = await mallory.messages_by_id(scene.bob, [scene.sent.client_msg_id])
    assert list(by_id.msg_list) == []
    assert (await mallory.latest_msg_id(scene.bob)).latest_msg_id == ""
    assert list((await mallory.recent_sessions()).contact_session_list) == []

    # A group mallory is not in: every read is FORBIDDEN, info leaves it out.
    reads = [
        mallory.history(group, session_type=SessionType.GROUP),
        mallory.latest_msg_id(group, session_type=SessionType.GROUP),
        mallory.messages_by_id(
            group, [scene.group_msg.client_msg_id], session_type=SessionType.GROUP
        ),
        mallory.group_members(group),
        mallory.request(
            Cmd.GROUP_READ_STATE_REQ,
            ext_pb2.GroupReadStateReq(
                group_id=group, server_msg_id_list=[scene.group_msg.server_msg_id]
            ),
        ),
    ]
    for read in reads:
        with pytest.raises(ServerError) as refused:
            await read
        assert refused.value.code is ExtResultCode.FORBIDDEN
    assert list((await mallory.group_info([group])).group_info_list) == []
    assert f"not a member of group {group}" in caplog.text

    # Posting to it: FORBIDDEN, logged, not stored.
    with pytest.raises(ServerError) as refused:
        await mallory.send_text(group, "let me in", session_type=SessionType.GROUP)
    assert refused.value.code is ExtResultCode.FORBIDDEN
    assert "refused MsgData" in caplog.text

    # Revoking alice's messages: FORBIDDEN for bob (her peer, and a member), in both chats.
    for session_type, session_id, ack in (
        (SINGLE, scene.alice, scene.sent),
        (GROUP, group, scene.group_msg),
    ):
        rsp = await bob.request(
            Cmd.REVOKE_REQ,
            ext_pb2.RevokeReq(
                session_type=session_type, session_id=session_id, server_msg_id=ack.server_msg_id
            ),
        )
        assert isinstance(rsp, ext_pb2.RevokeRsp)
        assert ExtResultCode(rsp.result_code) is ExtResultCode.FORBIDDEN
    assert "only the sender may revoke" in caplog.text

    # Read and delivery acks in the group from a non-member: dropped with a log line.
    caplog.clear()
    await mallory.read_ack(group, scene.group_msg.server_msg_id, session_type=SessionType.GROUP)
    await wait_for(lambda: f"user {scene.mallory} is not in group {group}" in caplog.text)
    delivered = message_pb2.MsgDataAck(
        from_user_id=scene.alice,
        to_session_id=group,
        server_msg_id=scene.group_msg.server_msg_id,
        session_type=GROUP,
    )
    await mallory.send(Cmd.MSG_DATA_ACK, delivered)
    await wait_for(lambda: system.caught_up("ack"))  # both acks handled
    assert await scene.snapshot() == scene.before
    # bob still gets alice's messages, and never got anything mallory tried.
    await scene.alice_c.send_text(scene.bob, "still here")
    seen: list[bytes] = []
    while not seen or seen[-1] != b"still here":
        push = await next_push(bob, Cmd.MSG_DATA)
        assert isinstance(push.message, message_pb2.MsgData)
        seen.append(push.message.msg_data)
    assert b"let me in" not in seen
