"""Deleting a user through the server API, followed through the consumer groups (issue 14):
what happens to its connections, its messages, its group memberships and its sessions.

- its connections close (KickNotify ACCOUNT_DELETED) and it never logs in again;
- the messages it sent stay in their conversations: a peer's history still has them;
  sending to it is refused (NOT_FOUND) once the msg group's lookup cache lets go of it
  (``[messaging] lookup_cache_s``, 5 s);
- it leaves every group it was a member of (a GROUP_LEAVE notice in the group, members
  told); a group it owns is kept, members and all;
- its own sessions are left as they were (nobody can read them without a login).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from schemas.codes import (
    ErrorCode,
    ExtResultCode,
    KickReason,
    MsgNotificationType,
    MsgType,
    SessionType,
)
from schemas.ids import GroupId
from sdk.client import Client
from sdk.errors import LoginError, ServerError
from sdk.events import Kicked
from tests.consumers.apiclient import system_api
from tests.consumers.conftest import System
from tests.waiting import wait_for


async def test_a_deleted_user_leaves_its_groups_and_its_messages_stay(system: System) -> None:
    await system.start_consumers()
    alice, bob, carol = await system.user(), await system.user(), await system.user()
    a, b = await system.login(alice), await system.login(bob)
    await a.send_text(bob, "hello bob")
    member_of = (await b.create_group("bob's", [alice, carol])).group_info.group_id
    owned = (await a.create_group("alice's", [bob])).group_info.group_id
    await a.send_text(member_of, "hi group", session_type=SessionType.GROUP)

    async with system_api(system) as api:
        response = await api.delete(f"/v1/users/{alice}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["groups_left"], body["groups_owned"]) == ([member_of], [owned])

    # Connections closed, logins refused.
    log = system.event_logs[a]
    await log.until(lambda: any(isinstance(e, Kicked) for e in log.events))
    [kicked] = [e for e in log.events if isinstance(e, Kicked)]
    assert KickReason(kicked.notify.reason) is KickReason.ACCOUNT_DELETED
    gate = system.gates[0]
    again = Client(heartbeat_interval=None, reconnect=False)
    system.clients.append(again)
    await again.connect("127.0.0.1", gate.tcp_port)
    with pytest.raises(LoginError) as refused:
        await again.login(alice, system.tokens[alice])
    assert refused.value.code is ErrorCode.LOGIN_INVALID_USER_TOKEN

    # Group memberships: out of the group it was a member of, with a notice; its own kept.
    groups = system.runtime.groups

    async def left() -> bool:
        return await groups.members(GroupId(member_of)) == sorted([bob, carol])

    await wait_for(left)
    history = await b.history(member_of, session_type=SessionType.GROUP)
    notices = [
        json.loads(m.msg_data)
        for m in history.msg_list
        if MsgType(m.msg_type) is MsgType.NOTIFICATION
    ]
    assert notices[-1]["notification_type"] == MsgNotificationType.GROUP_LEAVE
    assert notices[-1]["member_id_list"] == [alice]
    assert [m.msg_data for m in history.msg_list if MsgType(m.msg_type) is MsgType.TEXT] == [
        b"hi group"
    ]
    assert await groups.members(GroupId(owned)) == sorted([alice, bob])

    # Messages stay; the deleted user cannot be written to.
    chat = await b.history(alice)
    assert [m.msg_data for m in chat.msg_list] == [b"hello bob"]
    # The msg group trusts a looked-up user for [messaging] lookup_cache_s (5 s): until then
    # a message to the deleted user may still be stored (in an inbox nobody reads).
    code: object = None
    async with asyncio.timeout(30):
        while code is None:
            try:
                await b.send_text(alice, "are you there?")
            except ServerError as exc:
                code = exc.code
            else:
                await asyncio.sleep(0.5)  # the sender's pace (a person retrying), not a wait
    assert code is ExtResultCode.NOT_FOUND

    # Its own sessions are left as they were.
    sessions = await system.runtime.sessions.recent(alice, 0, 10)
    assert {s.peer_id for s in sessions} >= {bob, member_of}
