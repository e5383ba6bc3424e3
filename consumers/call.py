"""The ``call`` group: VoIP signalling (0x0401-0x0407) between any two gates.

CoffeeChat's gate keeps a call in its memory, so both parties must be on one gate. Here the
gates publish the signalling to ``im.up.call`` (keyed by the sender) like any request, this
group keeps every call in `store.calls` (Redis on the real services) and pushes what the
other party must see to whatever gate its devices are on. docs/protocol-extensions.md
("Calls") is the client's view; this is the server's:

- **VoipInviteReq** (caller): one callee, a voice or video call, a user the caller may
  message (one that exists; not themselves). The channel is named after the request's trace
  id (``call-<trace id>``: unique per call, the same on a replay, so a replayed invite makes
  no second call). The caller is claimed (a caller already in a live call is refused), the
  call stored ringing, and the caller answered with InviteReply 100 (user_id 0, the server)
  carrying the channel. Then: a callee in another live call → the call ends ``busy``; a
  callee without any online device → it ends ``cancel`` by the server (user_id 0), the
  caller also gets an ErrorRsp UNAVAILABLE saying so, and the AVCHAT message of the missed
  call reaches the callee's inbox and, unacked, the delivery timer's offline push
  (`consumers.timer`); otherwise the invite, channel filled in, rings every online device of
  the callee.
- **VoipInviteReply** (a callee device): 180 is forwarded to the caller's device; 200 lets
  that device take the call if nobody has (`store.calls.CallStore.answer`, atomic): it gets
  InviteReplyAck, the caller the 200, and the callee's other devices a ByeNotify
  ``online-client-reject`` (PROTOCOL.md's reason for "another device of the callee handled
  the call": they stop ringing). A device that answers too late gets that ByeNotify itself.
- **VoipHeartbeat** (a party): records the party's last heartbeat on the call its claim names.
- **VoipByeReq** (a party): ends a live call (reason: the request's cancel, reject, end or
  busy; when it gives none, cancel from the caller before the answer, reject from the
  callee, end after) and is answered ByeRsp SUCCESS — also for a call already over, so a
  resent bye is harmless. A callee device other than the one that answered cannot end a
  call in progress (its bye is answered and ignored).
- The **sweep** (every ``[calls] sweep_interval_s`` in every member) looks at the calls whose
  deadline passed: a ringing call older than ``invite_timeout_s`` ends ``cancel`` by the
  server; a talking call whose older heartbeat is ``heartbeat_timeout_s`` old ends ``end``
  by the silent party; an ending call that nobody finished (its process died) is finished.
  A heartbeat counts from when its gate received it (the envelope's time), and a member
  ends no call for silence during its first heartbeat timeout: heartbeats that waited in
  ``im.up.call`` while the group was down are read before anyone is called silent.

Every end publishes, in one `Effects` (`_end_effects`): a ByeNotify to the parties' devices
(but the one whose bye it answers), one AVCHAT message (msg type 10, the JSON of PROTOCOL.md:
``hangupUserId``, ``hangupReason``, ``timeLen``, ``callType``) as a system MsgData on
``im.up.msg`` — stored and pushed to both parties by the msg and fanout groups like any
message, and exactly once because its client_msg_id is the channel (the msg group's
dedupe) — and a ``call.ended`` event; then the call is finished. Started and answered calls
emit ``call.started`` and ``call.answered`` (`schemas.bizevents`, on ``biz.events.call``).

Authorization: identity is the envelope's origin; a body naming another user is refused
(`consumers.requests.acting_user`); only the callee may reply, only the two parties may say
bye — anyone else gets an ErrorRsp FORBIDDEN (and a bye a ByeRsp with
USER_INVALID_PARAMETER), and the call goes on.

Each record's effects are flushed before the next record is handled: signalling is a trickle,
and one connection's frames must arrive in the order they were decided (`Effects` puts a
record's replies before its pushes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, cast

from bus.base import Bus, Record, Reject, TopicPartition
from bus.topology import Topology
from consumers.effects import Effects
from consumers.registry import consumer_group
from consumers.requests import Refusal, Request, acting_user, decode_request
from consumers.settings import CallSettings
from consumers.turn import channel_token
from schemas.bizevents import (
    BizEvent,
    CallAnswered,
    CallEndCause,
    CallEnded,
    CallStarted,
    encode_event,
    event_id,
)
from schemas.codes import (
    ErrorCode,
    ExtResultCode,
    InviteRspCode,
    MsgType,
    SessionType,
    VoipByeReason,
    VoipInviteType,
)
from schemas.commands import Cmd, UplinkTopic
from schemas.envelope import Origin, encode_envelope, make_envelope
from schemas.ids import ConnId, GateId, TraceId, UserId, conversation_id
from schemas.pb.coffeechat import base_pb2, message_pb2, voip_pb2
from store.calls import Call, CallState, CallStore, EndCause
from store.clock import Clock, SystemClock
from store.routes import Route, RouteStore
from store.users import UserStore

if TYPE_CHECKING:
    from consumers.runtime import Runtime

__all__ = ["CallHandler", "avchat_content", "build"]

log = logging.getLogger(__name__)

#: how long an ending call waits for the process that ended it before the sweep finishes it
ENDING_RETRY_S = 5.0
#: how long an ended call's record is kept (a replayed signal finds it and does nothing)
ENDED_KEEP_S = 3600.0
#: how long a call's record lives at most without a heartbeat refreshing it
CALL_TTL_S = 24 * 3600.0
#: calls the sweep reads per batch, and batches at most per sweep
SWEEP_BATCH = 200
SWEEP_ROUNDS = 50

_WIRE_REASONS = frozenset(
    {VoipByeReason.CANCEL, VoipByeReason.REJECT, VoipByeReason.END, VoipByeReason.BUSY}
)


def avchat_content(call: Call) -> bytes:
    """The AVCHAT message's msg_data (PROTOCOL.md, "VoIP signalling")."""
    return json.dumps(
        {
            "hangupUserId": call.hangup_user,
            "hangupReason": call.reason,
            "timeLen": call.duration_s,
            "callType": call.call_type,
        },
        separators=(",", ":"),
    ).encode()


