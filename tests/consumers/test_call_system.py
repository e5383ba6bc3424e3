"""Calls end to end: VoIP signalling through im.up.call and the call group (consumers.call),
on the embedded system and on the real services, callers and callees on different gates."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import time
from typing import Any

import msgspec
import pytest

from coffeebus.settings import CallSettings, PushSettings
from coffeebus.wiring import Runtime
from consumers.call import ENDING_RETRY_S
from schemas.bizevents import CallAnswered, CallEnded, CallStarted, decode_event
from schemas.codes import (
    ClientType,
    ErrorCode,
    ExtResultCode,
    InviteRspCode,
    MsgType,
    VoipByeReason,
)
from schemas.commands import Cmd
from schemas.events import decode_push_request
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import message_pb2, voip_pb2
from sdk.client import Client
from sdk.errors import ServerError
from store.calls import EndCause
from tests.consumers.biztap import Tap
from tests.consumers.conftest import System

SECRET = "s3cret"
URIS = ("turn:turn.example.com:3478?transport=udp",)


def with_calls(system: System, *, push: PushSettings | None = None, **calls: Any) -> Runtime:
    """The system's runtime with ``[calls]`` (and ``[push]``) settings of the test's own."""
    settings = system.runtime.settings
    settings = msgspec.structs.replace(
        settings,
        calls=msgspec.structs.replace(CallSettings(), **calls),
        push=push or settings.push,
    )
    return dataclasses.replace(system.runtime, settings=settings)


def avchats(system: System, client: Client, peer: int = 0) -> list[message_pb2.MsgData]:
    """The AVCHAT messages pushed to `client` (with `peer` only, if given)."""
    return [
        m
        for m in system.pushes(client, Cmd.MSG_DATA)
        if isinstance(m, message_pb2.MsgData)
        and MsgType(m.msg_type) is MsgType.AVCHAT
        and (not peer or peer in (m.from_user_id, m.to_session_id))
    ]


async def wait_avchat(system: System, client: Client, peer: int = 0) -> message_pb2.MsgData:
    """The one AVCHAT message pushed to `client` (of the conversation with `peer`)."""
    await system.event_logs[client].until(lambda: bool(avchats(system, client, peer)))
    [msg] = avchats(system, client, peer)
    return msg


async def byes(system: System, client: Client, count: int = 1) -> list[voip_pb2.VoipByeNotify]:
    found = await system.wait_pushes(client, Cmd.VOIP_BYE_NOTIFY, count=count)
    return [m for m in found if isinstance(m, voip_pb2.VoipByeNotify)]


async def ringing_call(system: System) -> tuple[int, int, Client, Client, str]:
    """alice (on the first gate) calls bob (on a second one); bob's device rings."""
    alice, bob = await system.user(), await system.user()
    caller = await system.login(alice)
    callee = await system.login(bob, await system.gate())
    channel = (await caller.call(bob)).channel_info.channel_name
    await system.wait_pushes(callee, Cmd.VOIP_INVITE_REQ)
    return alice, bob, caller, callee, channel


def call_events(tap: Tap, channel: str) -> dict[str, Any]:
    return {
        type(e).__name__: e
        for e in (decode_event(r.value) for r in tap.records if r.key == channel.encode())
    }


