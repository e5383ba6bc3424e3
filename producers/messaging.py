"""Messaging endpoints: business push (s2c), system messages and admin revoke.

Nothing here writes a timeline: every change is published to the topic of the consumer
group that owns it (DESIGN.md, invariant 2) and the API answers once the record is durable
on the bus. What the API can check synchronously it checks first — users and groups exist,
sizes are within the msg group's limits — so that a record it publishes is one the consumer
accepts (a system record the msg group refuses would be dead-lettered, not answered).

- ``POST /v1/push`` → ``im.s2c``: one Envelope (origin None, S2CPush 0x080B) per recipient,
  keyed by the recipient; the fanout group pushes it to online devices (`consumers.s2c`).
  With ``store: true``: one system MsgData per recipient on ``im.up.msg`` instead (below).
- ``POST /v1/messages`` → ``im.up.msg``: a MsgData with origin None, keyed by the
  conversation; the msg group checks, sequences, stores and fans it out like a client send
  (nobody is acked; `consumers.msg`).
- ``POST /v1/messages/{conversation}/{seq}/revoke`` → ``im.up.msg``: a RevokeReq with origin
  None, the admin revoke of `consumers.revoke` (no sender or time-window check).
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from litestar import post
from litestar.exceptions import ValidationException
from litestar.params import JSONBody, Parameter

from bus.base import Outgoing
from producers.deps import Pipeline, PipelineDep, StoresDep
from producers.models import (
    Accepted,
    MessageAccepted,
    MessageBody,
    PushBody,
    PushResult,
)
from producers.problems import PROBLEMS, ApiProblem
from schemas.codes import MsgType, SessionType
from schemas.commands import Cmd, UplinkTopic
from schemas.envelope import encode_envelope, make_envelope, now_ms
from schemas.ids import (
    ConversationId,
    GroupId,
    TraceId,
    UserId,
    conversation_id,
    new_trace_id,
    parse_conversation_id,
)
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, message_pb2
from store.errors import UnknownUserError
from store.users import UserStore

__all__ = ["admin_revoke", "push", "send_message"]

logger = logging.getLogger(__name__)

S2C_TOPIC = "im.s2c"
#: client_msg_id of a stored push: the push id, so a repeated push stores once
STORED_PUSH_PREFIX = "s2c-"


async def require_users(users: UserStore, user_ids: list[UserId]) -> None:
    """`UnknownUserError` (404) naming the ids among `user_ids` that do not exist."""
    wanted = list(dict.fromkeys(user_ids))
    found = {user.user_id for user in await users.list_users(wanted)}
    missing = [u for u in wanted if u not in found]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" …" if len(missing) > 20 else "")
        raise UnknownUserError(f"unknown user(s): {shown}")


def _check_size(pipeline: Pipeline, data: bytes) -> None:
    if len(data) > pipeline.max_msg_data_bytes:
        raise ValidationException(
            f"msg_data is {len(data)} bytes; the limit is {pipeline.max_msg_data_bytes}"
        )


def _msg_record(
    pipeline: Pipeline,
    *,
    sender: UserId,
    session_type: SessionType,
    to_session_id: int,
    client_msg_id: str,
    msg_type: int,
    msg_data: bytes,
    trace: TraceId,
) -> tuple[ConversationId, Outgoing]:
    """A system MsgData (origin None) for ``im.up.msg``, keyed by its conversation."""
    conversation = conversation_id(session_type, sender, to_session_id)
    msg = message_pb2.MsgData(
        from_user_id=sender,
        to_session_id=to_session_id,
        client_msg_id=client_msg_id,
        create_time=now_ms() // 1000,
        msg_type=base_pb2.MsgType.ValueType(msg_type),
        session_type=base_pb2.SessionType.ValueType(session_type),
        msg_data=msg_data,
    )
    envelope = make_envelope(Cmd.MSG_DATA, msg.SerializeToString(), trace_id=trace)
    topic = pipeline.topology.topic(UplinkTopic.MSG).name
    return conversation, Outgoing(topic, encode_envelope(envelope), key=conversation.encode())


@post(
    "/v1/push",
    summary="Push (s2c) to users",
    description=(
        "Online-only by default: an S2CPush (0x080B) to every online device of each "
        "recipient, nothing kept (offline recipients get nothing). `store: true` sends a "
        "stored system message from `from_user_id` into the single chat with each recipient "
        "instead (MsgData, kept for pull and sync). The result counts the online devices the "
        "push was addressed to when accepted; delivery is asynchronous."
    ),
    tags=["push"],
    responses=PROBLEMS,
    status_code=200,
)
async def push(data: JSONBody[PushBody], stores: StoresDep, pipeline: PipelineDep) -> PushResult:
    """``POST /v1/push``."""
    recipients = list(dict.fromkeys(UserId(u) for u in data.to_user_ids))
    payload = data.msg_data.encode()
    _check_size(pipeline, payload)
    sender: UserId | None = None
    if data.store:
        if data.from_user_id is None:
            raise ValidationException("a stored push (store: true) needs from_user_id")
        if data.msg_type not in MsgType.__members__.values():
            raise ValidationException("a stored push's msg_type must be a MsgType (0-10)")
        sender = UserId(data.from_user_id)
        if sender in recipients:
            raise ValidationException("from_user_id cannot be one of the recipients")
    await require_users(stores.users, recipients if sender is None else [sender, *recipients])
    push_id = data.push_id or uuid.uuid4().hex
    routes = await stores.routes.get_many(recipients)
    trace = new_trace_id()
    records: list[Outgoing] = []
    if sender is not None:
        for user in recipients:
            _, record = _msg_record(
                pipeline,
                sender=sender,
                session_type=SessionType.SINGLE,
                to_session_id=user,
                client_msg_id=STORED_PUSH_PREFIX + push_id,
                msg_type=data.msg_type,
                msg_data=payload,
                trace=trace,
            )
            records.append(record)
    else:
        topic = pipeline.topology.topic(S2C_TOPIC).name
        created = now_ms()
        for user in recipients:
            body = ext_pb2.S2CPush(
                push_id=push_id,
                to_user_id=user,
                msg_type=data.msg_type,
                msg_data=payload,
                content_type=data.content_type,
                channel=data.channel,
                create_time=created // 1000,
            ).SerializeToString()
            envelope = make_envelope(Cmd.S2C_PUSH, body, trace_id=trace, ts_ms=created)
            records.append(Outgoing(topic, encode_envelope(envelope), key=b"%d" % user))
    await pipeline.bus.publish_batch(records)
    logger.info(
        "push %s to %d user(s) (%s), trace %s",
        push_id,
        len(recipients),
        "stored" if sender is not None else "online only",
        trace,
    )
    return PushResult(
        push_id=push_id,
        recipients=len(recipients),
        online_users=sum(1 for u in recipients if routes.get(u)),
        devices_addressed=sum(len(routes.get(u, ())) for u in recipients),
        stored=sender is not None,
    )


@post(
    "/v1/messages",
    summary="Send a system message",
    description=(
        "Sends as `from_user_id` (a user or a robot account) into the single chat with user "
        "`to_session_id` or into group `to_session_id`, through the same pipeline as client "
        "sends: sequenced, stored, fanned out to every recipient's inbox and online devices. "
        "Answers 202 once the message is on the bus; resending a `client_msg_id` stores it "
        "once. Group membership and mute are not checked (a system sender may post)."
    ),
    tags=["messages"],
    responses=PROBLEMS,
    status_code=202,
)
async def send_message(
    data: JSONBody[MessageBody], stores: StoresDep, pipeline: PipelineDep
) -> MessageAccepted:
    """``POST /v1/messages``."""
    payload = data.msg_data.encode()
    _check_size(pipeline, payload)
    sender = UserId(data.from_user_id)
    if data.session_type == "single":
        if data.to_session_id == sender:
            raise ValidationException("a single chat needs two different users")
        await require_users(stores.users, [sender, UserId(data.to_session_id)])
        session_type = SessionType.SINGLE
    else:
        await require_users(stores.users, [sender])
        group = await pipeline.groups.get(GroupId(data.to_session_id))
        if group is None or group.disbanded:
            raise ApiProblem(404, "unknown-group", f"no group {data.to_session_id}")
        session_type = SessionType.GROUP
    client_msg_id = data.client_msg_id or str(uuid.uuid4())
    conversation, record = _msg_record(
        pipeline,
        sender=sender,
        session_type=session_type,
        to_session_id=data.to_session_id,
        client_msg_id=client_msg_id,
        msg_type=data.msg_type,
        msg_data=payload,
        trace=new_trace_id(),
    )
    await pipeline.bus.publish_batch([record])
    return MessageAccepted(client_msg_id=client_msg_id, conversation=conversation)


ConversationPath = Annotated[
    str,
    Parameter(description='a conversation id: "s:<low user id>:<high user id>" or "g:<group id>"'),
]
SeqPath = Annotated[int, Parameter(ge=1, le=2**63 - 1, description="the message's server_msg_id")]


@post(
    "/v1/messages/{conversation:str}/{seq:int}/revoke",
    summary="Revoke a message (admin)",
    description=(
        "Revokes the message whatever its age and sender; every member's devices get "
        "RevokeNotify (operator_user_id 0) and history shows a tip. Idempotent. 202 once the "
        "request is on the bus."
    ),
    tags=["messages"],
    responses=PROBLEMS,
    status_code=202,
)
async def admin_revoke(
    conversation: ConversationPath, seq: SeqPath, pipeline: PipelineDep
) -> Accepted:
    """``POST /v1/messages/{conversation}/{seq}/revoke``."""
    try:
        session_type, ids = parse_conversation_id(conversation)
    except ValueError as exc:
        raise ValidationException(str(exc)) from None
    if max(ids) > 2**63 - 1:
        raise ValidationException("ids above 2**63-1 are not stored")
    conv = ConversationId(conversation)
    found = await pipeline.messages.get_by_seqs(conv, [seq])
    if not found:
        raise ApiProblem(404, "unknown-message", f"no message {seq} in {conversation}")
    if session_type == SessionType.GROUP:
        user_id, session_id = 0, ids[0]
    else:
        user_id, session_id = ids
    req = ext_pb2.RevokeReq(
        user_id=user_id,
        session_type=base_pb2.SessionType.ValueType(session_type),
        session_id=session_id,
        server_msg_id=seq,
        client_msg_id=found[0].client_msg_id,
    )
    trace = new_trace_id()
    envelope = make_envelope(Cmd.REVOKE_REQ, req.SerializeToString(), trace_id=trace)
    topic = pipeline.topology.topic(UplinkTopic.MSG).name
    await pipeline.bus.publish_batch(
        [Outgoing(topic, encode_envelope(envelope), key=conversation.encode())]
    )
    logger.info("admin revoke of %s/%d, trace %s", conversation, seq, trace)
    return Accepted(request_id=trace)
