"""A chat room across two gate processes, one of them killed with SIGKILL (issue 15, section 2:
"a gate kill loses nothing but those connections' membership").

Two `coffeebus gateway` processes and a `coffeebus consume room` process on the session's
private broker; the room is created through the server API (in this process). Members on
both gates get every message; the second gate is killed: its connections (and so their
membership) are gone, the room keeps delivering to the first gate's members, and once the
dead gate's registry entry lapses the member count no longer counts it. The gate started
again under the same id counts nothing of its previous life, and its new members get the
room's messages again.
"""

from __future__ import annotations

import asyncio

from schemas.commands import Cmd
from schemas.ids import UserId
from sdk.client import Client
from sdk.events import Disconnected
from tests.chaos.conftest import ChaosSystem
from tests.chaos.gates import GateProcess
from tests.chaos.processes import ROLE_TEST_MARKS, WAIT_S, wait_serving
from tests.consumers.apiclient import system_api
from tests.waiting import wait_for

pytestmark = ROLE_TEST_MARKS

#: A killed gate's registry entry lapses after `gateway.server.REGISTRY_TTL_S` (30 s).
LAPSE_S = 90.0


async def _client(system: ChaosSystem, user: UserId, gate: GateProcess) -> Client:
    client = Client(heartbeat_interval=None, reconnect=False, request_timeout=30.0)
    system.clients.append(client)  # closed at teardown
    await client.connect("127.0.0.1", gate.port)
    await client.login(user, system.tokens[user])
    return client


async def _messages(client: Client, count: int) -> list[bytes]:
    """The next `count` RoomMsg bodies' msg_data the client receives."""
    out: list[bytes] = []
    async with asyncio.timeout(WAIT_S):
        while len(out) < count:
            event = await client.next_event()
            if getattr(event, "command_id", None) == Cmd.ROOM_MSG:
                out.append(event.message.msg_data)  # type: ignore[union-attr]
    return out


async def test_a_room_across_two_gate_processes_survives_a_killed_gate(
    chaos_system: ChaosSystem,
) -> None:
    system = chaos_system
    room_group = system.consumer("room")
    room_group.start()
    g1, g2 = GateProcess(system, "g1"), GateProcess(system, "g2")
    await asyncio.gather(g1.start(), g2.start())
    await wait_serving(system.topology, system.bootstrap, ["room"], within=WAIT_S)
    async with system_api(system) as api:
        response = await api.post("/v1/rooms", json={"name": "stage", "history": 10})
    assert response.status_code == 201, response.text
    room = response.json()["room_id"]

    users = [await system.user() for _ in range(5)]
    speaker = await _client(system, users[0], g1)
    near = [await _client(system, u, g1) for u in users[1:3]]
    far = [await _client(system, u, g2) for u in users[3:5]]
    for client in (speaker, *near, *far):
        await client.join_room(room)
    assert await speaker.room_member_count(room) == 5

    await speaker.send_room(room, "one")
    for client in (*near, *far):
        assert await _messages(client, 1) == [b"one"]

    g2.process.kill()
    for client in far:  # their connections end with the gate
        async with asyncio.timeout(WAIT_S):
            while not isinstance(await client.next_event(), Disconnected):
                pass
    await speaker.send_room(room, "two")
    for client in near:
        assert await _messages(client, 1) == [b"two"]
    # The dead gate stops counting once its registry entry lapses.
    # (read from the store: a client asking 100 times a second would be rate limited)
    await wait_for(lambda: _count(system, room, 3), within=LAPSE_S)

    # The same gate id again: nothing of its previous connections is counted.
    await g2.start()
    back = await _client(system, users[3], g2)
    joined = await back.join_room(room)
    assert joined.member_count == 4
    assert [m.msg_data for m in joined.history] == [b"one", b"two"]
    await speaker.send_room(room, "three")
    assert await _messages(back, 1) == [b"three"]
    for client in near:
        assert await _messages(client, 1) == [b"three"]
    assert system.tracebacks() == []


async def _count(system: ChaosSystem, room: int, expected: int) -> bool:
    return await system.runtime.rooms.member_count(room) == expected
