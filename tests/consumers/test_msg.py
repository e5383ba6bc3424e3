"""The c2c message path end to end: SDK → gate → msg → fanout → gate → SDK, embedded and real.

Each scenario runs on the embedded wiring and on the real services (`system` fixture). What
is proven: the ack carries the server_msg_id only once stored, the receiver and the sender's
other devices get the push, history and inboxes hold the message once, resends return the
original id and deliver nothing twice, a conversation's order is the same for everyone under
concurrent senders, and the sender is always the authenticated user.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from schemas.codes import ClientType, ExtResultCode, MsgType, ResCode, SessionType
from schemas.commands import Cmd
from schemas.ids import UserId, c2c_conversation_id
from schemas.pb.coffeechat import base_pb2, message_pb2
from sdk.client import Client
from sdk.errors import ServerError
from sdk.events import Push
from tests.consumers.conftest import System, drain, next_push


def msg_of(push: Push) -> message_pb2.MsgData:
    assert isinstance(push.message, message_pb2.MsgData)
    return push.message


async def inbox_of(system: System, user: UserId) -> list[tuple[str, int]]:
    page = await system.runtime.inbox.after(user, 0, 1000)
    return [(e.message.conversation, e.message.seq) for e in page.entries]


@pytest.mark.parametrize("same_gate", [True, False], ids=["same-gate", "two-gates"])
async def test_c2c_send_is_acked_stored_and_delivered(system: System, same_gate: bool) -> None:
    await system.start_consumers()
    gate_a = await system.gate()
    gate_b = gate_a if same_gate else await system.gate()
    alice, bob = await system.user(nick="alice"), await system.user()
    alice_phone = await system.login(alice, gate_a, client_type=ClientType.IOS)
    alice_pc = await system.login(alice, gate_b, client_type=ClientType.MAC_OS)
    bob_phone = await system.login(bob, gate_b, client_type=ClientType.ANDROID)

    ack = await alice_phone.send_text(bob, "hello bob")

    assert ResCode(ack.res_code) is ResCode.OK
    assert ack.server_msg_id > 0
    assert ack.from_user_id == alice
    assert ack.to_session_id == bob
    assert ack.create_time > 0
    pushed = msg_of(await next_push(bob_phone, Cmd.MSG_DATA))
    assert (pushed.from_user_id, pushed.to_session_id) == (alice, bob)
    assert pushed.server_msg_id == ack.server_msg_id
    assert pushed.client_msg_id == ack.client_msg_id
    assert pushed.msg_data == b"hello bob"
    assert pushed.from_nick_name == "alice"
    assert SessionType(pushed.session_type) is SessionType.SINGLE
    # The sender's other device gets it too; the sending device only its ack.
    synced = msg_of(await next_push(alice_pc, Cmd.MSG_DATA))
    assert synced.server_msg_id == ack.server_msg_id

    conversation = c2c_conversation_id(alice, bob)
    history = await system.runtime.messages.history(conversation, 0, 10)
    assert [(m.seq, m.from_user_id, m.msg_data) for m in history] == [
        (ack.server_msg_id, alice, b"hello bob")
    ]
    assert await inbox_of(system, bob) == [(conversation, ack.server_msg_id)]
    assert await inbox_of(system, alice) == [(conversation, ack.server_msg_id)]
    session = await system.runtime.sessions.get(bob, conversation)
    assert session is not None
    assert session.last is not None
    assert (session.last.seq, session.unread) == (ack.server_msg_id, 1)
    # Everything that reached the sending device by now is its ack, and at most the notice
    # that bob's device has it (DeliveredNotify, once his SDK acked the push): no push of its
    # own message.
    await alice_phone.heartbeat()
    pushes = [e for e in drain(alice_phone) if isinstance(e, Push)]
    assert {p.command_id for p in pushes} <= {Cmd.DELIVERED_NOTIFY}, pushes


async def test_resend_returns_the_original_id_and_delivers_nothing_twice(system: System) -> None:
    await system.start_consumers()
    alice, bob = await system.user(), await system.user()
    alice_c = await system.login(alice)
    bob_c = await system.login(bob)
    client_msg_id = str(uuid.uuid4())

    first = await alice_c.send_text(bob, "once", client_msg_id=client_msg_id)
    await next_push(bob_c, Cmd.MSG_DATA)
    again = await alice_c.send_text(bob, "once (resent)", client_msg_id=client_msg_id)
    later = await alice_c.send_text(bob, "next")

    assert again.server_msg_id == first.server_msg_id
    assert again.create_time == first.create_time
    assert later.server_msg_id > first.server_msg_id
    # The next push bob gets is the next message: the resend delivered nothing.
    assert msg_of(await next_push(bob_c, Cmd.MSG_DATA)).server_msg_id == later.server_msg_id
    conversation = c2c_conversation_id(alice, bob)
    history = await system.runtime.messages.history(conversation, 0, 10)
    assert [m.msg_data for m in history] == [b"once", b"next"]
    assert await inbox_of(system, bob) == [
        (conversation, first.server_msg_id),
        (conversation, later.server_msg_id),
    ]


async def test_concurrent_senders_see_one_order(system: System) -> None:
    """Two users send into one conversation at once: server_msg_ids strictly increase in the
    stored order, and both sides receive the messages in that order."""
    await system.start_consumers()
    gate_a, gate_b = await system.gate(), await system.gate()
    alice, bob = await system.user(), await system.user()
    alice_c = await system.login(alice, gate_a)
    bob_c = await system.login(bob, gate_b)
    alice_pc = await system.login(alice, gate_b, client_type=ClientType.PC_WINDOWS)
    per_sender = 30

    async def send_all(client: Client, peer: UserId, tag: str) -> list[int]:
        acks = await asyncio.gather(
            *(client.send_text(peer, f"{tag}{i}") for i in range(per_sender))
        )
        return [a.server_msg_id for a in acks]

    sent_a, sent_b = await asyncio.gather(send_all(alice_c, bob, "a"), send_all(bob_c, alice, "b"))
    assert len(set(sent_a) | set(sent_b)) == 2 * per_sender

    conversation = c2c_conversation_id(alice, bob)
    stored = await system.runtime.messages.history(conversation, 0, 100)
    seqs = [m.seq for m in stored]
    assert seqs == sorted(seqs)
    assert len(seqs) == 2 * per_sender
    assert set(seqs) == set(sent_a) | set(sent_b)
    # Each sender's own messages are stored in the order it sent them (one connection).
    assert [m.msg_data for m in stored if m.from_user_id == alice] == [
        f"a{i}".encode() for i in range(per_sender)
    ]

    async def received(client: Client, count: int) -> list[int]:
        return [msg_of(await next_push(client, Cmd.MSG_DATA)).server_msg_id for _ in range(count)]

    assert await received(alice_pc, 2 * per_sender) == seqs  # sees both sides, in order
    assert await received(bob_c, per_sender) == sorted(sent_a)
    assert await received(alice_c, per_sender) == sorted(sent_b)


async def test_a_send_claiming_another_sender_is_refused(system: System) -> None:
    await system.start_consumers()
    alice, bob, mallory = await system.user(), await system.user(), await system.user()
    mallory_c = await system.login(mallory)
    bob_c = await system.login(bob)
    forged = message_pb2.MsgData(
        from_user_id=alice,  # pretends to be alice
        from_nick_name="alice",
        to_session_id=bob,
        client_msg_id=str(uuid.uuid4()),
        msg_type=base_pb2.MsgType.ValueType(MsgType.TEXT),
        session_type=base_pb2.SessionType.ValueType(SessionType.SINGLE),
        msg_data=b"it's me, alice",
    )
    with pytest.raises(ServerError) as refused:
        await mallory_c.send_message(forged)
    assert ExtResultCode(refused.value.code) is ExtResultCode.FORBIDDEN
    failed = await next_push(mallory_c, Cmd.MSG_DATA_ACK)
    assert isinstance(failed.message, message_pb2.MsgDataAck)
    assert ResCode(failed.message.res_code) is ResCode.UNKNOWN

    # Her own id (or 0) is fine; bob gets that message and never the forged one.
    ack = await mallory_c.send_text(bob, "it's me, mallory")
    pushed = msg_of(await next_push(bob_c, Cmd.MSG_DATA))
    assert (pushed.from_user_id, pushed.server_msg_id) == (mallory, ack.server_msg_id)
    assert pushed.from_nick_name == f"user{mallory}"
    runtime = system.runtime
    assert await runtime.messages.history(c2c_conversation_id(alice, bob), 0, 10) == []
    stored = await runtime.messages.history(c2c_conversation_id(mallory, bob), 0, 10)
    assert [m.msg_data for m in stored] == [b"it's me, mallory"]


async def test_invalid_sends_are_refused_with_an_error_and_a_failed_ack(system: System) -> None:
    await system.start_consumers()
    alice = await system.user()
    alice_c = await system.login(alice)
    nobody = UserId(alice + 1)  # never imported

    with pytest.raises(ServerError) as refused:
        await alice_c.send_text(nobody, "anyone there?")
    assert ExtResultCode(refused.value.code) is ExtResultCode.NOT_FOUND
    # CoffeeChat clients that ignore ErrorRsp get the same verdict as a MsgDataAck.
    failed = await next_push(alice_c, Cmd.MSG_DATA_ACK)
    assert isinstance(failed.message, message_pb2.MsgDataAck)
    assert ResCode(failed.message.res_code) is ResCode.UNKNOWN
    assert failed.message.server_msg_id == 0

    too_big = "x" * (system.runtime.settings.messaging.max_msg_data_bytes + 1)
    with pytest.raises(ServerError) as refused:
        await alice_c.send_text(alice, too_big)
    assert ExtResultCode(refused.value.code) is ExtResultCode.TOO_LARGE
    with pytest.raises(ServerError) as refused:
        await alice_c.send_text(alice, "long id", client_msg_id="c" * 65)
    assert ExtResultCode(refused.value.code) is ExtResultCode.INVALID_PARAMETER
    # Notes to self are allowed (a single chat with oneself).
    ack = await alice_c.send_text(alice, "note to self")
    assert ResCode(ack.res_code) is ResCode.OK
