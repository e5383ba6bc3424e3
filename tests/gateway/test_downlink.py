"""Downlink: records on a gate's topic reach the right connections, and only those."""

from __future__ import annotations

import pytest

from bus.base import Record
from gateway.server import Gate
from schemas.commands import Cmd
from schemas.envelope import (
    Deliver,
    GateBatch,
    Kick,
    Reply,
    RoomClose,
    RoomDeliver,
    RoomItem,
    Target,
    encode_gate_record,
    now_ms,
)
from schemas.ids import ConnId, UserId, new_trace_id
from schemas.pb.coffeebus import ext_pb2
from store.ids import UserId as StoreUserId
from store.memory.rooms import MemoryRoomStore
from store.rooms import Room
from tests.gateway.client import Kind
from tests.gateway.conftest import Env
from tests.waiting import wait_for

ROOM = 31


async def conn_id_of(env: Env, user_id: int) -> int:
    [route] = await env.routes.get(StoreUserId(user_id))
    return int(route.conn_id)


@pytest.mark.parametrize("kind", ["tcp", "ws"])
async def test_one_record_delivers_to_many_connections(env: Env, kind: Kind) -> None:
    for uid in (2001, 2002, 2003):
        await env.user(uid)
    gate = await env.gate()
    clients = {}
    for uid in (2001, 2002, 2003):
        clients[uid] = await env.connect(gate, kind)
        await clients[uid].login(uid, f"token-{uid}")
    targets = [
        Target(conn_id=ConnId(await conn_id_of(env, u)), user_id=UserId(u)) for u in (2001, 2002)
    ]
    stale = Target(conn_id=ConnId(12345), user_id=UserId(2001))  # no such connection
    wrong_user = Target(conn_id=targets[0].conn_id, user_id=UserId(2003))  # id reused? never
    body = b"\x08\x01"
    record = Deliver(
        cmd=Cmd.MSG_DATA,
        body=body,
        targets=(*targets, stale, wrong_user),
        trace_id=new_trace_id(),
        ts_ms=now_ms(),
    )
    await env.bus.publish(gate.topic, encode_gate_record(record), key=b"1")
    reply = Reply(
        target=targets[1],
        cmd=Cmd.MSG_DATA_ACK,
        seq=77,
        body=b"",
        trace_id=new_trace_id(),
        ts_ms=now_ms(),
    )
    await env.bus.publish(gate.topic, encode_gate_record(reply), key=b"1")
    for uid in (2001, 2002):
        frame = await clients[uid].expect(Cmd.MSG_DATA)
        assert (frame.seq, frame.body) == (1, body)  # the connection's first push
    ack = await clients[2002].expect(Cmd.MSG_DATA_ACK)
    assert ack.seq == 77  # a reply echoes the request's seq
    await wait_for(lambda: gate.stats.downlink_unknown == 2)
    # 2003 got nothing: its next frame is the answer to its own heartbeat.
    seq = await clients[2003].send(Cmd.HEARTBEAT)
    assert (await clients[2003].expect(Cmd.HEARTBEAT)).seq == seq


async def test_a_batch_record_applies_its_items_in_order(memory_env: Env) -> None:
    await memory_env.user(2005)
    gate = await memory_env.gate()
    client = await memory_env.connect(gate, "tcp")
    await client.login(2005, "token-2005")
    target = Target(conn_id=ConnId(await conn_id_of(memory_env, 2005)), user_id=UserId(2005))
    trace = new_trace_id()
    items = (
        Reply(target=target, cmd=Cmd.MSG_DATA_ACK, seq=9, body=b"", trace_id=trace, ts_ms=1),
        Deliver(cmd=Cmd.MSG_DATA, body=b"\x08\x01", targets=(target,), trace_id=trace, ts_ms=1),
        Deliver(cmd=Cmd.MSG_DATA, body=b"\x08\x02", targets=(target,), trace_id=trace, ts_ms=1),
        Kick(target=target, reason=3, new_client_type=0, text="bye", trace_id=trace, ts_ms=1),
    )
    await memory_env.bus.publish(gate.topic, encode_gate_record(GateBatch(items)), key=b"0")
    assert (await client.expect(Cmd.MSG_DATA_ACK)).seq == 9
    assert (await client.expect(Cmd.MSG_DATA)).body == b"\x08\x01"
    assert (await client.expect(Cmd.MSG_DATA)).body == b"\x08\x02"
    [notify] = await client.wait_closed()
    assert ext_pb2.KickNotify.FromString(notify.body).reason == 3


