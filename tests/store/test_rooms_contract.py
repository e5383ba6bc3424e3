"""The `RoomStore` contract, run against the in-memory twin and Redis.

Gate liveness comes from the live-gate registry of `store.routes` in both: the memory twin
asks a `MemoryRouteStore`, the Redis store reads the registry's keys in the same namespace.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from schemas.codes import RoomPostPolicy
from schemas.ids import GateId, UserId
from store.clock import ManualClock
from store.memory.rooms import MemoryRoomStore
from store.memory.routes import MemoryRouteStore
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.redis.rooms import RedisRoomStore
from store.redis.routes import RedisRouteStore
from store.rooms import Room, RoomStore, can_post
from store.routes import RouteStore

G1, G2 = GateId("room-g1"), GateId("room-g2")
ALICE, BOB = UserId(11), UserId(12)


@dataclass
class Harness:
    rooms: RoomStore
    routes: RouteStore

    async def alive(self, *gates: GateId) -> None:
        for gate in gates:
            await self.routes.gate_heartbeat(
                gate, tcp_addr="127.0.0.1:1", ws_addr="ws://127.0.0.1:2", connections=0, ttl=60
            )

    async def dead(self, gate: GateId) -> None:
        await self.routes.gate_down(gate)

    async def room(self, **settings: int | str | tuple[int, ...]) -> Room:
        room_id = await self.rooms.allocate_id()
        room = Room(room_id=room_id, name=f"room {room_id}", created_ms=1, **settings)  # type: ignore[arg-type]
        await self.rooms.create(room)
        return room


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, clock: ManualClock) -> Harness:
    if request.param == "memory":
        routes = MemoryRouteStore(clock=clock)

        async def live() -> list[str]:
            return [g.gate_id for g in await routes.live_gates()]

        return Harness(MemoryRoomStore(live=live, clock=clock), routes)
    redis: RedisClient = request.getfixturevalue("redis")
    keys: RedisKeys = request.getfixturevalue("redis_keys")
    return Harness(RedisRoomStore(redis, keys=keys), RedisRouteStore(redis, keys=keys))


async def test_create_get_list_and_close(store: Harness) -> None:
    rooms = store.rooms
    a = await store.room()
    b = await store.room(slow_mode_s=3, post_policy=RoomPostPolicy.LISTED, posters=(ALICE,))
    assert a.room_id != b.room_id
    assert await rooms.get(b.room_id) == b
    assert await rooms.get(999_999) is None
    assert [r.room_id for r in await rooms.list_open()] == [a.room_id, b.room_id]
    assert [r.room_id for r in await rooms.list_open(after=a.room_id)] == [b.room_id]
    assert [r.room_id for r in await rooms.list_open(limit=1)] == [a.room_id]

    await store.alive(G1)
    assert await rooms.join(a.room_id, G1, history=10) is not None
    assert await rooms.close(a.room_id, closed_ms=5, keep_s=60) == [G1]
    closed = await rooms.get(a.room_id)
    assert closed is not None
    assert not closed.open
    assert closed.closed_ms == 5
    assert [r.room_id for r in await rooms.list_open()] == [b.room_id]
    # Closing again tells nobody again; an unknown room is None.
    assert await rooms.close(a.room_id, closed_ms=6, keep_s=60) == []
    assert await rooms.close(999_999, closed_ms=6, keep_s=60) is None
    # A closed room takes no one and nothing.
    assert await rooms.join(a.room_id, G1, history=10) is None
    assert await rooms.claim(a.room_id, [ALICE], slow_mode_s=0) is None
    assert await rooms.append(a.room_id, [(1, b"x")], window=10) is None
    assert await rooms.ensure(a.room_id, G1, 1) is False
    assert await rooms.gates(a.room_id) == {}


async def test_presence_is_counted_per_gate_and_summed(store: Harness) -> None:
    rooms = store.rooms
    room = await store.room()
    await store.alive(G1, G2)
    first = await rooms.join(room.room_id, G1, history=0)
    assert first is not None
    assert first.member_count == 1
    assert first.room == room
    await rooms.join(room.room_id, G1, history=0)
    third = await rooms.join(room.room_id, G2, history=0)
    assert third is not None
    assert third.member_count == 3
    assert await rooms.gates(room.room_id) == {G1: 2, G2: 1}

    await rooms.leave(room.room_id, G1)
    await rooms.leave(room.room_id, G2)
    assert await rooms.gates(room.room_id) == {G1: 1}
    assert await rooms.member_count(room.room_id) == 1
    # A leave of a gate that has nobody there counts nothing below zero.
    await rooms.leave(room.room_id, G2)
    assert await rooms.gates(room.room_id) == {G1: 1}


async def test_a_dead_gate_stops_counting_and_restores_itself_when_alive(store: Harness) -> None:
    rooms = store.rooms
    room = await store.room()
    await store.alive(G1, G2)
    await rooms.join(room.room_id, G1, history=0)
    await rooms.join(room.room_id, G2, history=0)
    await rooms.join(room.room_id, G2, history=0)

    await store.dead(G2)
    assert await rooms.gates(room.room_id) == {G1: 1}
    assert await rooms.member_count(room.room_id) == 1

    # Back (its registry entry lapsed while it lived): its presence check restores it.
    await store.alive(G2)
    assert await rooms.ensure(room.room_id, G2, 2) is True
    assert await rooms.gates(room.room_id) == {G1: 1, G2: 2}
    # ensure never overwrites a count that is there (joins and leaves keep it).
    assert await rooms.ensure(room.room_id, G2, 7) is True
    assert await rooms.gates(room.room_id) == {G1: 1, G2: 2}


async def test_a_gate_starting_again_forgets_its_presence(store: Harness) -> None:
    rooms = store.rooms
    a, b = await store.room(), await store.room()
    await store.alive(G1, G2)
    await rooms.join(a.room_id, G1, history=0)
    await rooms.join(b.room_id, G1, history=0)
    await rooms.join(b.room_id, G2, history=0)

    await rooms.forget_gate(G1)

    assert await rooms.gates(a.room_id) == {}
    assert await rooms.gates(b.room_id) == {G2: 1}


async def test_claims_are_in_order_and_slow_mode_refuses_the_second_message(
    store: Harness,
) -> None:
    rooms = store.rooms
    room = await store.room()
    assert await rooms.claim(room.room_id, [ALICE, BOB, ALICE], slow_mode_s=0) == [1, 2, 3]
    slow = await rooms.claim(room.room_id, [ALICE, ALICE, BOB], slow_mode_s=30)
    assert slow is not None
    first, again, other = slow
    assert first == 4
    assert other == 5
    assert -30_000 <= again < 0  # minus the milliseconds left
    refused = await rooms.claim(room.room_id, [BOB], slow_mode_s=30)
    assert refused is not None
    assert refused[0] < 0


async def test_a_join_gets_the_window_and_an_append_finds_the_joined_gates(
    store: Harness,
) -> None:
    rooms = store.rooms
    room = await store.room(history=3)
    await store.alive(G1, G2)
    before = await rooms.join(room.room_id, G1, history=10)
    assert before is not None
    assert before.history == []
    assert before.last_seq == 0

    ids = await rooms.claim(room.room_id, [ALICE] * 5, slow_mode_s=0)
    assert ids == [1, 2, 3, 4, 5]
    gates = await rooms.append(room.room_id, [(i, b"m%d" % i) for i in ids], window=room.history)
    assert gates == {G1: 1}

    after = await rooms.join(room.room_id, G2, history=10)
    assert after is not None
    assert after.history == [b"m3", b"m4", b"m5"]  # the window, oldest first
    assert after.last_seq == 5
    assert after.member_count == 2
    fewer = await rooms.join(room.room_id, G2, history=2)
    assert fewer is not None
    assert fewer.history == [b"m4", b"m5"]

    assert await rooms.append(room.room_id, [(6, b"m6")], window=room.history) == {G1: 1, G2: 2}


async def test_a_room_without_a_window_keeps_nothing(store: Harness) -> None:
    rooms = store.rooms
    room = await store.room(history=0)
    await store.alive(G1)
    await rooms.append(room.room_id, [(1, b"m1")], window=0)
    joined = await rooms.join(room.room_id, G1, history=10)
    assert joined is not None
    assert joined.history == []
    assert joined.last_seq == 1


def test_who_may_post() -> None:
    everyone = Room(room_id=1, name="a")
    listed = Room(room_id=2, name="b", post_policy=RoomPostPolicy.LISTED, posters=(ALICE,))
    nobody = Room(room_id=3, name="c", post_policy=RoomPostPolicy.NOBODY)
    assert can_post(everyone, BOB)
    assert can_post(listed, ALICE)
    assert not can_post(listed, BOB)
    assert not can_post(nobody, ALICE)