async def test_call_across_two_gates(system: System) -> None:
    await system.start_consumers(runtime=with_calls(system, turn_secret=SECRET, turn_uris=URIS))
    tap = await Tap(system, ["biz.events.call"], lambda key: key.startswith(b"call-")).start()
    gate1, gate2 = await system.gate(), await system.gate()
    alice, bob, carol = await system.user(), await system.user(), await system.user()
    caller = await system.login(alice, gate1, client_type=ClientType.ANDROID)
    phone = await system.login(bob, gate2, client_type=ClientType.IOS)
    desk = await system.login(bob, gate1, client_type=ClientType.MAC_OS)
    intruder = await system.login(carol, gate2)

    trying = await caller.call(bob, video=True)
    assert (trying.user_id, InviteRspCode(trying.rsp_code)) == (0, InviteRspCode.TRYING)
    channel = trying.channel_info.channel_name
    assert channel.startswith("call-")
    assert trying.channel_info.creator_id == alice
    token = json.loads(trying.channel_info.channel_token)
    expiry, user = token["username"].split(":")
    assert user == str(alice)
    assert abs(int(expiry) - 86400 - time.time()) < 60
    assert token["uris"] == list(URIS)
    # What coturn's use-auth-secret checks: base64(HMAC-SHA1(secret, username)).
    mac = hmac.new(SECRET.encode(), token["username"].encode(), hashlib.sha1).digest()
    assert token["password"] == base64.b64encode(mac).decode()

    for device in (phone, desk):  # every device rings, on either gate
        (invite,) = await system.wait_pushes(device, Cmd.VOIP_INVITE_REQ)
        assert isinstance(invite, voip_pb2.VoipInviteReq)
        assert (invite.creator_user_id, list(invite.invite_user_list)) == (alice, [bob])
        assert invite.invite_type == voip_pb2.VOIP_INVITE_TYPE_VIDEO_CALL
        assert invite.channel_info.channel_name == channel
        assert json.loads(invite.channel_info.channel_token)["username"].endswith(f":{bob}")

    with pytest.raises(ServerError) as refused:
        await intruder.answer(channel)  # only the callee answers
    assert refused.value.code is ExtResultCode.FORBIDDEN

    await phone.ringing(channel)
    (ringing,) = await system.wait_pushes(caller, Cmd.VOIP_INVITE_REPLY)
    assert isinstance(ringing, voip_pb2.VoipInviteReply)
    assert (ringing.user_id, InviteRspCode(ringing.rsp_code)) == (bob, InviteRspCode.RINGING)

    ack = await phone.answer(channel)
    assert ack.channel_info.channel_name == channel
    answered = (await system.wait_pushes(caller, Cmd.VOIP_INVITE_REPLY, count=2))[1]
    assert isinstance(answered, voip_pb2.VoipInviteReply)
    assert (answered.user_id, InviteRspCode(answered.rsp_code)) == (bob, InviteRspCode.OK)
    (stop,) = await byes(system, desk)  # the other device stops ringing
    assert (stop.user_id, VoipByeReason(stop.bye_reason)) == (
        bob,
        VoipByeReason.ONLINE_CLIENT_REJECT,
    )
    with pytest.raises(ServerError) as late:
        await desk.answer(channel)
    assert late.value.code is ExtResultCode.FORBIDDEN

    with pytest.raises(ServerError) as third:
        await intruder.hangup(channel)  # a third party cannot end it
    assert third.value.code is ExtResultCode.FORBIDDEN
    ignored = await desk.hangup(channel)  # nor a device that did not take it
    assert ErrorCode(ignored.error_code) is ErrorCode.SUCCESS
    await caller.call_heartbeat()
    await phone.call_heartbeat()

    rsp = await caller.hangup(channel)
    assert ErrorCode(rsp.error_code) is ErrorCode.SUCCESS
    (bye,) = await byes(system, phone)
    assert (bye.user_id, VoipByeReason(bye.bye_reason)) == (alice, VoipByeReason.END)
    assert bye.channel_info.channel_name == channel

    for client in (phone, caller):  # one AVCHAT message, pushed to both sides
        msg = await wait_avchat(system, client)
        assert (msg.from_user_id, msg.to_session_id) == (alice, bob)
        content = json.loads(msg.msg_data)
        assert 0 <= content["timeLen"] < 30  # seconds from the answer to the bye
        assert content == {
            "hangupUserId": alice,
            "hangupReason": VoipByeReason.END,
            "timeLen": content["timeLen"],
            "callType": 2,
        }
    again = await caller.hangup(channel)  # a resent bye changes nothing
    assert ErrorCode(again.error_code) is ErrorCode.SUCCESS
    marker = await caller.send_text(bob, "after the call")
    await system.event_logs[phone].until(
        lambda: any(
            getattr(m, "server_msg_id", 0) == marker.server_msg_id
            for m in system.pushes(phone, Cmd.MSG_DATA)
        )
    )
    history = (await phone.history(alice)).msg_list
    assert [MsgType(m.msg_type) for m in history] == [MsgType.AVCHAT, MsgType.TEXT]
    assert len(avchats(system, phone)) == 1

    await tap.wait(lambda _: len(call_events(tap, channel)) == 3)
    events = call_events(tap, channel)
    started, answered_event, ended = (
        events["CallStarted"],
        events["CallAnswered"],
        events["CallEnded"],
    )
    assert isinstance(started, CallStarted)
    assert started.caller_id == alice
    assert (started.callee_id, started.call_type) == (bob, 2)
    assert isinstance(answered_event, CallAnswered)
    assert answered_event.callee_client_type == ClientType.IOS
    assert isinstance(ended, CallEnded)
    assert (ended.answered, ended.cause, ended.hangup_user_id) == (True, "bye", alice)
    assert (ended.duration_s, ended.reason) == (content["timeLen"], VoipByeReason.END)
    await tap.stop()