def _origin_route(origin: Origin) -> Route:
    return Route(
        gate_id=origin.gate_id,
        conn_id=origin.conn_id,
        client_type=origin.client_type,
        login_ms=0,
    )


def _of_type(routes: Iterable[Route], client_type: int) -> list[Route]:
    return [r for r in routes if r.client_type == client_type]


class CallHandler:
    """Handles ``im.up.call`` and sweeps the calls' deadlines (module docstring)."""

    def __init__(
        self,
        *,
        bus: Bus,
        topology: Topology,
        calls: CallStore,
        routes: RouteStore,
        users: UserStore,
        settings: CallSettings,
        clock: Clock | None = None,
    ) -> None:
        self._bus = bus
        self._topology = topology
        self._calls = calls
        self._routes = routes
        self._users = users
        self._settings = settings
        self._clock = clock or SystemClock()
        self._invite_ms = round(settings.invite_timeout_s * 1000)
        self._heartbeat_ms = round(settings.heartbeat_timeout_s * 1000)
        # A claim outlives a ringing call and a heartbeat gap; heartbeats refresh it.
        self._claim_ttl_s = settings.invite_timeout_s + 2 * settings.heartbeat_timeout_s
        self._msg_topic = topology.topic(UplinkTopic.MSG).name
        self._sweeper: asyncio.Task[None] | None = None
        #: before this time the sweep ends no call for silence (`sweep`)
        self._silence_from_ms = 0

    # --- the consumer -------------------------------------------------------------------------

    async def handle(self, records: Sequence[Record]) -> None:
        """Handle each signal and publish its effects before the next one."""
        for record in records:
            request = decode_request(record)
            origin = request.origin
            if origin is None:
                raise Reject(f"VoIP command 0x{request.cmd:04X} without an origin connection")
            effects = Effects(self._topology)
            finishing: list[Call] = []
            trace = request.envelope.trace_id
            try:
                await self._dispatch(request, origin, effects, finishing)
            except Refusal as refusal:
                effects.error(origin, request.cmd, refusal.code, refusal.text, trace)
                if request.cmd == Cmd.VOIP_BYE_REQ:
                    rsp = voip_pb2.VoipByeRsp(
                        error_code=base_pb2.ErrorCode.ValueType(ErrorCode.USER_INVALID_PARAMETER)
                    )
                    effects.reply(origin, Cmd.VOIP_BYE_RSP, rsp, trace)
            await effects.flush(self._bus)
            for call in finishing:
                await self._calls.finish(call, keep_s=ENDED_KEEP_S)

    async def _dispatch(
        self, request: Request, origin: Origin, effects: Effects, finishing: list[Call]
    ) -> None:
        msg = request.message
        if isinstance(msg, voip_pb2.VoipInviteReq):
            await self._invite(request, origin, msg, effects, finishing)
        elif isinstance(msg, voip_pb2.VoipInviteReply):
            await self._reply(request, origin, msg, effects)
        elif isinstance(msg, voip_pb2.VoipHeartbeat):
            await self._heartbeat(origin, request.envelope.ts_ms)
        elif isinstance(msg, voip_pb2.VoipByeReq):
            await self._bye(request, origin, msg, effects, finishing)
        else:
            raise Refusal(ExtResultCode.UNKNOWN_COMMAND, "not served on im.up.call")

    # --- signals ------------------------------------------------------------------------------

    async def _invite(
        self,
        request: Request,
        origin: Origin,
        msg: voip_pb2.VoipInviteReq,
        effects: Effects,
        finishing: list[Call],
    ) -> None:
        caller = acting_user(origin, msg.creator_user_id, request.cmd)
        if len(msg.invite_user_list) != 1:
            raise Refusal(
                ExtResultCode.INVALID_PARAMETER,
                "invite_user_list must name exactly one callee (one-to-one calls only)",
            )
        callee = UserId(msg.invite_user_list[0])
        if callee == caller or callee <= 0:
            raise Refusal(ExtResultCode.INVALID_PARAMETER, "a call needs another user")
        if int(msg.invite_type) not in (VoipInviteType.VOICE_CALL, VoipInviteType.VIDEO_CALL):
            raise Refusal(
                ExtResultCode.INVALID_PARAMETER,
                f"invite_type must be 1 (voice) or 2 (video), not {msg.invite_type}",
            )
        user = await self._users.get(callee)
        if user is None or user.deleted_ms:
            raise Refusal(ExtResultCode.NOT_FOUND, f"user {callee} does not exist")
        trace = request.envelope.trace_id
        now = self._clock.now_ms()
        channel = f"call-{trace}"
        held = await self._calls.claim(caller, channel, ttl_s=self._claim_ttl_s)
        if held is not None:
            raise Refusal(ExtResultCode.FORBIDDEN, f"already in call {held}")
        call = await self._calls.create(
            Call(
                channel=channel,
                caller=caller,
                callee=callee,
                call_type=int(msg.invite_type),
                caller_client_type=origin.client_type,
                state=CallState.RINGING,
                created_ms=now,
                trace_id=trace,
            ),
            deadline_ms=now + self._invite_ms,
            ttl_s=CALL_TTL_S,
        )
        if call.state is not CallState.RINGING:  # a replay of an invite whose call is over
            await self._ended_before(call, effects, finishing, now)
            return
        trying = voip_pb2.VoipInviteReply(
            user_id=0,
            rsp_code=voip_pb2.InviteRspCode.ValueType(InviteRspCode.TRYING),
            channel_info=self._channel(call, caller, now),
        )
        effects.reply(origin, Cmd.VOIP_INVITE_REPLY, trying, trace)
        self._event(
            effects,
            CallStarted(
                id=event_id(CallStarted, channel),
                ts=call.created_ms,
                trace_id=trace,
                channel=channel,
                caller_id=caller,
                callee_id=callee,
                call_type=call.call_type,
                caller_client_type=origin.client_type,
            ),
        )
        if await self._calls.claim(callee, channel, ttl_s=self._claim_ttl_s) is not None:
            await self._end(
                call,
                by=callee,
                reason=VoipByeReason.BUSY,
                cause=EndCause.BUSY,
                effects=effects,
                finishing=finishing,
                origin=None,
            )
            return
        routes = await self._routes.get(callee)
        if not routes:
            effects.error(
                origin,
                request.cmd,
                ExtResultCode.UNAVAILABLE,
                f"user {callee} is offline: the missed call is in the conversation and "
                "reaches them as an offline push",
                trace,
            )
            await self._end(
                call,
                by=0,
                reason=VoipByeReason.CANCEL,
                cause=EndCause.OFFLINE,
                effects=effects,
                finishing=finishing,
                origin=None,
            )
            return
        invite = voip_pb2.VoipInviteReq(
            creator_user_id=caller,
            invite_user_list=[callee],
            invite_type=msg.invite_type,
            channel_info=self._channel(call, callee, now),
        ).SerializeToString()
        effects.push(callee, routes, Cmd.VOIP_INVITE_REQ, invite, trace)

    async def _reply(
        self,
        request: Request,
        origin: Origin,
        msg: voip_pb2.VoipInviteReply,
        effects: Effects,
    ) -> None:
        user = acting_user(origin, msg.user_id, request.cmd)
        call = await self._party_call(msg.channel_info.channel_name, user)
        if user != call.callee:
            raise Refusal(ExtResultCode.FORBIDDEN, "only the callee answers a call")
        trace = request.envelope.trace_id
        now = self._clock.now_ms()
        code = int(msg.rsp_code)
        if code == InviteRspCode.RINGING:
            if call.state is CallState.RINGING:
                await self._to_caller(call, InviteRspCode.RINGING, effects, trace, now)
            return
        if code != InviteRspCode.OK:
            raise Refusal(
                ExtResultCode.INVALID_PARAMETER,
                f"a callee replies 180 (ringing) or 200 (ok), not {code}",
            )
        won, after = await self._calls.answer(
            call.channel, origin.client_type, now, deadline_ms=now + self._heartbeat_ms
        )
        if after is None:
            raise Refusal(ExtResultCode.NOT_FOUND, f"no call {call.channel}")
        if not won:
            # Another device took the call, or it is over: this device stops ringing.
            reason = (
                VoipByeReason.ONLINE_CLIENT_REJECT
                if after.state is CallState.TALKING
                else VoipByeReason(after.reason)
            )
            self._bye_notify(
                effects,
                user,
                [_origin_route(origin)],
                call=after,
                by=user if after.state is CallState.TALKING else after.hangup_user,
                reason=reason,
                trace=trace,
            )
            raise Refusal(
                ExtResultCode.FORBIDDEN
                if after.state is CallState.TALKING
                else ExtResultCode.NOT_FOUND,
                f"call {after.channel} was taken by another device"
                if after.state is CallState.TALKING
                else f"call {after.channel} is over",
            )
        ack = voip_pb2.VoipInviteReplyAck(channel_info=self._channel(after, user, now))
        effects.reply(origin, Cmd.VOIP_INVITE_REPLY_ACK, ack, trace)
        await self._to_caller(after, InviteRspCode.OK, effects, trace, now)
        others = [r for r in await self._routes.get(user) if r.client_type != origin.client_type]
        self._bye_notify(
            effects,
            user,
            others,
            call=after,
            by=user,
            reason=VoipByeReason.ONLINE_CLIENT_REJECT,
            trace=trace,
        )
        self._event(
            effects,
            CallAnswered(
                id=event_id(CallAnswered, after.channel),
                ts=after.answered_ms,
                trace_id=trace,
                channel=after.channel,
                caller_id=after.caller,
                callee_id=after.callee,
                call_type=after.call_type,
                callee_client_type=after.callee_client_type,
            ),
        )

    async def _heartbeat(self, origin: Origin, sent_ms: int) -> None:
        # The heartbeat counts from when the gate received it, not from when it is handled:
        # heartbeats that waited in im.up.call while the group was down still count.
        user = UserId(origin.user_id)
        channel = await self._calls.current(user)
        if channel is None:
            log.debug("VoipHeartbeat of user %d outside any call: ignored", user)
            return
        await self._calls.heartbeat(
            channel,
            user,
            min(sent_ms, self._clock.now_ms()),
            claim_ttl_s=self._claim_ttl_s,
            call_ttl_s=CALL_TTL_S,
        )

    async def _bye(
        self,
        request: Request,
        origin: Origin,
        msg: voip_pb2.VoipByeReq,
        effects: Effects,
        finishing: list[Call],
    ) -> None:
        user = acting_user(origin, msg.user_id, request.cmd)
        call = await self._party_call(msg.channel_info.channel_name, user)
        trace = request.envelope.trace_id
        now = self._clock.now_ms()
        ok = voip_pb2.VoipByeRsp(error_code=base_pb2.ErrorCode.ValueType(ErrorCode.SUCCESS))
        if (
            call.state is CallState.TALKING
            and user == call.callee
            and origin.client_type != call.callee_client_type
        ):
            # A device that did not take the call cannot hang it up.
            effects.reply(origin, Cmd.VOIP_BYE_RSP, ok, trace)
            return
        reason = int(msg.bye_reason)
        if reason not in _WIRE_REASONS:
            if call.state is CallState.TALKING:
                reason = VoipByeReason.END
            elif user == call.caller:
                reason = VoipByeReason.CANCEL
            else:
                reason = VoipByeReason.REJECT
        effects.reply(origin, Cmd.VOIP_BYE_RSP, ok, trace)
        if call.state.live:
            await self._end(
                call,
                by=user,
                reason=VoipByeReason(reason),
                cause=EndCause.BYE,
                effects=effects,
                finishing=finishing,
                origin=origin,
            )
        else:
            await self._ended_before(call, effects, finishing, now)

    # --- ends ---------------------------------------------------------------------------------

    async def _end(
        self,
        call: Call,
        *,
        by: int,
        reason: VoipByeReason,
        cause: EndCause,
        effects: Effects,
        finishing: list[Call],
        origin: Origin | None,
    ) -> None:
        """End a live call and publish what its end means (unless someone else ended it
        first: then publish nothing, or finish what a dead process left ending)."""
        now = self._clock.now_ms()
        ended, after = await self._calls.end(
            call.channel,
            hangup_user=by,
            reason=int(reason),
            cause=cause,
            now_ms=now,
            retry_ms=now + round(ENDING_RETRY_S * 1000),
        )
        if after is None:
            return
        if not ended:
            await self._ended_before(after, effects, finishing, now)
            return
        await self._end_effects(after, effects, origin)
        finishing.append(after)

    async def _ended_before(
        self, call: Call, effects: Effects, finishing: list[Call], now: int
    ) -> None:
        """A signal for a call that someone else ended: finish it if the process that ended
        it has had its time and not finished (it died), else leave it to that process."""
        if call.state is CallState.ENDING and now >= call.ended_ms + ENDING_RETRY_S * 1000:
            await self._end_effects(call, effects, None)
            finishing.append(call)
        elif call.state is CallState.ENDED:
            finishing.append(call)  # idempotent: releases claims a crash may have left

    async def _end_effects(self, call: Call, effects: Effects, origin: Origin | None) -> None:
        """ByeNotify to the devices involved (but `origin`, the bye's sender), the AVCHAT
        message, the ``call.ended`` event."""
        trace = TraceId(call.trace_id)
        routes = await self._routes.get_many((call.caller, call.callee))
        skip = None if origin is None else (origin.gate_id, origin.conn_id)
        caller_routes = _of_type(routes.get(call.caller, ()), call.caller_client_type)
        callee_routes = routes.get(call.callee, [])
        if call.answered_ms:
            callee_routes = _of_type(callee_routes, call.callee_client_type)
        elif call.cause in (EndCause.BUSY, EndCause.OFFLINE):
            callee_routes = []  # never rang
        reason = VoipByeReason(call.reason)
        self._bye_notify(
            effects,
            call.caller,
            caller_routes,
            call=call,
            by=call.hangup_user,
            reason=reason,
            trace=trace,
            skip=skip,
        )
        if call.hangup_user == call.callee and not call.answered_ms:
            # One device refused: the others stop ringing with the reason that says so.
            reason = VoipByeReason.ONLINE_CLIENT_REJECT
        self._bye_notify(
            effects,
            call.callee,
            callee_routes,
            call=call,
            by=call.hangup_user,
            reason=reason,
            trace=trace,
            skip=skip,
        )
        sender = UserId(call.hangup_user or call.caller)
        peer = call.peer(sender)
        avchat = message_pb2.MsgData(
            from_user_id=sender,
            to_session_id=peer,
            client_msg_id=call.channel,  # once per call: the msg group's dedupe key
            create_time=call.ended_ms // 1000,
            msg_type=base_pb2.MsgType.ValueType(MsgType.AVCHAT),
            session_type=base_pb2.SessionType.ValueType(SessionType.SINGLE),
            msg_data=avchat_content(call),
        )
        envelope = make_envelope(Cmd.MSG_DATA, avchat.SerializeToString(), trace_id=trace)
        conversation = conversation_id(SessionType.SINGLE, sender, peer)
        effects.publish(self._msg_topic, encode_envelope(envelope), key=conversation.encode())
        self._event(
            effects,
            CallEnded(
                id=event_id(CallEnded, call.channel),
                ts=call.ended_ms,
                trace_id=trace,
                channel=call.channel,
                caller_id=call.caller,
                callee_id=call.callee,
                call_type=call.call_type,
                answered=call.answered_ms > 0,
                duration_s=call.duration_s,
                hangup_user_id=call.hangup_user,
                reason=call.reason,
                cause=cast(CallEndCause, call.cause),
            ),
        )
        log.info(
            "call %s of %d -> %d ended: %s (reason %d, %d s)",
            call.channel,
            call.caller,
            call.callee,
            call.cause,
            call.reason,
            call.duration_s,
        )

    # --- the sweep ------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Look at every call whose deadline has passed; return how many ended or finished.

        Each look moves the call's deadline on (rescheduled, ended, finished or forgotten),
        so the next batch holds other calls; a sweep reads up to `SWEEP_ROUNDS` batches,
        and what is left waits for the next sweep (or another member's)."""
        done = 0
        for _ in range(SWEEP_ROUNDS):
            now = self._clock.now_ms()
            due = await self._calls.due(now, SWEEP_BATCH)
            for channel in due:
                done += await self._look(channel, now)
            if len(due) < SWEEP_BATCH:
                break
        return done

    async def _look(self, channel: str, now: int) -> int:
        """Move one due call on (module docstring, "The sweep"); 1 if it ended or finished."""
        call = await self._calls.get(channel)
        if call is None:
            await self._calls.forget(channel)
            return 0
        effects = Effects(self._topology)
        finishing: list[Call] = []
        end: tuple[int, VoipByeReason, EndCause] | None = None
        if call.state is CallState.RINGING:
            deadline = call.created_ms + self._invite_ms
            end = (0, VoipByeReason.CANCEL, EndCause.NO_ANSWER)
        elif call.state is CallState.TALKING:
            oldest = min(call.caller_hb_ms, call.callee_hb_ms)
            deadline = max(oldest + self._heartbeat_ms, self._silence_from_ms)
            silent = call.caller if call.caller_hb_ms <= call.callee_hb_ms else call.callee
            end = (silent, VoipByeReason.END, EndCause.HEARTBEAT_TIMEOUT)
        if end is None:
            await self._ended_before(call, effects, finishing, now)
        elif now < deadline:
            await self._calls.reschedule(channel, deadline)
            return 0
        else:
            by, reason, cause = end
            await self._end(
                call,
                by=by,
                reason=reason,
                cause=cause,
                effects=effects,
                finishing=finishing,
                origin=None,
            )
        await effects.flush(self._bus)
        for ended in finishing:
            await self._calls.finish(ended, keep_s=ENDED_KEEP_S)
        return len(finishing)

    async def _sweep_forever(self) -> None:
        interval = self._settings.sweep_interval_s
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis or Kafka away: the deadlines wait in Redis; try again next round.
                log.exception("call sweep failed; retrying in %.1f s", interval)
            await asyncio.sleep(interval)

    # --- helpers ----------------------------------------------------------------------------

    async def _party_call(self, channel: str, user: UserId) -> Call:
        if not channel:
            raise Refusal(ExtResultCode.INVALID_PARAMETER, "channel_info.channel_name is empty")
        call = await self._calls.get(channel)
        if call is None:
            raise Refusal(ExtResultCode.NOT_FOUND, f"no call {channel}")
        if not call.party(user):
            log.warning("user %d signalled call %s of %d and %d", user, channel, *_pair(call))
            raise Refusal(ExtResultCode.FORBIDDEN, f"not a party of call {channel}")
        return call

    def _channel(self, call: Call, user_id: int, now_ms: int) -> voip_pb2.ChannelInfo:
        """The call's ChannelInfo as `user_id` gets it: its own TURN credentials."""
        s = self._settings
        token = channel_token(
            s.turn_secret, user_id, now_s=now_ms // 1000, ttl_s=s.turn_ttl_s, uris=s.turn_uris
        )
        return voip_pb2.ChannelInfo(
            channel_name=call.channel, channel_token=token, creator_id=call.caller
        )

    async def _to_caller(
        self, call: Call, code: InviteRspCode, effects: Effects, trace: TraceId, now: int
    ) -> None:
        """Forward a callee's InviteReply to the caller's device."""
        routes = _of_type(await self._routes.get(call.caller), call.caller_client_type)
        body = voip_pb2.VoipInviteReply(
            user_id=call.callee,
            rsp_code=voip_pb2.InviteRspCode.ValueType(code),
            channel_info=self._channel(call, call.caller, now),
        ).SerializeToString()
        effects.push(call.caller, routes, Cmd.VOIP_INVITE_REPLY, body, trace)

    @staticmethod
    def _bye_notify(
        effects: Effects,
        user: int,
        routes: Sequence[Route],
        *,
        call: Call,
        by: int,
        reason: VoipByeReason,
        trace: TraceId,
        skip: tuple[GateId, ConnId] | None = None,
    ) -> None:
        body = voip_pb2.VoipByeNotify(
            user_id=by,
            channel_info=voip_pb2.ChannelInfo(channel_name=call.channel, creator_id=call.caller),
            bye_reason=voip_pb2.VoipByeReason.ValueType(reason),
        ).SerializeToString()
        effects.push(
            UserId(user),
            routes,
            Cmd.VOIP_BYE_NOTIFY,
            body,
            trace,
            skip=skip,
        )

    @staticmethod
    def _event(effects: Effects, event: BizEvent) -> None:
        effects.publish(event.topic, encode_event(event), key=event.key())

    # --- membership -------------------------------------------------------------------------

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """A member that owns partitions sweeps (any number of members may: every end is
        one atomic step in the store)."""
        if partitions and self._sweeper is None:
            # Heartbeats may be waiting in im.up.call (this group was down, or these
            # partitions' owner died): until this member has had one heartbeat timeout to
            # read them, silence proves nothing, so it ends no call for it.
            self._silence_from_ms = self._clock.now_ms() + self._heartbeat_ms
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="call-sweep")

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def close(self) -> None:
        """Stop sweeping."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None


def _pair(call: Call) -> tuple[int, int]:
    return call.caller, call.callee


@consumer_group("call")
def build(runtime: Runtime) -> CallHandler:
    """The call handler on the runtime's call store, routes and users."""
    return CallHandler(
        bus=runtime.bus,
        topology=runtime.topology,
        calls=runtime.calls,
        routes=runtime.routes,
        users=runtime.users,
        settings=runtime.settings.calls,
    )
