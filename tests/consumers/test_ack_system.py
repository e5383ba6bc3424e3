"""The ack group end to end: read receipts and delivery acks through the gate and the SDK."""

from __future__ import annotations

import asyncio

from consumers.ack import AckHandler
from schemas.codes import ClientType, GroupType, SessionType
from schemas.commands import Cmd
from schemas.ids import GroupId, c2c_conversation_id
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, message_pb2
from store.groups import GroupSpec
from tests.consumers.conftest import Seeder, System
from tests.waiting import wait_for


async def test_read_ack_moves_forward_only_and_notifies_the_peer_and_other_devices(
    system: System,
) -> None:
    await system.start_consumers()
    alice, bob = await system.user(), await system.user()
    seed = Seeder(system.runtime)
    sent = [await seed.message(alice, bob, gap=i) for i in range(3)]
    conv = c2c_conversation_id(alice, bob)
    alice_sdk = await system.login(alice)
    bob_phone = await system.login(bob, client_type=ClientType.ANDROID)
    bob_desk = await system.login(bob, client_type=ClientType.MAC_OS)

    await bob_phone.read_ack(alice, sent[1].seq)

    (to_alice,) = await system.wait_pushes(alice_sdk, Cmd.MSG_READ_NOTIFY)
    assert isinstance(to_alice, message_pb2.MsgDataReadNotify)
    assert (to_alice.user_id, to_alice.session_id, to_alice.msg_id) == (bob, bob, sent[1].seq)
    (to_desk,) = await system.wait_pushes(bob_desk, Cmd.MSG_READ_NOTIFY)
    assert isinstance(to_desk, message_pb2.MsgDataReadNotify)
    assert (to_desk.user_id, to_desk.session_id, to_desk.msg_id) == (bob, alice, sent[1].seq)
    await bob_phone.heartbeat()  # anything addressed to the phone came before this answer
    assert system.pushes(bob_phone, Cmd.MSG_READ_NOTIFY) == []
    assert (await bob_phone.recent_sessions()).unread_counts == 1

    # A stale ack changes nothing and notifies nobody; one beyond the newest message stops
    # at the newest message.
    await bob_desk.read_ack(alice, sent[0].seq)
    await bob_desk.read_ack(alice, sent[2].seq + 1000)
    notes = await system.wait_pushes(alice_sdk, Cmd.MSG_READ_NOTIFY, count=2)
    assert [n.msg_id for n in notes if isinstance(n, message_pb2.MsgDataReadNotify)] == [
        sent[1].seq,
        sent[2].seq,
    ]
    assert await system.runtime.sessions.read_seq(bob, conv) == sent[2].seq
    assert (await bob_phone.recent_sessions()).unread_counts == 0


async def test_concurrent_read_acks_from_two_devices_keep_the_highest(system: System) -> None:
    await system.start_consumers()
    alice, bob = await system.user(), await system.user()
    seed = Seeder(system.runtime)
    sent = [await seed.message(alice, bob, gap=i % 2) for i in range(12)]
    phone = await system.login(bob, client_type=ClientType.ANDROID)
    desk = await system.login(bob, client_type=ClientType.PC_WINDOWS)
    conv = c2c_conversation_id(alice, bob)

    await asyncio.gather(
        *(phone.read_ack(alice, m.seq) for m in sent[::2]),
        *(desk.read_ack(alice, m.seq) for m in reversed(sent[1::2])),
    )

    async def all_read() -> bool:
        return await system.runtime.sessions.read_seq(bob, conv) == sent[-1].seq

    await wait_for(all_read)
    rsp = await phone.recent_sessions()
    assert [s.unread_cnt for s in rsp.contact_session_list] == [0]