async def test_busy_callee_and_busy_caller(system: System) -> None:
    await system.start_consumers()
    gate1, gate2 = await system.gate(), await system.gate()
    alice, bob, carol = await system.user(), await system.user(), await system.user()
    caller = await system.login(alice, gate1)
    callee = await system.login(bob, gate2)
    other = await system.login(carol, gate1)
    first = await caller.call(bob)
    await system.wait_pushes(callee, Cmd.VOIP_INVITE_REQ)

    second = await other.call(bob)
    (busy,) = await byes(system, other)
    assert busy.channel_info.channel_name == second.channel_info.channel_name
    assert (busy.user_id, VoipByeReason(busy.bye_reason)) == (bob, VoipByeReason.BUSY)
    with pytest.raises(ServerError) as already:
        await caller.call(carol)  # one call at a time
    assert already.value.code is ExtResultCode.FORBIDDEN

    rsp = await caller.hangup(first.channel_info.channel_name)  # cancel while it rings
    assert ErrorCode(rsp.error_code) is ErrorCode.SUCCESS
    (cancel,) = await byes(system, callee)
    assert (cancel.user_id, VoipByeReason(cancel.bye_reason)) == (alice, VoipByeReason.CANCEL)
    missed = await wait_avchat(system, callee, alice)
    assert json.loads(missed.msg_data)["hangupReason"] == VoipByeReason.CANCEL
    # The busy call is in carol's conversation with bob, not in alice's.
    busy_record = await wait_avchat(system, other)
    assert (busy_record.from_user_id, busy_record.to_session_id) == (bob, carol)
    assert json.loads(busy_record.msg_data)["hangupReason"] == VoipByeReason.BUSY
    assert len(system.pushes(callee, Cmd.VOIP_INVITE_REQ)) == 1  # busy never rang

    again = await other.call(bob)  # bob is free again
    assert InviteRspCode(again.rsp_code) is InviteRspCode.TRYING
    await system.wait_pushes(callee, Cmd.VOIP_INVITE_REQ, count=2)


async def test_callee_rejects_and_other_devices_stop(system: System) -> None:
    await system.start_consumers()
    alice, bob = await system.user(), await system.user()
    caller = await system.login(alice)
    phone = await system.login(bob, client_type=ClientType.ANDROID)
    desk = await system.login(bob, await system.gate(), client_type=ClientType.PC_WINDOWS)
    channel = (await caller.call(bob)).channel_info.channel_name
    await system.wait_pushes(desk, Cmd.VOIP_INVITE_REQ)
    rsp = await phone.hangup(channel)
    assert ErrorCode(rsp.error_code) is ErrorCode.SUCCESS
    (to_caller,) = await byes(system, caller)
    assert (to_caller.user_id, VoipByeReason(to_caller.bye_reason)) == (bob, VoipByeReason.REJECT)
    (to_desk,) = await byes(system, desk)
    assert (to_desk.user_id, VoipByeReason(to_desk.bye_reason)) == (
        bob,
        VoipByeReason.ONLINE_CLIENT_REJECT,
    )
    msg = await wait_avchat(system, caller)
    assert (msg.from_user_id, json.loads(msg.msg_data)["hangupReason"]) == (
        bob,
        VoipByeReason.REJECT,
    )
    assert system.pushes(phone, Cmd.VOIP_BYE_NOTIFY) == []  # it got its ByeRsp


