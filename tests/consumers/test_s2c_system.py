"""The server API end to end: HTTP request → bus → consumer groups → SDK clients.

On the embedded system and on Kafka + FerretDB + Redis (`system` fixture): business push
(s2c) to online and offline users, stored pushes found by sync, system messages into a
single chat and a group, API group management, admin revoke, and an Idempotency-Key replay
that publishes once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from schemas.codes import MsgType, SessionType
from schemas.commands import Cmd
from schemas.ids import GroupId, c2c_conversation_id
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import message_pb2
from tests.consumers.apiclient import system_api
from tests.consumers.conftest import System, next_push
from tests.producers.conftest import Client
from tests.waiting import wait_for


@pytest.fixture
async def api(system: System) -> AsyncIterator[Client]:
    """The API app on the system's bus and stores, consumers and a gate running."""
    await system.start_consumers()
    await system.gate()
    async with system_api(system) as client:
        yield client


async def test_push_reaches_online_devices_only(system: System, api: Client) -> None:
    alice, bob = await system.user(), await system.user()
    phone = await system.login(alice, client_type=1)
    desk = await system.login(alice, client_type=5)
    response = await api.post(
        "/v1/push",
        json={
            "to_user_ids": [alice, bob],
            "msg_type": 77,
            "msg_data": '{"coupon": 5}',
            "channel": "shop",
            "push_id": "p-1",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "push_id": "p-1",
        "recipients": 2,
        "online_users": 1,
        "devices_addressed": 2,
        "stored": False,
    }
    for device in (phone, desk):
        event = await next_push(device, Cmd.S2C_PUSH)
        assert isinstance(event.message, ext_pb2.S2CPush)
        assert event.message.push_id == "p-1"
        assert event.message.to_user_id == alice
        assert (event.message.msg_type, event.message.channel) == (77, "shop")
        assert event.message.msg_data == b'{"coupon": 5}'
        assert event.message.content_type == "application/json"

    # Bob was offline: nothing was kept for him. The fanout group resolves routes when it
    # handles a push, so bob logs in only once it has handled p-1 (committed every record
    # of its topics); a later push to him is then the first S2CPush he sees.
    await wait_for(lambda: system.caught_up("fanout"), within=60)
    bob_sdk = await system.login(bob)
    later = await api.post(
        "/v1/push", json={"to_user_ids": [bob], "msg_type": 1, "msg_data": "x", "push_id": "p-2"}
    )
    assert later.json()["devices_addressed"] == 1
    first = await next_push(bob_sdk, Cmd.S2C_PUSH)
    assert isinstance(first.message, ext_pb2.S2CPush)
    assert first.message.push_id == "p-2"
    assert (await bob_sdk.sync()).entries == []


async def test_stored_push_is_delivered_live_and_kept_for_sync(system: System, api: Client) -> None:
    robot, alice, bob = await system.user(nick="robot"), await system.user(), await system.user()
    alice_sdk = await system.login(alice)
    response = await api.post(
        "/v1/push",
        json={
            "to_user_ids": [alice, bob],
            "msg_type": MsgType.TEXT,
            "msg_data": "your order shipped",
            "store": True,
            "from_user_id": robot,
            "push_id": "ship-1",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["stored"] is True
    assert response.json()["devices_addressed"] == 1
    live = await next_push(alice_sdk, Cmd.MSG_DATA)
    assert isinstance(live.message, message_pb2.MsgData)
    assert (live.message.from_user_id, live.message.msg_data) == (robot, b"your order shipped")
    assert live.message.client_msg_id == "s2c-ship-1"

    bob_sdk = await system.login(bob)

    async def kept() -> bool:
        return len((await bob_sdk.sync()).entries) == 1

    await wait_for(kept)
    (entry,) = (await bob_sdk.sync()).entries
    assert entry.msg.from_user_id == robot
    assert entry.msg.msg_data == b"your order shipped"


async def test_system_message_into_a_single_chat_and_a_group(system: System, api: Client) -> None:
    alice, bob, carol = await system.user(), await system.user(), await system.user()
    bob_sdk = await system.login(bob)
    carol_sdk = await system.login(carol)
    sent = await api.post(
        "/v1/messages",
        json={
            "from_user_id": alice,
            "session_type": "single",
            "to_session_id": bob,
            "msg_data": "hello from the system",
        },
    )
    assert sent.status_code == 202, sent.text
    assert sent.json()["conversation"] == c2c_conversation_id(alice, bob)
    got = await next_push(bob_sdk, Cmd.MSG_DATA)
    assert isinstance(got.message, message_pb2.MsgData)
    assert got.message.from_user_id == alice
    assert got.message.client_msg_id == sent.json()["client_msg_id"]
    assert got.message.server_msg_id > 0
    assert int(got.message.session_type) == SessionType.SINGLE

    created = await api.post(
        "/v1/groups", json={"owner_id": alice, "name": "ops", "member_ids": [bob, carol]}
    )
    assert created.status_code == 201, created.text
    group_id = created.json()["group_id"]
    assert await system.runtime.groups.groups_of(alice) == [group_id]
    listed = await api.get("/v1/groups", params={"user_id": str(bob)})
    assert [g["group_id"] for g in listed.json()["groups"]] == [group_id]
    info = await api.get(f"/v1/groups/{group_id}")
    assert info.json()["name"] == "ops"
    assert sorted(info.json()["member_ids"]) == sorted([alice, bob, carol])

    robot = await system.user(nick="robot")  # not a member: a system sender may post
    posted = await api.post(
        "/v1/messages",
        json={
            "from_user_id": robot,
            "session_type": "group",
            "to_session_id": group_id,
            "msg_data": "deploy at 5",
            "client_msg_id": "deploy-5",
        },
    )
    assert posted.status_code == 202, posted.text
    for sdk in (bob_sdk, carol_sdk):
        while True:  # skip the GROUP_CREATE notification
            event = await next_push(sdk, Cmd.MSG_DATA)
            assert isinstance(event.message, message_pb2.MsgData)
            if int(event.message.msg_type) != MsgType.NOTIFICATION:
                break
        assert event.message.client_msg_id == "deploy-5"
        assert (event.message.from_user_id, event.message.to_session_id) == (robot, group_id)


async def test_group_management_through_the_group_consumer(system: System, api: Client) -> None:
    owner, bob, carol = await system.user(), await system.user(), await system.user()
    created = await api.post(
        "/v1/groups", json={"owner_id": owner, "name": "g", "member_ids": [bob]}
    )
    assert created.status_code == 201, created.text
    gid = created.json()["group_id"]
    groups = system.runtime.groups
    added = await api.post(f"/v1/groups/{gid}/members", json={"user_ids": [carol]})
    assert added.status_code == 202, added.text

    async def members_are(expected: set[int]) -> bool:
        return set(await groups.members(GroupId(gid))) == expected

    await wait_for(lambda: members_are({owner, bob, carol}))
    removed = await api.delete(f"/v1/groups/{gid}/members", params={"user_id": [str(bob)]})
    assert removed.status_code == 202, removed.text
    await wait_for(lambda: members_are({owner, carol}))
    owner_out = await api.delete(f"/v1/groups/{gid}/members", params={"user_id": [str(owner)]})
    assert owner_out.status_code == 400
    disbanded = await api.delete(f"/v1/groups/{gid}")
    assert disbanded.status_code == 202

    async def gone() -> bool:
        group = await groups.get(GroupId(gid))
        return group is not None and group.disbanded

    await wait_for(gone)
    assert (await api.get(f"/v1/groups/{gid}")).json()["disbanded"] is True
    assert (await api.delete(f"/v1/groups/{gid}")).status_code == 404


async def test_admin_revoke_notifies_both_sides(system: System, api: Client) -> None:
    alice, bob = await system.user(), await system.user()
    alice_sdk = await system.login(alice)
    bob_sdk = await system.login(bob)
    ack = await alice_sdk.send_text(bob, "regrettable")
    conversation = c2c_conversation_id(alice, bob)
    missing = await api.post(f"/v1/messages/{conversation}/{ack.server_msg_id + 99}/revoke")
    assert missing.status_code == 404
    revoked = await api.post(f"/v1/messages/{conversation}/{ack.server_msg_id}/revoke")
    assert revoked.status_code == 202, revoked.text
    for sdk in (alice_sdk, bob_sdk):
        event = await next_push(sdk, Cmd.REVOKE_NOTIFY)
        assert isinstance(event.message, ext_pb2.RevokeNotify)
        assert event.message.server_msg_id == ack.server_msg_id
        assert event.message.operator_user_id == 0
    stored = await system.runtime.messages.get_by_seqs(conversation, [ack.server_msg_id])
    assert stored[0].revoked


async def test_idempotency_key_replays_and_publishes_once(system: System, api: Client) -> None:
    alice = await system.user()
    sdk = await system.login(alice)
    body = {"to_user_ids": [alice], "msg_type": 3, "msg_data": "once"}
    headers = {"Idempotency-Key": f"k-{alice}"}
    first = await api.post("/v1/push", json=body, headers=headers)
    again = await api.post("/v1/push", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    other = await api.post("/v1/push", json={**body, "msg_data": "twice"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"] == "urn:coffeebus:problem:idempotency-key-reused"
    await api.post("/v1/push", json={**body, "msg_data": "marker"})
    seen: list[bytes] = []
    while not seen or seen[-1] != b"marker":
        event = await next_push(sdk, Cmd.S2C_PUSH)
        assert isinstance(event.message, ext_pb2.S2CPush)
        seen.append(event.message.msg_data)
    assert seen == [b"once", b"marker"]
