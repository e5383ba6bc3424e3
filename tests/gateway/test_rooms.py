"""`gateway.rooms.GateRooms` without sockets: membership, the fan-out from memory, joins that
race deliveries, slow members, closes — on the memory room store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence

import pytest

from gateway.rooms import GateRooms, Refused, RoomConnection
from schemas.codes import ExtResultCode, RoomExitReason
from schemas.commands import Cmd
from schemas.envelope import RoomClose, RoomDeliver, RoomItem
from schemas.frame import SharedPush
from schemas.ids import ConnId, GateId, TraceId
from schemas.pb.coffeebus import ext_pb2
from schemas.settings import RoomSettings
from store.memory.rooms import MemoryRoomStore
from store.rooms import Joined, Room

GATE = GateId("g-test")
ROOM = 7


class FakeConn:
    """A connection as the room code sees it: what it was sent, in order."""

    def __init__(self, conn_id: int, user_id: int) -> None:
        self.conn_id = conn_id
        self.user_id = user_id
        self.backlog = 0
        self.sent: list[tuple[int, bytes, int | None]] = []
        self.pumps = 0
        self.writes = 0

    def queue(self, command_id: int, body: bytes, seq: int | None = None) -> None:
        self.sent.append((command_id, body, seq))

    def push(self, command_id: int, pushes: Sequence[SharedPush]) -> None:
        self.sent.extend((command_id, p.body, None) for p in pushes)
        self.writes += 1

    def pump(self) -> None:
        self.pumps += 1

    def texts(self) -> list[bytes]:
        return [
            ext_pb2.RoomMsg.FromString(b).msg_data for c, b, _ in self.sent if c == Cmd.ROOM_MSG
        ]

    def exits(self) -> list[ext_pb2.RoomExitNotify]:
        return [
            ext_pb2.RoomExitNotify.FromString(b)
            for c, b, _ in self.sent
            if c == Cmd.ROOM_EXIT_NOTIFY
        ]


class SlowJoinStore(MemoryRoomStore):
    """The memory store whose joins wait until released: a delivery can arrive meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.joining = asyncio.Event()

    async def join(self, room_id: int, gate_id: GateId, *, history: int) -> Joined | None:
        found = await super().join(room_id, gate_id, history=history)
        self.joining.set()
        await self.release.wait()
        return found


def _msg(msg_id: int, text: str) -> bytes:
    return ext_pb2.RoomMsg(room_id=ROOM, msg_id=msg_id, msg_data=text.encode()).SerializeToString()


def _record(*items: tuple[int, str], skip: int = 0) -> RoomDeliver:
    return RoomDeliver(
        room_id=ROOM,
        items=tuple(
            RoomItem(msg_id=i, body=_msg(i, t), skip_conn=ConnId(skip), sent_ms=0) for i, t in items
        ),
        trace_id=TraceId("t"),
        ts_ms=0,
    )


async def _store_with_room(
    store: MemoryRoomStore | None = None, **settings: int
) -> MemoryRoomStore:
    store = store or MemoryRoomStore()
    await store.create(Room(room_id=ROOM, name="r", **settings))  # type: ignore[arg-type]
    return store


def _rooms(store: MemoryRoomStore, **settings: int) -> tuple[GateRooms, list[Awaitable[None]]]:
    spawned: list[Awaitable[None]] = []
    rooms = GateRooms(
        gate_id=GATE,
        store=store,
        settings=RoomSettings(**settings),
        spawn=lambda coro, name: spawned.append(coro),
    )
    return rooms, spawned


def _deliver(rooms: GateRooms, record: RoomDeliver) -> dict[int, RoomConnection]:
    touched: dict[int, RoomConnection] = {}
    rooms.deliver(record, touched)
    return touched


async def test_members_get_each_message_once_but_the_sender() -> None:
    store = await _store_with_room()
    rooms, _ = _rooms(store)
    a, b, c = FakeConn(1, 11), FakeConn(2, 12), FakeConn(3, 13)
    for n, conn in enumerate((a, b, c)):
        await rooms.join(conn, n + 1, ext_pb2.RoomJoinReq(room_id=ROOM))
    rsp = ext_pb2.RoomJoinRsp.FromString(c.sent[0][1])
    assert (rsp.room_id, rsp.member_count, c.sent[0][2]) == (ROOM, 3, 3)

    touched = _deliver(rooms, _record((1, "hi"), (2, "there"), skip=1))

    assert touched == {}  # written at once, nothing left to pump
    assert (a.writes, b.writes, c.writes) == (0, 1, 1)  # the sender has nothing to write
    assert a.texts() == []
    assert b.texts() == [b"hi", b"there"]
    assert c.texts() == [b"hi", b"there"]
    assert rooms.deliveries == 4


async def test_a_join_amid_deliveries_misses_nothing_and_doubles_nothing() -> None:
    store = await _store_with_room(SlowJoinStore())
    assert isinstance(store, SlowJoinStore)
    rooms, _ = _rooms(store)
    for msg_id in (1, 2):
        await store.append(ROOM, [(msg_id, _msg(msg_id, f"m{msg_id}"))], window=10)
    joiner = FakeConn(1, 11)
    joining = asyncio.create_task(rooms.join(joiner, 5, ext_pb2.RoomJoinReq(room_id=ROOM)))
    await store.joining.wait()
    # The store counted the gate and read m1, m2; m2 (again) and m3 reach the gate before
    # the join is answered.
    _deliver(rooms, _record((2, "m2"), (3, "m3")))
    assert joiner.sent == []
    store.release.set()
    await joining

    rsp = ext_pb2.RoomJoinRsp.FromString(joiner.sent[0][1])
    assert [m.msg_data for m in rsp.history] == [b"m1", b"m2"]
    assert joiner.texts() == [b"m3"]  # held, after the answer; m2 not twice
    _deliver(rooms, _record((4, "m4")))
    assert joiner.texts() == [b"m3", b"m4"]


