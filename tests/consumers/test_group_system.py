"""The group group end to end: management requests, notifications in the group's timeline
(stored by the msg group), member-changed pushes, limits, refusals, the member cache and the
group read state."""

from __future__ import annotations

import msgspec
import pytest

from consumers.group import GroupHandler
from consumers.notifications import GroupNotification
from schemas.codes import (
    ErrorCode,
    ExtResultCode,
    GroupMemberChangedType,
    MsgNotificationType,
    MsgType,
    SessionType,
)
from schemas.commands import Cmd
from schemas.ids import GroupId, UserId, group_conversation_id
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import group_pb2, message_pb2
from sdk.client import Client
from sdk.errors import ServerError
from store.groups import GroupLimits
from tests.consumers.conftest import Seeder, System
from tests.waiting import wait_for


async def _timeline_kinds(system: System, group_id: int) -> list[MsgNotificationType]:
    found = await system.runtime.messages.history(group_conversation_id(GroupId(group_id)), 0, 99)
    return [
        MsgNotificationType(
            msgspec.json.decode(m.msg_data, type=GroupNotification).notification_type
        )
        for m in found
        if m.msg_type == MsgType.NOTIFICATION
    ]


async def _until_timeline(system: System, group_id: int, *kinds: MsgNotificationType) -> None:
    async def there() -> bool:
        return await _timeline_kinds(system, group_id) == list(kinds)

    await wait_for(there)


def _changed(notify: object) -> list[tuple[int, GroupMemberChangedType]]:
    assert isinstance(notify, group_pb2.GroupMemberChangedNotify)
    return [(c.user_id, GroupMemberChangedType(c.type)) for c in notify.changed_list]


async def test_group_life_cycle(system: System) -> None:
    await system.start_consumers()
    owner, bob, carol, dave = [await system.user() for _ in range(4)]
    sdk: dict[UserId, Client] = {u: await system.login(u) for u in (owner, bob, carol, dave)}

    created = await sdk[owner].create_group("coffee", [bob, carol])
    assert created.result_code == ErrorCode.SUCCESS
    gid = created.group_info.group_id
    assert created.group_info.group_owner_id == owner
    assert sorted(created.member_id_list) == sorted([owner, bob, carol])
    attached = message_pb2.MsgData.FromString(created.attach_notification_msg)
    assert MsgType(attached.msg_type) is MsgType.NOTIFICATION
    assert SessionType(attached.session_type) is SessionType.GROUP
    note = msgspec.json.decode(attached.msg_data, type=GroupNotification)
    assert note.notification_type == MsgNotificationType.GROUP_CREATE
    (added,) = await system.wait_pushes(sdk[bob], Cmd.GROUP_MEMBER_CHANGED_NOTIFY)
    assert sorted(_changed(added)) == sorted(
        (u, GroupMemberChangedType.ADD) for u in (owner, bob, carol)
    )
    await _until_timeline(system, gid, MsgNotificationType.GROUP_CREATE)
    assert [g.group_id for g in (await sdk[bob].group_list()).group_version_list] == [gid]
    (info,) = (await sdk[carol].group_info([gid])).group_info_list
    assert info.group_name == "coffee"

    invited = await sdk[bob].invite_members(gid, [dave])  # any member may invite
    assert invited.result_code == ErrorCode.SUCCESS
    (joined,) = await system.wait_pushes(sdk[dave], Cmd.GROUP_MEMBER_CHANGED_NOTIFY)
    assert _changed(joined) == [(dave, GroupMemberChangedType.ADD)]
    await _until_timeline(
        system, gid, MsgNotificationType.GROUP_CREATE, MsgNotificationType.GROUP_BE_INVITE
    )

    refused = await sdk[bob].kick_members(gid, [carol])
    assert refused.result_code == ExtResultCode.FORBIDDEN
    assert carol in (await sdk[owner].group_members(gid)).member_id_list

    kicked = await sdk[owner].kick_members(gid, [carol])
    assert kicked.result_code == ErrorCode.SUCCESS
    # carol heard of the create, of dave's invite, then of her own kick.
    gone = (await system.wait_pushes(sdk[carol], Cmd.GROUP_MEMBER_CHANGED_NOTIFY, count=3))[-1]
    assert _changed(gone) == [(carol, GroupMemberChangedType.DEL)]
    with pytest.raises(ServerError) as outsider:
        await sdk[carol].history(gid, session_type=SessionType.GROUP)
    assert outsider.value.code is ExtResultCode.FORBIDDEN

    left = await sdk[dave].exit_group(gid)
    assert left.result_code == ErrorCode.SUCCESS
    owner_exit = await sdk[owner].exit_group(gid)
    assert owner_exit.result_code == ExtResultCode.FORBIDDEN
    assert sorted((await sdk[bob].group_members(gid)).member_id_list) == sorted([owner, bob])

    assert (await sdk[bob].disband_group(gid)).result_code == ExtResultCode.FORBIDDEN
    disbanded = await sdk[owner].disband_group(gid)
    assert disbanded.result_code == ErrorCode.SUCCESS
    await _until_timeline(
        system,
        gid,
        MsgNotificationType.GROUP_CREATE,
        MsgNotificationType.GROUP_BE_INVITE,
        MsgNotificationType.GROUP_KICK,
        MsgNotificationType.GROUP_LEAVE,
        MsgNotificationType.GROUP_DISMISS,
    )
    assert list((await sdk[bob].group_list()).group_version_list) == []
    with pytest.raises(ServerError) as after:
        await sdk[owner].group_members(gid)
    assert after.value.code is ExtResultCode.NOT_FOUND


