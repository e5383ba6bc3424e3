"""Revoke end to end: RevokeReq on im.up.msg, handled in the msg group by consumers.revoke."""

from __future__ import annotations

import time

from consumers.views import REVOKED_TEXT
from schemas.codes import ClientType, ExtResultCode, MsgStatus, MsgType, SessionType
from schemas.commands import Cmd
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2
from sdk.client import Client
from tests.consumers.conftest import Seeder, System
from tests.waiting import wait_for


async def _revoke(
    sdk: Client, session_id: int, server_msg_id: int, *, group: bool = False, cmid: str = ""
) -> ext_pb2.RevokeRsp:
    req = ext_pb2.RevokeReq(
        user_id=sdk.user_id,
        session_type=base_pb2.SESSION_TYPE_GROUP if group else base_pb2.SESSION_TYPE_SINGLE,
        session_id=session_id,
        server_msg_id=server_msg_id,
        client_msg_id=cmid,
    )
    rsp = await sdk.request(Cmd.REVOKE_REQ, req)
    assert isinstance(rsp, ext_pb2.RevokeRsp)
    return rsp


async def test_sender_revokes_everyone_is_told_and_history_shows_it(system: System) -> None:
    await system.start_consumers()
    alice, bob = await system.user(), await system.user()
    phone = await system.login(alice, client_type=ClientType.ANDROID)
    desk = await system.login(alice, client_type=ClientType.MAC_OS)
    bob_sdk = await system.login(bob)
    ack = await phone.send_text(bob, "oops")
    keep = await phone.send_text(bob, "fine")

    denied = await _revoke(bob_sdk, alice, ack.server_msg_id)
    assert ExtResultCode(denied.result_code) is ExtResultCode.FORBIDDEN
    mismatch = await _revoke(phone, bob, ack.server_msg_id, cmid="not-it")
    assert ExtResultCode(mismatch.result_code) is ExtResultCode.INVALID_PARAMETER
    missing = await _revoke(phone, bob, keep.server_msg_id + 1000)
    assert ExtResultCode(missing.result_code) is ExtResultCode.NOT_FOUND

    rsp = await _revoke(phone, bob, ack.server_msg_id, cmid=ack.client_msg_id)
    assert ExtResultCode(rsp.result_code) is ExtResultCode.OK
    (to_bob,) = await system.wait_pushes(bob_sdk, Cmd.REVOKE_NOTIFY)
    assert isinstance(to_bob, ext_pb2.RevokeNotify)
    assert (to_bob.operator_user_id, to_bob.session_id) == (alice, alice)
    assert (to_bob.server_msg_id, to_bob.client_msg_id) == (ack.server_msg_id, ack.client_msg_id)
    assert abs(to_bob.revoke_time - time.time()) < 60
    (to_desk,) = await system.wait_pushes(desk, Cmd.REVOKE_NOTIFY)
    assert isinstance(to_desk, ext_pb2.RevokeNotify)
    assert to_desk.session_id == bob
    await phone.heartbeat()
    assert system.pushes(phone, Cmd.REVOKE_NOTIFY) == []

    shown = {m.server_msg_id: m for m in (await bob_sdk.history(alice)).msg_list}
    revoked, kept = shown[ack.server_msg_id], shown[keep.server_msg_id]
    assert MsgType(revoked.msg_type) is MsgType.TIPS
    assert MsgStatus(revoked.msg_status) is MsgStatus.SEND_CANCEL
    assert revoked.msg_data == REVOKED_TEXT.encode()
    assert kept.msg_data == b"fine"
    by_id = await bob_sdk.messages_by_id(alice, [ack.client_msg_id])
    assert [m.msg_data for m in by_id.msg_list] == [REVOKED_TEXT.encode()]

    again = await _revoke(phone, bob, ack.server_msg_id)  # idempotent
    assert ExtResultCode(again.result_code) is ExtResultCode.OK
    impostor = await phone.request(
        Cmd.REVOKE_REQ,
        ext_pb2.RevokeReq(
            user_id=bob,
            session_type=base_pb2.SESSION_TYPE_SINGLE,
            session_id=bob,
            server_msg_id=keep.server_msg_id,
        ),
    )
    assert isinstance(impostor, ext_pb2.RevokeRsp)
    assert ExtResultCode(impostor.result_code) is ExtResultCode.FORBIDDEN
    assert [m.msg_data for m in (await bob_sdk.history(alice)).msg_list][-1] == b"fine"


async def test_revoke_window_and_group_members_notified(system: System) -> None:
    await system.start_consumers()
    alice, bob, carol = await system.user(), await system.user(), await system.user()
    old = await Seeder(system.runtime).message(
        alice, carol, created_ms=int(time.time() * 1000) - 121_000
    )
    alice_sdk, bob_sdk = await system.login(alice), await system.login(bob)
    carol_sdk = await system.login(carol)

    late = await _revoke(alice_sdk, carol, old.seq)
    assert ExtResultCode(late.result_code) is ExtResultCode.EXPIRED
    assert [m.msg_data for m in (await carol_sdk.history(alice)).msg_list] == [old.msg_data]

    gid = (await alice_sdk.create_group("g", [bob, carol])).group_info.group_id
    sent = await alice_sdk.send_text(gid, "to all", session_type=SessionType.GROUP)
    rsp = await _revoke(alice_sdk, gid, sent.server_msg_id, group=True)
    assert ExtResultCode(rsp.result_code) is ExtResultCode.OK
    for sdk in (bob_sdk, carol_sdk):
        (note,) = await system.wait_pushes(sdk, Cmd.REVOKE_NOTIFY)
        assert isinstance(note, ext_pb2.RevokeNotify)
        assert (note.session_id, note.server_msg_id) == (gid, sent.server_msg_id)

    async def shown_revoked() -> bool:
        page = await carol_sdk.history(gid, session_type=SessionType.GROUP)
        return any(
            m.server_msg_id == sent.server_msg_id
            and MsgStatus(m.msg_status) is MsgStatus.SEND_CANCEL
            for m in page.msg_list
        )

    await wait_for(shown_revoked)