async def test_a_slow_member_is_dropped_from_the_room_not_the_gate() -> None:
    store = await _store_with_room()
    rooms, spawned = _rooms(store, slow_backlog_frames=5)
    quick, slow = FakeConn(1, 11), FakeConn(2, 12)
    await rooms.join(quick, 1, ext_pb2.RoomJoinReq(room_id=ROOM))
    await rooms.join(slow, 1, ext_pb2.RoomJoinReq(room_id=ROOM))
    slow.backlog = 6

    _deliver(rooms, _record((1, "m1")))

    assert quick.texts() == [b"m1"]
    assert slow.texts() == []
    [notify] = slow.exits()
    assert RoomExitReason(notify.reason) is RoomExitReason.TOO_SLOW
    assert rooms.members(ROOM) == 1
    assert rooms.dropped_slow == 1
    for leave in spawned:
        await leave
    assert await store.member_count(ROOM) == 1


async def test_closing_tells_every_member_and_forgets_the_room() -> None:
    store = await _store_with_room()
    rooms, _ = _rooms(store)
    a, b = FakeConn(1, 11), FakeConn(2, 12)
    await rooms.join(a, 1, ext_pb2.RoomJoinReq(room_id=ROOM))
    await rooms.join(b, 1, ext_pb2.RoomJoinReq(room_id=ROOM))
    touched: dict[int, RoomConnection] = {}
    rooms.close_room(RoomClose(room_id=ROOM, text="bye", trace_id=TraceId("t"), ts_ms=0), touched)
    assert set(touched) == {1, 2}
    for conn in (a, b):
        [notify] = conn.exits()
        assert (RoomExitReason(notify.reason), notify.text) == (RoomExitReason.CLOSED, "bye")
    assert rooms.members(ROOM) == 0
    assert rooms.rooms_of(1) == frozenset()
    with pytest.raises(Refused) as refused:
        rooms.check_send(a, ext_pb2.RoomSendReq(room_id=ROOM, client_msg_id="x"), 0.0)
    assert refused.value.code is ExtResultCode.FORBIDDEN


async def test_the_presence_check_closes_a_room_closed_behind_the_gates_back() -> None:
    store = await _store_with_room()
    rooms, _ = _rooms(store)
    a = FakeConn(1, 11)
    await rooms.join(a, 1, ext_pb2.RoomJoinReq(room_id=ROOM))
    await store.close(ROOM, closed_ms=1, keep_s=60)  # its RoomClose never came
    await rooms.check_presence()
    assert [RoomExitReason(n.reason) for n in a.exits()] == [RoomExitReason.CLOSED]
    assert rooms.members(ROOM) == 0


async def test_the_presence_check_restores_a_pruned_count() -> None:
    store = await _store_with_room()
    rooms, _ = _rooms(store)
    await rooms.join(FakeConn(1, 11), 1, ext_pb2.RoomJoinReq(room_id=ROOM))
    await rooms.join(FakeConn(2, 12), 1, ext_pb2.RoomJoinReq(room_id=ROOM))
    await store.forget_gate(GATE)
    assert await store.member_count(ROOM) == 0
    await rooms.check_presence()
    assert await store.member_count(ROOM) == 2


async def test_limits_and_leaving() -> None:
    store = await _store_with_room()
    for extra in (8, 9):
        await store.create(Room(room_id=extra, name="x"))
    rooms, spawned = _rooms(store, max_rooms_per_connection=2, user_rate_burst=2)
    a = FakeConn(1, 11)
    await rooms.join(a, 1, ext_pb2.RoomJoinReq(room_id=ROOM))
    await rooms.join(a, 2, ext_pb2.RoomJoinReq(room_id=8))
    with pytest.raises(Refused) as full:
        await rooms.join(a, 3, ext_pb2.RoomJoinReq(room_id=9))
    assert full.value.code is ExtResultCode.TOO_LARGE
    with pytest.raises(Refused) as again:
        await rooms.join(a, 3, ext_pb2.RoomJoinReq(room_id=ROOM))
    assert again.value.code is ExtResultCode.INVALID_PARAMETER
    with pytest.raises(Refused) as unknown:
        await rooms.join(FakeConn(2, 12), 3, ext_pb2.RoomJoinReq(room_id=99))
    assert unknown.value.code is ExtResultCode.NOT_FOUND
    assert rooms.members(99) == 0

    send = ext_pb2.RoomSendReq(room_id=ROOM, client_msg_id="x")
    rooms.check_send(a, send, 0.0)
    rooms.check_send(a, send, 0.0)
    with pytest.raises(Refused) as limited:
        rooms.check_send(a, send, 0.0)
    assert limited.value.code is ExtResultCode.RATE_LIMITED

    await rooms.leave(a, 4, ext_pb2.RoomLeaveReq(room_id=8))
    assert await store.member_count(8) == 0
    rooms.connection_closed(a.conn_id, a.user_id, user_gone=True)
    for leave in spawned:
        await leave
    assert await store.member_count(ROOM) == 0
    assert rooms.rooms_of(a.conn_id) == frozenset()