async def test_offline_callee_gets_the_missed_call_by_push(system: System) -> None:
    push = PushSettings(timer_delay_s=0.2)
    await system.start_consumers(runtime=with_calls(system, push=push))
    tap = await Tap(system, ["im.push"], lambda key: True).start()
    alice, bob = await system.user(), await system.user()
    caller = await system.login(alice)
    trying = await caller.call(bob)
    assert InviteRspCode(trying.rsp_code) is InviteRspCode.TRYING
    (error,) = await system.wait_pushes(caller, Cmd.ERROR_RSP)
    assert isinstance(error, ext_pb2.ErrorRsp)
    assert (error.request_command_id, ExtResultCode(error.result_code)) == (
        Cmd.VOIP_INVITE_REQ,
        ExtResultCode.UNAVAILABLE,
    )
    assert "offline" in error.text
    (bye,) = await byes(system, caller)
    assert (bye.user_id, VoipByeReason(bye.bye_reason)) == (0, VoipByeReason.CANCEL)

    await tap.wait(lambda records: any(r.key == str(bob).encode() for r in records))
    [request] = [
        decode_push_request(r.value) for r in tap.records if r.key == str(bob).encode()
    ]  # one push: the AVCHAT message nobody acked
    assert (request.notice.msg_type, request.notice.from_user_id) == (MsgType.AVCHAT, alice)
    assert request.notice.preview == "Missed voice call"  # the alert's body
    await tap.stop()
    callee = await system.login(bob)
    [missed] = list((await callee.history(alice)).msg_list)
    assert MsgType(missed.msg_type) is MsgType.AVCHAT
    assert json.loads(missed.msg_data) == {
        "hangupUserId": 0,
        "hangupReason": VoipByeReason.CANCEL,
        "timeLen": 0,
        "callType": 1,
    }


async def test_unanswered_call_times_out_with_cancel(system: System) -> None:
    await system.start_consumers(
        runtime=with_calls(system, invite_timeout_s=1.0, sweep_interval_s=0.1)
    )
    alice, _bob, caller, callee, channel = await ringing_call(system)
    await callee.ringing(channel)
    for client in (caller, callee):
        (bye,) = await byes(system, client)
        assert (bye.user_id, VoipByeReason(bye.bye_reason)) == (0, VoipByeReason.CANCEL)
        assert bye.channel_info.channel_name == channel
    msg = await wait_avchat(system, callee)
    assert msg.from_user_id == alice
    assert json.loads(msg.msg_data)["hangupUserId"] == 0
    with pytest.raises(ServerError) as over:
        await callee.answer(channel)
    assert over.value.code is ExtResultCode.NOT_FOUND


async def test_silent_party_ends_the_call(system: System) -> None:
    await system.start_consumers(
        runtime=with_calls(system, heartbeat_timeout_s=1.0, sweep_interval_s=0.1)
    )
    tap = await Tap(system, ["biz.events.call"], lambda key: key.startswith(b"call-")).start()
    _alice, bob, caller, callee, channel = await ringing_call(system)
    await callee.answer(channel)

    async def keep_alive() -> None:  # alice keeps the call up, bob goes silent
        while True:
            await caller.call_heartbeat()
            await asyncio.sleep(0.2)

    beating = asyncio.create_task(keep_alive())
    try:
        (bye,) = await byes(system, caller)
    finally:
        beating.cancel()
    assert (bye.user_id, VoipByeReason(bye.bye_reason)) == (bob, VoipByeReason.END)
    msg = await wait_avchat(system, caller)
    assert msg.from_user_id == bob
    await tap.wait(lambda _: "CallEnded" in call_events(tap, channel))
    ended = call_events(tap, channel)["CallEnded"]
    assert (ended.cause, ended.hangup_user_id, ended.answered) == ("heartbeat_timeout", bob, True)
    await tap.stop()


