"""Business events end to end: what the msg, ack, group handlers and the gate publish on
``biz.events.*`` — right fields, keyed so one conversation's (user's, group's) events are in
order, ids stable for dedupe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from bus.base import Record
from consumers.msg import MsgHandler
from schemas.bizevents import (
    BizEvent,
    BizTopic,
    GroupChanged,
    MessageDelivered,
    MessageRead,
    MessageRevoked,
    MessageStored,
    UserOffline,
    UserOnline,
    decode_event,
)
from schemas.codes import ClientType, MsgType, SessionType
from schemas.commands import Cmd
from schemas.ids import c2c_conversation_id
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2
from tests.consumers.biztap import Tap
from tests.consumers.conftest import System

T = TypeVar("T")


def _events(records: Sequence[Record]) -> list[BizEvent]:
    return [decode_event(r.value) for r in records]


def _of(records: Sequence[Record], kind: type[T]) -> list[T]:
    return [e for e in _events(records) if isinstance(e, kind)]


async def test_message_events_of_a_conversation_arrive_in_seq_order(system: System) -> None:
    await system.start_consumers()
    alice, bob = await system.user(), await system.user()
    conversation = c2c_conversation_id(alice, bob)
    tap = await Tap(system, [BizTopic.MESSAGES], lambda key: key == conversation.encode()).start()
    sender = await system.login(alice, client_type=ClientType.IOS)
    receiver = await system.login(bob)  # acks every push (auto_ack)

    acks = [await sender.send_text(bob, f"m{i}") for i in range(12)]
    seqs = [a.server_msg_id for a in acks]
    await tap.wait(lambda records: len(_of(records, MessageStored)) >= len(seqs))
    stored = _of(tap.records, MessageStored)
    assert [e.seq for e in stored] == seqs
    assert seqs == sorted(set(seqs))
    first = stored[0]
    assert (first.from_user_id, first.to_session_id) == (alice, bob)
    assert (first.session_type, first.msg_type) == (SessionType.SINGLE, MsgType.TEXT)
    assert (first.sender_client_type, first.msg_data) == (ClientType.IOS, b"m0")
    assert first.client_msg_id == acks[0].client_msg_id
    assert first.id == f"message.stored:{conversation}:{seqs[0]}"
    assert all(r.key == conversation.encode() for r in tap.records)

    # Delivered (bob's device acked), read, revoked: all on the conversation's key.
    await tap.wait(
        lambda records: any(
            e.user_id == bob and e.seq == seqs[-1] for e in _of(records, MessageDelivered)
        )
    )
    await receiver.read_ack(alice, seqs[5])
    await tap.wait(lambda records: bool(_of(records, MessageRead)))
    (read,) = _of(tap.records, MessageRead)
    assert (read.user_id, read.session_id, read.seq) == (bob, alice, seqs[5])
    assert read.id == f"message.read:{bob}:{conversation}:{seqs[5]}"
    revoke = ext_pb2.RevokeReq(
        session_type=base_pb2.SESSION_TYPE_SINGLE, session_id=bob, server_msg_id=seqs[-1]
    )
    await sender.request(Cmd.REVOKE_REQ, revoke)
    await tap.wait(lambda records: bool(_of(records, MessageRevoked)))
    (revoked,) = _of(tap.records, MessageRevoked)
    assert (revoked.seq, revoked.revoked_by, revoked.from_user_id) == (seqs[-1], alice, alice)
    # The revoke came after every message it revokes, on the same partition.
    events = _events(tap.records)
    assert events.index(revoked) > events.index(stored[-1])
    await tap.stop()


async def test_message_contents_can_be_left_out(system: System) -> None:
    await system.start_consumers(["msg"])
    handler = system.handler("msg")
    assert isinstance(handler, MsgHandler)
    handler.include_msg_data = False
    alice, bob = await system.user(), await system.user()
    conversation = c2c_conversation_id(alice, bob)
    tap = await Tap(system, [BizTopic.MESSAGES], lambda key: key == conversation.encode()).start()
    sender = await system.login(alice)
    await sender.send_text(bob, "secret")
    await tap.wait(lambda records: bool(_of(records, MessageStored)))
    assert _of(tap.records, MessageStored)[0].msg_data is None
    await tap.stop()


async def test_online_and_offline_per_connection(system: System) -> None:
    alice = await system.user()
    gate = await system.gate()
    tap = await Tap(system, [BizTopic.USERS], lambda key: key == b"%d" % alice).start()

    phone = await system.login(alice, gate, client_type=ClientType.ANDROID)
    desk = await system.login(alice, gate, client_type=ClientType.MAC_OS)
    await phone.logout()
    await desk.close()

    await tap.wait(lambda records: len(records) == 4)
    events = _events(tap.records)
    assert [type(e) for e in events[:2]] == [UserOnline, UserOnline]
    assert {e.client_type for e in events[:2] if isinstance(e, UserOnline)} == {
        ClientType.ANDROID,
        ClientType.MAC_OS,
    }
    offline = {e.client_type: e for e in events[2:] if isinstance(e, UserOffline)}
    assert offline[ClientType.ANDROID].reason == "logout"
    assert offline[ClientType.MAC_OS].reason == "closed"
    # Each connection's offline pairs with its online (same gate and connection).
    online = {e.conn_id: e for e in events if isinstance(e, UserOnline)}
    assert {e.conn_id for e in offline.values()} == set(online)
    assert all(e.gate_id == gate.gate_id and e.user_id == alice for e in online.values())
    await tap.stop()


async def test_group_changes(system: System) -> None:
    await system.start_consumers(["msg", "group"])
    owner, a, b = await system.user(), await system.user(), await system.user()
    tap = await Tap(system, [BizTopic.GROUPS], lambda key: True).start()
    sdk = await system.login(owner)

    created = await sdk.create_group("team", [a])
    group_id = created.group_info.group_id
    await sdk.invite_members(group_id, [b])
    await sdk.kick_members(group_id, [a])
    await sdk.disband_group(group_id)

    def mine(records: Sequence[Record]) -> list[GroupChanged]:
        return [e for e in _of(records, GroupChanged) if e.group_id == group_id]

    await tap.wait(lambda records: len(mine(records)) == 4)
    changes = mine(tap.records)
    assert [(e.change, sorted(e.members)) for e in changes] == [
        ("created", sorted([owner, a])),
        ("members_added", [b]),
        ("members_removed", [a]),
        ("disbanded", sorted([owner, b])),
    ]
    assert all(e.operator_user_id == owner and e.group_name == "team" for e in changes)
    assert len({e.id for e in changes}) == 4
    await tap.stop()