async def test_the_sender_hears_that_its_messages_reached_the_peer(system: System) -> None:
    """DeliveredNotify (0x0820) to every device of the sender when the receiver's delivery
    mark moves: once per move, never for a stale or repeated ack, never to the receiver."""
    await system.start_consumers()
    alice, bob = await system.user(), await system.user()
    alice_phone = await system.login(alice, client_type=ClientType.ANDROID)
    alice_desk = await system.login(alice, client_type=ClientType.MAC_OS)
    bob_sdk = await system.login(bob, auto_ack=False)
    first = await alice_phone.send_text(bob, "one")
    second = await alice_phone.send_text(bob, "two")
    pushed = await system.wait_pushes(bob_sdk, Cmd.MSG_DATA, count=2)
    assert [m.server_msg_id for m in pushed if isinstance(m, message_pb2.MsgData)] == [
        first.server_msg_id,
        second.server_msg_id,
    ]
    assert system.pushes(alice_phone, Cmd.DELIVERED_NOTIFY) == []  # nothing acked yet

    second_pushed = pushed[1]
    assert isinstance(second_pushed, message_pb2.MsgData)
    await bob_sdk.ack_message(second_pushed, seq=1)

    for device in (alice_phone, alice_desk):
        (note,) = await system.wait_pushes(device, Cmd.DELIVERED_NOTIFY)
        assert isinstance(note, ext_pb2.DeliveredNotify)
        assert (note.user_id, note.session_id, note.msg_id, note.session_type) == (
            bob,
            bob,
            second.server_msg_id,
            base_pb2.SESSION_TYPE_SINGLE,
        )
    # A stale ack and a repeated one move nothing: nobody is told again. The read ack behind
    # them (same user, same partition, handled after them) is the barrier.
    first_pushed = pushed[0]
    assert isinstance(first_pushed, message_pb2.MsgData)
    await bob_sdk.ack_message(first_pushed, seq=2)
    await bob_sdk.ack_message(second_pushed, seq=3)
    await bob_sdk.read_ack(alice, second.server_msg_id)
    await system.wait_pushes(alice_phone, Cmd.MSG_READ_NOTIFY)
    await system.wait_pushes(alice_desk, Cmd.MSG_READ_NOTIFY)
    assert len(system.pushes(alice_phone, Cmd.DELIVERED_NOTIFY)) == 1
    assert len(system.pushes(alice_desk, Cmd.DELIVERED_NOTIFY)) == 1
    assert system.pushes(bob_sdk, Cmd.DELIVERED_NOTIFY) == []


async def test_a_receiving_sdk_acks_on_its_own_and_groups_get_no_delivered_notify(
    system: System,
) -> None:
    await system.start_consumers()
    alice, bob = await system.user(), await system.user()
    created = await system.runtime.groups.create(
        GroupSpec(name="g", owner_id=alice, group_type=GroupType.NORMAL), [bob], create_key="k"
    )
    group_id = created.group.group_id
    alice_sdk = await system.login(alice)
    bob_sdk = await system.login(bob)  # the SDK acks pushed messages itself (auto_ack)

    await alice_sdk.send_text(group_id, "to the group", session_type=SessionType.GROUP)
    await system.wait_pushes(bob_sdk, Cmd.MSG_DATA)  # and acked, before what follows
    sent = await alice_sdk.send_text(bob, "to bob")

    (note,) = await system.wait_pushes(alice_sdk, Cmd.DELIVERED_NOTIFY)
    assert isinstance(note, ext_pb2.DeliveredNotify)
    assert (note.user_id, note.msg_id) == (bob, sent.server_msg_id)
    # bob's group receipt went before his c2c one (one connection, one partition, in order),
    # and his read ack after both: only the single chat said "delivered".
    await bob_sdk.read_ack(alice, sent.server_msg_id)
    await system.wait_pushes(alice_sdk, Cmd.MSG_READ_NOTIFY)
    assert len(system.pushes(alice_sdk, Cmd.DELIVERED_NOTIFY)) == 1


async def test_delivery_acks_mark_single_and_group_messages(system: System) -> None:
    await system.start_consumers()
    alice, bob = await system.user(), await system.user()
    seed = Seeder(system.runtime)
    c2c = [await seed.message(alice, bob) for _ in range(2)]
    created = await system.runtime.groups.create(
        GroupSpec(name="g", owner_id=alice, group_type=GroupType.NORMAL), [bob], create_key="k"
    )
    group_id = created.group.group_id
    in_group = await seed.message(alice, group_id, recipients=[bob], session_type=SessionType.GROUP)
    bob_sdk = await system.login(bob)

    for msg in [c2c[0], in_group]:  # the SDK's receipt: its own id, the sender as session
        pushed = message_pb2.MsgData(
            from_user_id=msg.from_user_id,
            to_session_id=msg.to_session_id,
            client_msg_id=msg.client_msg_id,
            server_msg_id=msg.seq,
            session_type=base_pb2.SessionType.ValueType(msg.session_type),
        )
        await bob_sdk.ack_message(pushed, seq=1)
    # A client echoing the pushed message's ids (from = the sender, to = itself).
    echo = message_pb2.MsgDataAck(
        from_user_id=alice,
        to_session_id=bob,
        client_msg_id=c2c[1].client_msg_id,
        server_msg_id=c2c[1].seq,
        session_type=base_pb2.SESSION_TYPE_SINGLE,
    )
    await bob_sdk.send(Cmd.MSG_DATA_ACK, echo)

    handler = system.handler("ack")
    assert isinstance(handler, AckHandler)
    conv = c2c_conversation_id(alice, bob)

    async def delivered() -> bool:
        acks = await system.runtime.groups.acks(GroupId(group_id))
        return (
            await handler.deliveries.delivered_seq(bob, conv) == c2c[-1].seq
            and bob in acks
            and acks[bob].seq == in_group.seq
        )

    await wait_for(delivered)
