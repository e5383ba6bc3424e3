"""TypingNotify (0x0808) on ``im.up.msg``: "the user is typing", pushed and never stored.

A client sends it into a conversation; the msg group pushes it, with ``from_user_id`` set to
the authenticated sender, to the peer's devices (single chat) or to every other member's
(group; only a member may). It is best effort: no response, no ack, no inbox entry, and a
refused one (not a member, unknown group) is dropped with a debug log — answering every
keystroke's refusal would cost more than it tells. A body ``from_user_id`` naming another
user is dropped with a warning (`consumers.requests.acting_user`), like every forged id.
"""

from __future__ import annotations

import logging

from consumers.effects import Effects
from consumers.msg_commands import MsgContext, msg_command
from consumers.requests import Refusal, Request, acting_user
from schemas.codes import SessionType
from schemas.commands import Cmd
from schemas.ids import GroupId, UserId
from schemas.pb.coffeebus import ext_pb2

__all__ = ["typing_notify"]

log = logging.getLogger(__name__)


@msg_command(Cmd.TYPING_NOTIFY, ordered=False)
async def typing_notify(ctx: MsgContext, request: Request, effects: Effects) -> None:
    """Push the notify to the other side of the conversation."""
    origin = request.origin
    msg = request.message
    assert isinstance(msg, ext_pb2.TypingNotify)
    if origin is None or msg.to_session_id <= 0:
        return
    try:
        sender = acting_user(origin, msg.from_user_id, request.cmd)  # logs a forged sender
    except Refusal:
        return  # no response to a typing notify: dropped
    session_type = int(msg.session_type)
    if session_type == SessionType.SINGLE:
        recipients = [UserId(msg.to_session_id)]
    elif session_type == SessionType.GROUP:
        group_id = GroupId(msg.to_session_id)
        group = await ctx.groups.get(group_id)
        members = await ctx.groups.members(group_id) if group is not None else []
        if group is None or group.disbanded or sender not in members:
            log.debug("typing of user %d in group %d dropped: not a member", sender, group_id)
            return
        recipients = [m for m in members if m != sender]
    else:
        return
    body = ext_pb2.TypingNotify(
        from_user_id=sender,
        session_type=msg.session_type,
        to_session_id=msg.to_session_id,
        state=msg.state,
    ).SerializeToString()
    routes = await ctx.routes.get_many(recipients)
    for user in recipients:
        effects.push(user, routes.get(user, ()), Cmd.TYPING_NOTIFY, body, request.envelope.trace_id)
