"""Chat rooms end to end (issue 15, section 2): the server API creates and closes rooms,
clients join, talk and leave through gates, the room group sequences and delivers — in the
embedded mode and on Kafka, Redis and FerretDB, with two gates.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.bizevents import BizTopic, RoomMessage, decode_event
from schemas.codes import ExtResultCode, RoomExitReason, RoomPostPolicy
from schemas.commands import Cmd
from schemas.pb.coffeebus import ext_pb2
from sdk.client import Client
from sdk.errors import ServerError
from tests.consumers.apiclient import system_api
from tests.consumers.biztap import Tap
from tests.consumers.conftest import System
from tests.waiting import wait_for


async def _create(system: System, **body: Any) -> int:
    async with system_api(system) as api:
        response = await api.post("/v1/rooms", json={"name": "lobby", **body})
    assert response.status_code == 201, response.text
    room_id: int = response.json()["room_id"]
    return room_id


async def _refused(call: Any, code: ExtResultCode) -> ServerError:
    with pytest.raises(ServerError) as caught:
        await call
    assert caught.value.code is code, caught.value
    return caught.value


def _texts(system: System, client: Client) -> list[str]:
    return [m.msg_data.decode() for m in system.pushes(client, Cmd.ROOM_MSG)]  # type: ignore[attr-defined]


async def test_messages_reach_every_member_on_two_gates_with_one_record_per_gate(
    system: System,
) -> None:
    await system.start_consumers(["room"])
    g1, g2 = await system.gate(), await system.gate()
    room = await _create(system)
    users = [await system.user() for _ in range(4)]
    alice = await system.login(users[0], g1)
    near = [await system.login(u, g1) for u in users[1:3]]
    far = await system.login(users[3], g2)
    joined = await alice.join_room(room)
    assert joined.room_id == room
    assert joined.name == "lobby"
    assert joined.member_count == 1
    for client in [*near, far]:
        await client.join_room(room)
    assert await far.room_member_count(room) == 4

    rsp = await alice.send_room(room, "hello", client_msg_id="c1")
    assert rsp.room_id == room
    assert rsp.client_msg_id == "c1"
    assert rsp.msg_id >= 1

    for client in [*near, far]:
        [msg] = await system.wait_pushes(client, Cmd.ROOM_MSG)
        assert isinstance(msg, ext_pb2.RoomMsg)
        assert (msg.room_id, msg.msg_id, msg.from_user_id) == (room, rsp.msg_id, users[0])
        assert (msg.client_msg_id, msg.msg_data) == ("c1", b"hello")
        assert msg.create_time_ms == rsp.create_time_ms
    # Read diffusion: one record per gate with members, not one per member; the sender's
    # connection gets its RoomSendRsp, never its own message.
    handler = system.handler("room")
    assert handler.gate_records == 2  # type: ignore[attr-defined]
    assert g1.rooms.deliveries == 2
    assert g2.rooms.deliveries == 1
    assert system.pushes(alice, Cmd.ROOM_MSG) == []

    # Order: one sender's messages arrive in the order sent, on both gates.
    for i in range(5):
        await near[0].send_room(room, f"m{i}")
    await system.wait_pushes(far, Cmd.ROOM_MSG, count=6)
    await system.wait_pushes(alice, Cmd.ROOM_MSG, count=5)
    assert _texts(system, far) == ["hello", "m0", "m1", "m2", "m3", "m4"]
    assert _texts(system, alice) == ["m0", "m1", "m2", "m3", "m4"]
    ids = [m.msg_id for m in system.pushes(far, Cmd.ROOM_MSG)]  # type: ignore[attr-defined]
    assert ids == sorted(ids)
    assert len(set(ids)) == 6


async def test_a_joiner_gets_the_recent_window_and_a_leaver_gets_nothing_more(
    system: System,
) -> None:
    await system.start_consumers(["room"])
    room = await _create(system, history=3)
    alice, bob, carol = await system.user(), await system.user(), await system.user()
    a = await system.login(alice)
    await a.join_room(room)
    for i in range(5):
        await a.send_room(room, f"m{i}")

    b = await system.login(bob)
    joined = await b.join_room(room)
    assert [m.msg_data for m in joined.history] == [b"m2", b"m3", b"m4"]
    assert [m.msg_id for m in joined.history] == sorted(m.msg_id for m in joined.history)
    assert joined.member_count == 2
    c = await system.login(carol)
    fewer = await c.join_room(room, history=1)
    assert [m.msg_data for m in fewer.history] == [b"m4"]

    await c.leave_room(room)
    await c.leave_room(room)  # leaving again is no error
    assert await b.room_member_count(room) == 2
    await a.send_room(room, "after")
    await system.wait_pushes(b, Cmd.ROOM_MSG)
    assert _texts(system, b) == ["after"]  # nothing of the history twice
    # c left before "after": sent only to b (and a is the sender); a later message to b
    # proves "after" was handled before c's pushes are read.
    await a.send_room(room, "later")
    await system.wait_pushes(b, Cmd.ROOM_MSG, count=2)
    assert system.pushes(c, Cmd.ROOM_MSG) == []


async def test_refusals(system: System) -> None:
    await system.start_consumers(["room"])
    room = await _create(system, max_msg_bytes=8)
    stage = await _create(system, post="listed", posters=[1])
    slow = await _create(system, slow_mode_s=3600)
    alice, bob = await system.user(), await system.user()
    a = await system.login(alice)

    await _refused(a.send_room(room, "hi"), ExtResultCode.FORBIDDEN)  # not joined
    await _refused(a.join_room(10**12), ExtResultCode.NOT_FOUND)
    await _refused(a.room_member_count(10**12), ExtResultCode.NOT_FOUND)
    await a.join_room(room)
    await _refused(a.join_room(room), ExtResultCode.INVALID_PARAMETER)  # already in it
    await _refused(a.send_room(room, "x" * 9), ExtResultCode.TOO_LARGE)
    await _refused(a.send_room(room, "x", client_msg_id="y" * 65), ExtResultCode.INVALID_PARAMETER)
    forged = ext_pb2.RoomSendReq(from_user_id=bob, room_id=room, client_msg_id="f")
    await _refused(a.request(Cmd.ROOM_SEND_REQ, forged), ExtResultCode.FORBIDDEN)
    forged_join = ext_pb2.RoomJoinReq(user_id=bob, room_id=stage)
    await _refused(a.request(Cmd.ROOM_JOIN_REQ, forged_join), ExtResultCode.FORBIDDEN)

    joined = await a.join_room(stage)
    assert RoomPostPolicy(joined.post_policy) is RoomPostPolicy.LISTED
    await _refused(a.send_room(stage, "me?"), ExtResultCode.FORBIDDEN)

    await a.join_room(slow)
    await a.send_room(slow, "first")
    refused = await _refused(a.send_room(slow, "second"), ExtResultCode.RATE_LIMITED)
    assert "slow mode" in refused.text
    # Nothing refused was delivered or kept.
    b = await system.login(bob)
    history = (await b.join_room(room)).history
    assert history == []
    assert [m.msg_data for m in (await b.join_room(slow)).history] == [b"first"]


async def test_the_user_rate_on_a_gate_is_refused_without_the_bus(system: System) -> None:
    await system.start_consumers(["room"])
    gate = await system.gate()
    room = await _create(system)
    a = await system.login(await system.user(), gate)
    await a.join_room(room)
    burst = system.runtime.settings.rooms.user_rate_burst
    published = gate.stats.published
    codes = []
    for i in range(burst + 3):
        try:
            await a.send_room(room, f"m{i}")
            codes.append(ExtResultCode.OK)
        except ServerError as exc:
            codes.append(exc.code)  # type: ignore[arg-type]
    assert ExtResultCode.RATE_LIMITED in codes
    assert gate.stats.published - published == codes.count(ExtResultCode.OK)


async def test_closing_a_room_tells_its_members_on_every_gate(system: System) -> None:
    await system.start_consumers(["room"])
    g1, g2 = await system.gate(), await system.gate()
    room = await _create(system)
    a = await system.login(await system.user(), g1)
    b = await system.login(await system.user(), g2)
    await a.join_room(room)
    await b.join_room(room)

    async with system_api(system) as api:
        seen = await api.get(f"/v1/rooms/{room}")
        assert seen.status_code == 200, seen.text
        assert seen.json()["member_count"] == 2
        assert seen.json()["gates"] == {g1.gate_id: 1, g2.gate_id: 1}
        closed = await api.delete(f"/v1/rooms/{room}")
        assert closed.status_code == 200, closed.text
        assert closed.json()["open"] is False
        again = await api.delete(f"/v1/rooms/{room}")
        assert again.status_code == 200
        assert again.json()["open"] is False
        listed = await api.get("/v1/rooms")
        assert room not in [r["room_id"] for r in listed.json()["rooms"]]

    for client in (a, b):
        [notify] = await system.wait_pushes(client, Cmd.ROOM_EXIT_NOTIFY)
        assert isinstance(notify, ext_pb2.RoomExitNotify)
        assert (notify.room_id, RoomExitReason(notify.reason)) == (room, RoomExitReason.CLOSED)
    await _refused(a.send_room(room, "anyone?"), ExtResultCode.FORBIDDEN)
    await _refused(a.join_room(room), ExtResultCode.NOT_FOUND)
    assert g1.rooms.members(room) == 0
    assert g2.rooms.members(room) == 0


async def test_a_closed_connection_leaves_its_rooms(system: System) -> None:
    await system.start_consumers(["room"])
    room = await _create(system)
    a = await system.login(await system.user())
    b = await system.login(await system.user())
    await a.join_room(room)
    await b.join_room(room)
    assert await a.room_member_count(room) == 2
    await b.close()
    rooms = system.runtime.rooms
    await wait_for(lambda: _count_is(rooms, room, 1))
    assert system.gates[0].rooms.members(room) == 1


async def _count_is(rooms: Any, room: int, n: int) -> bool:
    return bool(await rooms.member_count(room) == n)


async def test_room_messages_are_business_events(system: System) -> None:
    await system.start_consumers(["room"])
    room = await _create(system)
    tap = await Tap(system, [BizTopic.ROOMS], lambda key: key == b"%d" % room).start()
    try:
        a = await system.login(await system.user())
        await a.join_room(room)
        rsp = await a.send_room(room, "for the record", client_msg_id="rec")
        await tap.wait(lambda records: any(b"room.message" in r.value for r in records))
    finally:
        await tap.stop()
    events = [decode_event(r.value) for r in tap.records]
    [event] = [e for e in events if isinstance(e, RoomMessage)]
    assert (event.room_id, event.msg_id, event.client_msg_id) == (room, rsp.msg_id, "rec")
    assert event.msg_data == b"for the record"
    assert json.loads(tap.records[-1].value)["type"] == "room.message"


async def test_the_api_checks_what_it_is_given(system: System) -> None:
    async with system_api(system) as api:
        for body in (
            {"name": ""},
            {"name": "x", "post": "listed"},
            {"name": "x", "posters": [5]},
            {"name": "x", "history": 10_000},
            {"name": "x", "post": "sometimes"},
            {"name": "x", "max_msg_bytes": 0},
        ):
            response = await api.post("/v1/rooms", json=body)
            assert response.status_code == 400, (body, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
        missing = await api.get("/v1/rooms/123456789")
        assert missing.status_code == 404
        assert missing.json()["type"].endswith("unknown-room")
        assert (await api.get("/v1/rooms/abc")).status_code == 400
        assert (await api.delete("/v1/rooms/123456789")).status_code == 404
        created = await api.post("/v1/rooms", json={"name": "ok", "slow_mode_s": 2})
        assert created.status_code == 201
        view = created.json()
        assert (view["post"], view["slow_mode_s"], view["open"]) == ("everyone", 2, True)
        listed = await api.get("/v1/rooms", params={"after": view["room_id"] - 1, "limit": 1})
        assert [r["room_id"] for r in listed.json()["rooms"]] == [view["room_id"]]
