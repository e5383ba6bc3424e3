"""Group create and update through the server API, end to end: HTTP → ``im.up.group`` → the
group consumer → the group store, the group's timeline, members' devices and ``group.changed``
— on the embedded system and on Kafka, FerretDB and Redis."""

from __future__ import annotations

import msgspec
import pytest

from bus.base import Record
from consumers.notifications import GroupNotification
from schemas.bizevents import BizTopic, GroupChanged, decode_event
from schemas.codes import ExtResultCode, GroupMuteModel, MsgNotificationType, MsgType, SessionType
from schemas.commands import Cmd
from schemas.ids import GroupId, group_conversation_id
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import message_pb2
from sdk.client import Client
from sdk.errors import ServerError
from tests.consumers.apiclient import system_api
from tests.consumers.biztap import Tap
from tests.consumers.conftest import System, next_push
from tests.waiting import wait_for

GROUP = SessionType.GROUP


async def _notification(sdk: Client) -> GroupNotification:
    """The next group notification pushed to `sdk` (other messages are skipped)."""
    while True:
        push = await next_push(sdk, Cmd.MSG_DATA)
        assert isinstance(push.message, message_pb2.MsgData)
        if int(push.message.msg_type) == MsgType.NOTIFICATION:
            return msgspec.json.decode(push.message.msg_data, type=GroupNotification)


async def _mute_is(system: System, gid: int, mode: GroupMuteModel) -> bool:
    group = await system.runtime.groups.get(GroupId(gid))
    return group is not None and group.mute_model == mode


def _updates(records: list[Record]) -> list[GroupChanged]:
    """The ``updated`` group.changed events among `records` (an embedded tap also sees the
    create's)."""
    events = [decode_event(r.value) for r in records]
    return [e for e in events if isinstance(e, GroupChanged) and e.change == "updated"]


async def test_create_answers_201_with_the_group_the_consumer_made(system: System) -> None:
    await system.start_consumers()
    owner, bob = await system.user(), await system.user()
    bob_sdk = await system.login(bob)
    async with system_api(system) as api:
        created = await api.post(
            "/v1/groups", json={"owner_id": owner, "name": "ops", "member_ids": [bob, owner]}
        )
        assert created.status_code == 201, created.text
        body = created.json()
        gid = body["group_id"]
        assert created.headers["location"] == f"/v1/groups/{gid}"
        assert (body["name"], body["owner_id"], body["group_type"]) == ("ops", owner, 1)
        assert (body["member_count"], body["created"]) == (2, True)
        # the group exists when the answer leaves: no waiting for it
        shown = (await api.get(f"/v1/groups/{gid}")).json()
        assert (shown["name"], shown["member_ids"]) == ("ops", sorted([owner, bob]))
    notice = await _notification(bob_sdk)
    assert notice.notification_type == MsgNotificationType.GROUP_CREATE
    assert (notice.group_id, notice.operator_user_id) == (gid, owner)


async def test_create_answers_202_with_the_final_id_while_the_group_consumer_is_down(
    system: System,
) -> None:
    await system.start_consumers(["msg", "fanout"])
    owner, bob = await system.user(), await system.user()
    before = await system.positions(["im.up.group"])
    async with system_api(system, group_create_wait_s=0.2) as api:
        pending = await api.post(
            "/v1/groups", json={"owner_id": owner, "name": "late", "member_ids": [bob]}
        )
        assert pending.status_code == 202, pending.text
        body = pending.json()
        assert (body["created"], body["member_count"], body["name"]) == (False, 2, "late")
        gid = GroupId(body["group_id"])
        assert await system.runtime.groups.get(gid) is None
        # the group consumer starts (from before the request): it creates exactly that id
        await system.start_consumers(["group"], positions=before)

        async def exists() -> bool:
            return await system.runtime.groups.get(gid) is not None

        await wait_for(exists)
        assert await system.runtime.groups.groups_of(bob) == [gid]
        assert (await api.get(f"/v1/groups/{gid}")).json()["name"] == "late"