async def test_kick_record_and_bad_records(memory_env: Env) -> None:
    await memory_env.user(2004)
    gate = await memory_env.gate()
    client = await memory_env.connect(gate, "tcp")
    await client.login(2004, "token-2004")
    await memory_env.bus.publish(gate.topic, b"not a record", key=b"0")
    kick = Kick(
        target=Target(conn_id=ConnId(await conn_id_of(memory_env, 2004)), user_id=UserId(2004)),
        reason=3,
        new_client_type=0,
        text="token revoked",
        trace_id=new_trace_id(),
        ts_ms=now_ms(),
    )
    await memory_env.bus.publish(gate.topic, encode_gate_record(kick), key=b"0")
    [notify] = await client.wait_closed()
    assert ext_pb2.KickNotify.FromString(notify.body).reason == 3
    assert gate.stats.downlink_bad_records == 1
    await wait_for(lambda: _routes_gone(memory_env, 2004))


async def _routes_gone(env: Env, user_id: int) -> bool:
    return not await env.routes.get(StoreUserId(user_id))


async def test_a_batchs_room_records_are_merged_per_room_and_kept_in_order(
    memory_env: Env,
) -> None:
    """Two `RoomDeliver` records of one room in a batch reach a member as one write, in the
    room's order, and a `RoomClose` after them in the batch still comes after them."""
    await memory_env.user(2011)
    store = MemoryRoomStore()
    await store.create(Room(room_id=ROOM, name="lobby"))
    gate = Gate(
        memory_env.settings(),
        bus=memory_env.bus,
        user_store=memory_env.users,
        route_store=memory_env.routes,
        topology=memory_env.topology,
        room_store=store,
    )
    memory_env.gates.append(gate)
    await gate.start()
    client = await memory_env.connect(gate, "tcp")
    await client.login(2011, "token-2011")
    await client.send(Cmd.ROOM_JOIN_REQ, ext_pb2.RoomJoinReq(room_id=ROOM), seq=5)
    await client.expect(Cmd.ROOM_JOIN_RSP)

    def room_record(offset: int, value: RoomDeliver | RoomClose) -> Record:
        return Record(gate.topic, 0, offset, b"r", encode_gate_record(value), (), 0)

    def deliver(*msg_ids: int) -> RoomDeliver:
        items = tuple(
            RoomItem(
                msg_id=m,
                body=ext_pb2.RoomMsg(room_id=ROOM, msg_id=m).SerializeToString(),
                skip_conn=ConnId(0),
                sent_ms=0,
            )
            for m in msg_ids
        )
        return RoomDeliver(room_id=ROOM, items=items, trace_id=new_trace_id(), ts_ms=0)

    close = RoomClose(room_id=ROOM, text="over", trace_id=new_trace_id(), ts_ms=0)
    await gate._on_records(
        [
            room_record(0, deliver(1, 2)),
            room_record(1, deliver(3)),
            room_record(2, close),
            room_record(3, deliver(4)),  # after the close: nobody is in the room any more
        ]
    )
    got = [ext_pb2.RoomMsg.FromString((await client.expect(Cmd.ROOM_MSG)).body) for _ in range(3)]
    assert [m.msg_id for m in got] == [1, 2, 3]
    exit_notify = ext_pb2.RoomExitNotify.FromString(
        (await client.expect(Cmd.ROOM_EXIT_NOTIFY)).body
    )
    assert exit_notify.text == "over"
    assert gate.rooms.deliveries == 3
