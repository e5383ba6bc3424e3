"""Revoke (recall) a message: RevokeReq 0x0805 → RevokeRsp 0x0806 + RevokeNotify 0x0807.

RevokeReq travels on ``im.up.msg``, keyed by its conversation like the messages it revokes,
and is handled *inside the msg group* — the timeline's single writer: `revoke` is registered
in the msg group's command table (`consumers.msg_commands`, ``ordered=True`` so the messages
before it in the batch are stored first) and runs a `Revoker`. Rules
(docs/protocol-extensions.md, "Revoke"):

- only the message's sender may revoke it (FORBIDDEN otherwise), within `RevokeSettings.
  window_s` of its creation (EXPIRED after); a body naming another user is FORBIDDEN;
- the message is named by its conversation (session type + session id, as the sender
  addressed it) and ``server_msg_id``; a non-empty ``client_msg_id`` must match (else
  INVALID_PARAMETER); an unknown one is NOT_FOUND;
- `MessageStore.mark_revoked` keeps the first revocation: revoking again (or a replayed
  record) answers OK and notifies again with the first revocation's time;
- the requester gets RevokeRsp with the result code; on success every member of the
  conversation — both users of a single chat, every member of a group — gets RevokeNotify on
  each of their devices but the requesting connection. ``session_id`` in the notify is the
  conversation as the receiver sees it (the revoker for the peer of a single chat).

History, by-id, sync and the session list then show the message as revoked
(`consumers.views`).

Each revoke (a repeated one too, with the same event id) also publishes a
``message.revoked`` business event on ``biz.events.message`` in the same effects
(`schemas.bizevents`).

A RevokeReq without an origin is an *admin* revoke from the server API
(``POST /v1/messages/{conversation}/{seq}/revoke``): no sender or window check, the
conversation is named by ``user_id`` + ``session_id`` (a single chat's two users) or the
group id, ``revoked_by`` is 0, nobody is answered, and every member's devices are notified
(``operator_user_id`` 0). A message that does not exist is logged and skipped: the API
checked it exists, so that is a bug, not a reason to block the partition.
"""

from __future__ import annotations

import logging

import msgspec

from consumers.effects import Effects
from consumers.msg_commands import MsgContext, msg_command
from consumers.requests import Refusal, Request, conversation_of
from schemas.bizevents import MessageRevoked, encode_event, event_id
from schemas.codes import ExtResultCode, SessionType
from schemas.commands import Cmd
from schemas.envelope import Envelope
from schemas.ids import ConnId, GateId, GroupId, UserId
from schemas.logs import Revocation
from schemas.pb.coffeebus import ext_pb2
from store.clock import Clock, SystemClock
from store.groups import GroupStore
from store.messages import MessageStore, StoredMessage
from store.routes import RouteStore

__all__ = ["RevokeSettings", "Revoker", "revoke"]

log = logging.getLogger(__name__)


class RevokeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How long after sending a message its sender may revoke it."""

    window_s: float = 120.0


class Revoker:
    """Handles RevokeReq for the msg group (which owns the conversation's timeline)."""

    def __init__(
        self,
        *,
        messages: MessageStore,
        groups: GroupStore,
        routes: RouteStore,
        settings: RevokeSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._messages = messages
        self._groups = groups
        self._routes = routes
        self.settings = settings or RevokeSettings()
        self._clock = clock or SystemClock()

    async def handle(self, envelope: Envelope, req: ext_pb2.RevokeReq, effects: Effects) -> None:
        """Revoke, answer the requester, notify the conversation's devices (into `effects`)."""
        origin = envelope.origin
        if origin is None:
            await self._admin(envelope, req, effects)
            return
        rsp = ext_pb2.RevokeRsp(
            user_id=origin.user_id,
            session_type=req.session_type,
            session_id=req.session_id,
            server_msg_id=req.server_msg_id,
        )
        try:
            msg = await self._revoke(origin.user_id, req)
        except Refusal as refusal:
            log.info("refused revoke by %d: %s", origin.user_id, refusal.text)
            rsp.result_code = ext_pb2.ExtResultCode.ValueType(refusal.code)
            effects.reply(origin, Cmd.REVOKE_RSP, rsp, envelope.trace_id)
            return
        rsp.result_code = ext_pb2.ExtResultCode.ValueType(ExtResultCode.OK)
        effects.reply(origin, Cmd.REVOKE_RSP, rsp, envelope.trace_id)
        await self._notify(msg, req, effects, envelope)

    async def _admin(self, envelope: Envelope, req: ext_pb2.RevokeReq, effects: Effects) -> None:
        """An admin revoke from the server API (module docstring)."""
        try:
            conversation = conversation_of(UserId(req.user_id), req.session_type, req.session_id)
        except Refusal as refusal:
            log.warning("admin revoke with an invalid conversation: %s", refusal.text)
            return
        now = self._clock.now_ms()
        msg = await self._messages.mark_revoked(
            conversation, req.server_msg_id, by=UserId(0), at_ms=now
        )
        if msg is None:
            log.warning("admin revoke of %s/%d: no such message", conversation, req.server_msg_id)
            return
        if int(req.session_type) == SessionType.GROUP:
            members = await self._groups.members(GroupId(req.session_id))
            views = {UserId(m): req.session_id for m in members}
        else:
            a, b = UserId(req.user_id), UserId(req.session_id)
            views = {a: b, b: a}
        await self._push(msg, req, effects, envelope, views, operator=UserId(0))

    async def _revoke(self, user_id: int, req: ext_pb2.RevokeReq) -> StoredMessage:
        user = acting_user_id(user_id, req)
        conversation = conversation_of(user, req.session_type, req.session_id)
        found = await self._messages.get_by_seqs(conversation, [req.server_msg_id])
        if not found:
            raise Refusal(ExtResultCode.NOT_FOUND, f"no message {req.server_msg_id}")
        msg = found[0]
        if req.client_msg_id and req.client_msg_id != msg.client_msg_id:
            raise Refusal(ExtResultCode.INVALID_PARAMETER, "client_msg_id does not match")
        if msg.from_user_id != user:
            raise Refusal(ExtResultCode.FORBIDDEN, "only the sender may revoke a message")
        if msg.revoked:
            return msg
        now = self._clock.now_ms()
        if now - msg.created_ms > self.settings.window_s * 1000:
            raise Refusal(
                ExtResultCode.EXPIRED, f"messages can be revoked for {self.settings.window_s:g} s"
            )
        revoked = await self._messages.mark_revoked(conversation, msg.seq, by=user, at_ms=now)
        if revoked is None:  # cannot happen: the message was just read by its only writer
            raise Refusal(ExtResultCode.NOT_FOUND, f"no message {req.server_msg_id}")
        return revoked

    async def _notify(
        self, msg: StoredMessage, req: ext_pb2.RevokeReq, effects: Effects, envelope: Envelope
    ) -> None:
        origin = envelope.origin
        assert origin is not None
        revoker = UserId(origin.user_id)
        if int(req.session_type) == SessionType.GROUP:
            members = await self._groups.members(GroupId(req.session_id))
            # The group's view is the same for everyone.
            views = {UserId(m): req.session_id for m in members}
            views[revoker] = req.session_id
        else:
            peer = UserId(req.session_id)
            views = {revoker: peer, peer: revoker}
        await self._push(
            msg,
            req,
            effects,
            envelope,
            views,
            operator=revoker,
            skip=(origin.gate_id, origin.conn_id),
        )

    async def _push(
        self,
        msg: StoredMessage,
        req: ext_pb2.RevokeReq,
        effects: Effects,
        envelope: Envelope,
        views: dict[UserId, int],
        *,
        operator: UserId,
        skip: tuple[GateId, ConnId] | None = None,
    ) -> None:
        """The revocation in the conversation's log, RevokeNotify to every device of `views`
        (user → the session id they see), and the ``message.revoked`` business event (again
        on a repeated revoke: same id, and logged again, which the projection ignores)."""
        effects.log_revocation(
            Revocation(
                conversation=msg.conversation,
                seq=msg.seq,
                by=UserId(msg.revoked_by),
                at_ms=msg.revoked_ms,
            )
        )
        event = MessageRevoked(
            id=event_id(MessageRevoked, msg.conversation, msg.seq),
            ts=msg.revoked_ms,
            trace_id=envelope.trace_id,
            conversation=msg.conversation,
            seq=msg.seq,
            client_msg_id=msg.client_msg_id,
            from_user_id=msg.from_user_id,
            revoked_by=operator,
        )
        effects.publish(event.topic, encode_event(event), key=event.key())
        routes = await self._routes.get_many(views)
        for user, session_id in views.items():
            notify = ext_pb2.RevokeNotify(
                operator_user_id=operator,
                session_type=req.session_type,
                session_id=session_id,
                server_msg_id=msg.seq,
                client_msg_id=msg.client_msg_id,
                revoke_time=msg.revoked_ms // 1000,
            )
            effects.push(
                user,
                routes.get(user, []),
                Cmd.REVOKE_NOTIFY,
                notify.SerializeToString(),
                envelope.trace_id,
                skip=skip,
            )


def acting_user_id(user_id: int, req: ext_pb2.RevokeReq) -> UserId:
    """The authenticated user, unless the body names another one (FORBIDDEN)."""
    if req.user_id not in (0, user_id):
        log.warning("refused RevokeReq: user %d claimed to be user %d", user_id, req.user_id)
        raise Refusal(ExtResultCode.FORBIDDEN, "user_id is not the logged-in user")
    return UserId(user_id)


@msg_command(Cmd.REVOKE_REQ, ordered=True)
async def revoke(ctx: MsgContext, request: Request, effects: Effects) -> None:
    """The msg group's entry for RevokeReq (the window from ``[messaging]``)."""
    assert isinstance(request.message, ext_pb2.RevokeReq)
    revoker = Revoker(
        messages=ctx.messages,
        groups=ctx.groups,
        routes=ctx.routes,
        settings=RevokeSettings(window_s=ctx.revoke_window_s),
    )
    await revoker.handle(request.envelope, request.message, effects)