async def test_patch_is_a_notification_an_event_and_a_fresh_member_cache(system: System) -> None:
    await system.start_consumers()
    owner, bob = await system.user(), await system.user()
    bob_sdk = await system.login(bob)
    async with system_api(system) as api:
        created = await api.post(
            "/v1/groups", json={"owner_id": owner, "name": "g", "member_ids": [bob]}
        )
        gid = created.json()["group_id"]
        assert (await _notification(bob_sdk)).notification_type == MsgNotificationType.GROUP_CREATE
        tap = await Tap(system, [BizTopic.GROUPS], lambda key: key == b"%d" % gid).start()
        try:
            await bob_sdk.send_text(gid, "before the mute", session_type=GROUP)
            patch = {"name": "g2", "announcement": "standup at 10", "mute_model": 1}
            patched = await api.patch(f"/v1/groups/{gid}", json=patch)
            assert patched.status_code == 202, patched.text

            notice = await _notification(bob_sdk)
            assert notice.notification_type == MsgNotificationType.GROUP_UPDATE
            assert (notice.group_name, notice.operator_user_id) == ("g2", owner)
            assert notice.attributes == {
                "name": "g2",
                "announcement": "standup at 10",
                "mute_model": 1,
            }
            await tap.wait(lambda records: len(_updates(records)) >= 1)
            (event,) = _updates(tap.records)
            assert (event.change, event.group_id, event.group_name) == ("updated", gid, "g2")
            assert (event.operator_user_id, event.trace_id) == (owner, patched.json()["request_id"])
            assert event.attributes == notice.attributes
            assert event.members == ()

            # The notification is durable before the store changes (a crash in between
            # replays both): wait for the store, then read through the API.
            await wait_for(lambda: _mute_is(system, gid, GroupMuteModel.ALL))
            shown = (await api.get(f"/v1/groups/{gid}")).json()
            assert (shown["name"], shown["announcement"], shown["mute_model"]) == (
                "g2",
                "standup at 10",
                1,
            )
            # the msg group reads the (cached) group: the mute holds at once
            with pytest.raises(ServerError) as refused:
                await bob_sdk.send_text(gid, "after the mute", session_type=GROUP)
            assert refused.value.code is ExtResultCode.FORBIDDEN

            # A patch that changes nothing announces nothing: the next notification and
            # event are those of the patch after it.
            same = await api.patch(f"/v1/groups/{gid}", json={"name": "g2"})
            assert same.status_code == 202
            unmuted = await api.patch(f"/v1/groups/{gid}", json={"mute_model": 0})
            assert unmuted.status_code == 202
            assert (await _notification(bob_sdk)).attributes == {"mute_model": 0}
            await tap.wait(lambda records: len(_updates(records)) >= 2)
            second = _updates(tap.records)[1]
            assert second.trace_id == unmuted.json()["request_id"]
            await wait_for(lambda: _mute_is(system, gid, GroupMuteModel.DEFAULT))
            await bob_sdk.send_text(gid, "unmuted", session_type=GROUP)
        finally:
            await tap.stop()
    conversation = group_conversation_id(GroupId(gid))
    kinds = [
        msgspec.json.decode(m.msg_data, type=GroupNotification).notification_type
        for m in await system.runtime.messages.history(conversation, 0, 99)
        if m.msg_type == MsgType.NOTIFICATION
    ]
    assert kinds == [
        MsgNotificationType.GROUP_CREATE,
        MsgNotificationType.GROUP_UPDATE,
        MsgNotificationType.GROUP_UPDATE,
    ]


async def test_the_owner_updates_over_the_protocol_and_a_member_is_refused(
    system: System,
) -> None:
    await system.start_consumers()
    owner, bob = await system.user(), await system.user()
    owner_sdk, bob_sdk = await system.login(owner), await system.login(bob)
    created = await owner_sdk.create_group("team", [bob])
    gid = created.group_info.group_id
    refused = await bob_sdk.update_group(gid, name="mine")
    assert refused.result_code == ext_pb2.EXT_RESULT_CODE_FORBIDDEN
    nothing = await owner_sdk.update_group(gid)
    assert nothing.result_code == ext_pb2.EXT_RESULT_CODE_INVALID_PARAMETER
    rsp = await owner_sdk.update_group(gid, intro="the team", mute_model=GroupMuteModel.ALL)
    assert rsp.result_code == ext_pb2.EXT_RESULT_CODE_OK
    assert (rsp.group_info.group_intro, int(rsp.group_info.mute_model)) == ("the team", 1)
    attached = message_pb2.MsgData.FromString(rsp.attach_notification_msg)
    assert msgspec.json.decode(attached.msg_data, type=GroupNotification).attributes == {
        "intro": "the team",
        "mute_model": 1,
    }
    again = await owner_sdk.update_group(gid, intro="the team")
    assert (again.result_code, again.attach_notification_msg) == (ext_pb2.EXT_RESULT_CODE_OK, b"")
    unknown = await owner_sdk.update_group(gid + 10_000, name="x")
    assert unknown.result_code == ext_pb2.EXT_RESULT_CODE_NOT_FOUND
    # a client cannot use the server API's create with an id of its choosing
    forged = ext_pb2.ApiGroupCreateReq(user_id=owner, group_id=gid + 1, group_name="x")
    answer = await owner_sdk.request(Cmd.API_GROUP_CREATE_REQ, forged)
    assert answer.result_code == ExtResultCode.FORBIDDEN  # type: ignore[attr-defined]

    async def stored() -> bool:
        group = await system.runtime.groups.get(GroupId(gid))
        return group is not None and group.intro == "the team"

    await wait_for(stored)
