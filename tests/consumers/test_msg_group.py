"""Group chat with write fan-out end to end, embedded and on the real services.

One sender, members on two gates and offline: every member's inbox holds the message exactly
once, online members get exactly one push, offline ones catch up by sync; non-members and
(in a muted group) non-owners are refused.
"""

from __future__ import annotations

import uuid

import pytest

from consumers.registry import available_groups
from schemas.codes import ExtResultCode, GroupMuteModel, ResCode, SessionType
from schemas.commands import Cmd
from schemas.ids import GroupId, UserId, group_conversation_id
from schemas.pb.coffeechat import message_pb2
from sdk.errors import ServerError
from store.groups import GroupSpec, GroupUpdate
from tests.consumers.conftest import System, drain, next_push

GROUP = SessionType.GROUP


def _groups() -> list[str]:
    # Sync (0x0803) is served by the query group, when it exists.
    return [g for g in ("msg", "fanout", "query") if g in available_groups()]


async def make_group(system: System, owner: UserId, members: list[UserId]) -> GroupId:
    created = await system.runtime.groups.create(
        GroupSpec(name="g", owner_id=owner), members, create_key=uuid.uuid4().hex
    )
    return created.group.group_id


async def test_group_message_reaches_every_member_once(system: System) -> None:
    await system.start_consumers(_groups())
    gate_a, gate_b = await system.gate(), await system.gate()
    owner = await system.user()
    on_a = [await system.user() for _ in range(3)]
    on_b = [await system.user() for _ in range(3)]
    offline = [await system.user() for _ in range(2)]
    members = [*on_a, *on_b, *offline]
    group_id = await make_group(system, owner, members)
    owner_c = await system.login(owner, gate_a)
    clients = {u: await system.login(u, gate_a) for u in on_a}
    clients |= {u: await system.login(u, gate_b) for u in on_b}

    ack = await owner_c.send_text(group_id, "hello all", session_type=GROUP)
    second = await owner_c.send_text(group_id, "and again", session_type=GROUP)

    assert ResCode(ack.res_code) is ResCode.OK
    for client in clients.values():
        first_push = await next_push(client, Cmd.MSG_DATA)
        assert isinstance(first_push.message, message_pb2.MsgData)
        assert first_push.message.server_msg_id == ack.server_msg_id
        assert first_push.message.to_session_id == group_id
        assert first_push.message.from_user_id == owner
        # The next push is the next message: nothing arrived twice.
        next_one = await next_push(client, Cmd.MSG_DATA)
        assert isinstance(next_one.message, message_pb2.MsgData)
        assert next_one.message.server_msg_id == second.server_msg_id
    conversation = group_conversation_id(group_id)
    expected = [(conversation, ack.server_msg_id), (conversation, second.server_msg_id)]
    for user in [owner, *members]:
        page = await system.runtime.inbox.after(user, 0, 100)
        assert [(e.message.conversation, e.message.seq) for e in page.entries] == expected
    history = await system.runtime.messages.history(conversation, 0, 10)
    assert [m.msg_data for m in history] == [b"hello all", b"and again"]

    # An offline member comes online and catches up by sync.
    late = await system.login(offline[0], gate_b)
    if "query" in available_groups():
        synced = await late.sync(0)
        assert [e.msg.server_msg_id for e in synced.entries] == [
            ack.server_msg_id,
            second.server_msg_id,
        ]
    await late.heartbeat()
    assert not drain(late)  # nothing is pushed for what happened while it was away


async def test_only_members_may_send_and_a_muted_group_only_its_owner(system: System) -> None:
    await system.start_consumers(["msg", "fanout"])
    owner, member, stranger = await system.user(), await system.user(), await system.user()
    group_id = await make_group(system, owner, [member])
    owner_c = await system.login(owner)
    member_c = await system.login(member)
    stranger_c = await system.login(stranger)

    with pytest.raises(ServerError) as refused:
        await stranger_c.send_text(group_id, "let me in", session_type=GROUP)
    assert ExtResultCode(refused.value.code) is ExtResultCode.FORBIDDEN
    with pytest.raises(ServerError) as refused:
        await stranger_c.send_text(GroupId(group_id + 10_000), "hello?", session_type=GROUP)
    assert ExtResultCode(refused.value.code) is ExtResultCode.NOT_FOUND
    assert (await member_c.send_text(group_id, "ok", session_type=GROUP)).server_msg_id > 0

    await system.runtime.groups.update(group_id, GroupUpdate(mute_model=GroupMuteModel.ALL))
    with pytest.raises(ServerError) as refused:
        await member_c.send_text(group_id, "muted?", session_type=GROUP)
    assert ExtResultCode(refused.value.code) is ExtResultCode.FORBIDDEN
    assert (await owner_c.send_text(group_id, "owner speaks", session_type=GROUP)).res_code
    history = await system.runtime.messages.history(group_conversation_id(group_id), 0, 10)
    assert [m.msg_data for m in history] == [b"ok", b"owner speaks"]
    page = await system.runtime.inbox.after(stranger, 0, 10)
    assert page.entries == []