async def test_limits_unknown_users_and_the_member_cache(system: System) -> None:
    await system.start_consumers()
    handler = system.handler("group")
    assert isinstance(handler, GroupHandler)
    handler.limits = GroupLimits(normal=3)
    owner, a, b, c = [await system.user() for _ in range(4)]
    sdk = await system.login(owner)

    too_big = await sdk.create_group("big", [a, b, c])
    assert too_big.result_code == ExtResultCode.TOO_LARGE
    unknown = await sdk.create_group("ghosts", [a, UserId(system.new_uid())])
    assert unknown.result_code == ExtResultCode.INVALID_PARAMETER
    assert list((await sdk.group_list()).group_version_list) == []

    gid = (await sdk.create_group("small", [a, b])).group_info.group_id
    groups = system.runtime.groups
    assert await groups.is_member(GroupId(gid), b)  # read through (and into) the cache
    full = await sdk.invite_members(gid, [c])
    assert full.result_code == ExtResultCode.TOO_LARGE
    assert not await groups.is_member(GroupId(gid), c)

    assert (await sdk.kick_members(gid, [b])).result_code == ErrorCode.SUCCESS
    # The answer comes after the cache was re-put: nobody reads the old member set.
    assert not await groups.is_member(GroupId(gid), b)
    assert await groups.members(GroupId(gid)) == sorted([owner, a])
    assert (await sdk.invite_members(gid, [c])).result_code == ErrorCode.SUCCESS
    assert await groups.is_member(GroupId(gid), c)


async def test_members_only_queries_and_read_state(system: System) -> None:
    await system.start_consumers()
    owner, bob, mallory = await system.user(), await system.user(), await system.user()
    owner_sdk, bob_sdk = await system.login(owner), await system.login(bob)
    mallory_sdk = await system.login(mallory)
    gid = (await owner_sdk.create_group("reads", [bob])).group_info.group_id
    seed = Seeder(system.runtime)
    sent = [
        await seed.message(owner, gid, recipients=[bob], session_type=SessionType.GROUP, gap=9)
        for _ in range(3)
    ]
    await bob_sdk.read_ack(gid, sent[1].seq, session_type=SessionType.GROUP)
    await owner_sdk.read_ack(gid, sent[0].seq, session_type=SessionType.GROUP)
    req = ext_pb2.GroupReadStateReq(
        user_id=owner, group_id=gid, server_msg_id_list=[m.seq for m in sent]
    )

    async def counted() -> bool:
        rsp = await owner_sdk.request(Cmd.GROUP_READ_STATE_REQ, req)
        assert isinstance(rsp, ext_pb2.GroupReadStateRsp)
        # Every message is the owner's: the owner has read each of them (issue 14), Bob
        # the first two.
        return [(s.read_count, s.member_count) for s in rsp.read_state_list] == [
            (2, 2),
            (2, 2),
            (1, 2),
        ]

    await wait_for(counted)

    for ask in (
        mallory_sdk.group_members(gid),
        mallory_sdk.history(gid, session_type=SessionType.GROUP),
        mallory_sdk.request(
            Cmd.GROUP_READ_STATE_REQ,
            ext_pb2.GroupReadStateReq(user_id=mallory, group_id=gid, server_msg_id_list=[1]),
        ),
    ):
        with pytest.raises(ServerError) as refused:
            await ask
        assert refused.value.code is ExtResultCode.FORBIDDEN
    assert list((await mallory_sdk.group_info([gid])).group_info_list) == []
    assert (await mallory_sdk.exit_group(gid)).result_code == ErrorCode.SUCCESS  # no-op
    assert await system.runtime.groups.members(GroupId(gid)) == sorted([owner, bob])


async def test_unread_counts_only_messages_not_notifications(system: System) -> None:
    """Issue 14: a group with 2 texts and 2 member-change notices showed 4 unread."""
    await system.start_consumers()
    owner, bob, carol = await system.user(), await system.user(), await system.user()
    owner_sdk, bob_sdk = await system.login(owner), await system.login(bob)
    gid = (await owner_sdk.create_group("unread", [bob])).group_info.group_id  # GROUP_CREATE
    assert (await owner_sdk.invite_members(gid, [carol])).result_code == ErrorCode.SUCCESS
    for text in ("one", "two"):
        await owner_sdk.send_text(gid, text, session_type=SessionType.GROUP)

    async def bob_sees() -> bool:
        sessions = await bob_sdk.recent_sessions()
        if len(sessions.contact_session_list) != 1:  # fan-out not done yet
            return False
        [session] = sessions.contact_session_list
        # the two notices are in the timeline (seqs 1, 2), the texts after them
        return (session.server_msg_id, session.unread_cnt, sessions.unread_counts) == (4, 2, 2)

    await wait_for(bob_sees)
    history = await bob_sdk.history(gid, session_type=SessionType.GROUP)
    assert [MsgType(m.msg_type) for m in history.msg_list] == [
        MsgType.NOTIFICATION,
        MsgType.NOTIFICATION,
        MsgType.TEXT,
        MsgType.TEXT,
    ]