async def test_bad_invites_are_refused_and_change_nothing(system: System) -> None:
    await system.start_consumers()
    alice, bob = await system.user(), await system.user()
    caller = await system.login(alice)
    callee = await system.login(bob)

    async def refused(req: voip_pb2.VoipInviteReq) -> ExtResultCode | int:
        with pytest.raises(ServerError) as info:
            await caller.request(Cmd.VOIP_INVITE_REQ, req)
        return info.value.code

    voice = voip_pb2.VOIP_INVITE_TYPE_VOICE_CALL
    two = voip_pb2.VoipInviteReq(invite_user_list=[bob, bob + 1], invite_type=voice)
    assert await refused(two) is ExtResultCode.INVALID_PARAMETER
    me = voip_pb2.VoipInviteReq(invite_user_list=[alice], invite_type=voice)
    assert await refused(me) is ExtResultCode.INVALID_PARAMETER
    untyped = voip_pb2.VoipInviteReq(invite_user_list=[bob])
    assert await refused(untyped) is ExtResultCode.INVALID_PARAMETER
    nobody = voip_pb2.VoipInviteReq(invite_user_list=[System.new_uid()], invite_type=voice)
    assert await refused(nobody) is ExtResultCode.NOT_FOUND
    forged = voip_pb2.VoipInviteReq(
        creator_user_id=bob, invite_user_list=[alice], invite_type=voice
    )
    assert await refused(forged) is ExtResultCode.FORBIDDEN
    with pytest.raises(ServerError) as unknown:
        await caller.hangup("call-nothing")
    assert unknown.value.code is ExtResultCode.NOT_FOUND

    # None of them made a call: bob is free and nothing rang.
    channel = (await caller.call(bob)).channel_info.channel_name
    (invite,) = await system.wait_pushes(callee, Cmd.VOIP_INVITE_REQ)
    assert isinstance(invite, voip_pb2.VoipInviteReq)
    assert invite.channel_info.channel_name == channel
    with pytest.raises(ServerError) as wrong_side:
        await caller.answer(channel)  # the caller cannot answer its own call
    assert wrong_side.value.code is ExtResultCode.FORBIDDEN
    await caller.hangup(channel)


async def test_an_end_left_half_done_by_a_dead_process_is_finished(system: System) -> None:
    await system.start_consumers(runtime=with_calls(system, sweep_interval_s=0.1))
    alice, bob, caller, callee, channel = await ringing_call(system)
    await callee.answer(channel)
    await system.wait_pushes(caller, Cmd.VOIP_INVITE_REPLY)
    # What a call-group member does first when alice hangs up — and then it dies, before
    # anyone was told: the call is ending in Redis, and nothing else happened.
    now = int(time.time() * 1000)
    ended, _ = await system.runtime.calls.end(
        channel,
        hangup_user=alice,
        reason=VoipByeReason.END,
        cause=EndCause.BYE,
        now_ms=now,
        retry_ms=now + round(ENDING_RETRY_S * 1000),
    )
    assert ended
    (bye,) = await byes(system, callee)  # the sweep finished it
    assert (bye.user_id, VoipByeReason(bye.bye_reason)) == (alice, VoipByeReason.END)
    msg = await wait_avchat(system, callee)
    assert msg.from_user_id == alice
    # Finished: the claims are released, and a replayed bye changes nothing.
    rsp = await caller.hangup(channel)
    assert ErrorCode(rsp.error_code) is ErrorCode.SUCCESS
    again = await caller.call(bob)
    assert InviteRspCode(again.rsp_code) is InviteRspCode.TRYING
    assert len(avchats(system, callee)) == 1
