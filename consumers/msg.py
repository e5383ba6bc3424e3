"""The ``msg`` group: sequence, store and acknowledge messages, then hand them to fan-out.

``im.up.msg`` is keyed by conversation, so each conversation's timeline has one writer at a
time: the member owning its partition, which allocates the conversation seq
(= ``server_msg_id``) in memory (`store.seq.SeqAllocator`; sections it may no longer own are
forgotten when partitions are assigned or revoked). Per batch (one partition, in order):

1. decode every record (an undecodable one is poison: `Reject` → DLQ) and dispatch it:
   MsgData here, the other commands through `consumers.msg_commands`;
2. check each send — the sender is the envelope's origin, never the body's
   ``from_user_id`` (0 or the sender; another user's id is FORBIDDEN); session type,
   ids, client_msg_id (1-64 characters) and the msg_data size limit; a c2c receiver must
   exist (one batched user lookup, briefly cached); a group must exist, not be disbanded,
   have the sender as a member, and not be muted (mute model ALL) unless the sender owns
   it. A refused send is answered with an ErrorRsp (0x0802) *and* a MsgDataAck with
   ``res_code`` UNKNOWN (docs/protocol-extensions.md);
3. allocate seqs in record order and write the run of sends to the conversations' hot state
   (`store.redis.messages` on the real services: one script per conversation, one round
   trip): a client_msg_id sent within the resend window stores nothing and yields the
   original message (its freshly allocated seq is a gap);
4. the effects, logged first (`consumers.effects`): every message of the run — duplicates
   with their original seq and time — appended to ``im.log.msg``, the log of record, and
   only once every in-sync replica has it, the sender's MsgDataAck with the original
   ``server_msg_id``, the fan-out for ``im.fanout`` (one record per ``im.fanout`` partition
   for the whole run; recipients — c2c: the receiver and the sender, whose inbox holds its
   own messages for multi-device sync; group: every member) and a ``message.stored``
   business event on ``biz.events.message`` (`schemas.bizevents`; keyed by conversation,
   so in seq order; a duplicate emits it again with the same id);
5. the runner commits after.

Duplicates are logged and fanned out again on purpose: if a process died after its hot
write and before its log append or its fan-out, the client's resend (or the replay of the
record) is what completes it. The fanout group appends and pushes only inbox entries that
are new, so the receivers get nothing twice.

System messages (``origin`` None — group notifications from the group handler, system sends
from the API) are trusted: their ``from_user_id`` is the body's, they skip the membership and
mute checks, nobody is acked, and a group notification also reaches the users it names
(`consumers.notifications.extra_recipients`: a kicked member, a leaver, the members of a
dismissed group).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from bus.base import Record, Reject, TopicPartition
from bus.partitioner import partition_for_key
from consumers.effects import Effects
from consumers.msg_commands import MsgCommand, MsgContext, load_command_modules, registered
from consumers.notifications import extra_recipients
from consumers.registry import consumer_group
from consumers.requests import Refusal, Request, acting_user, decode_request
from schemas.bizevents import MessageStored, encode_event, event_id
from schemas.codes import ExtResultCode, ResCode, SessionType
from schemas.commands import Cmd
from schemas.envelope import Origin, now_ms
from schemas.events import (
    Fanout,
    FanoutBatch,
    FanoutMessage,
    encode_fanout,
    encode_record,
    recipient_key,
)
from schemas.ids import ConversationId, GroupId, TraceId, UserId, conversation_id
from schemas.pb.coffeechat import base_pb2, message_pb2
from store.groups import Group
from store.messages import InsertResult, StoredMessage
from store.seq import SeqAllocator

if TYPE_CHECKING:
    from consumers.runtime import Runtime

__all__ = ["MAX_CLIENT_MSG_ID", "MsgHandler", "MsgLimits", "build"]

log = logging.getLogger(__name__)

MSG_TOPIC = "im.up.msg"
FANOUT_TOPIC = "im.fanout"
#: client_msg_id is a UUID (36 characters) in CoffeeChat clients; leave room, bound the key.
MAX_CLIENT_MSG_ID = 64


class MsgLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Limits of the msg group (from ``[messaging]`` settings)."""

    max_msg_data_bytes: int = 64 * 1024
    #: how long a user lookup (exists, nick name) is trusted
    lookup_cache_s: float = 5.0


#: a group (None if unknown) and its members, as read for one batch
_GroupView = tuple[Group | None, list[UserId]]


@dataclass(slots=True)
class _Send:
    """One MsgData being handled."""

    request: Request
    msg: message_pb2.MsgData
    sender: UserId
    conversation: ConversationId
    group_id: GroupId | None
    recipients: tuple[UserId, ...] = ()


class _UserCache:
    """Nick names of users known to exist, trusted for `ttl` seconds (absent users are
    never cached: a user imported a moment ago can be written to at once)."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._known: dict[UserId, tuple[float, str]] = {}

    def get(self, user_id: UserId, now: float) -> str | None:
        hit = self._known.get(user_id)
        if hit is None or hit[0] < now:
            return None
        return hit[1]

    def put(self, user_id: UserId, nick: str, now: float) -> None:
        if len(self._known) > 100_000:
            self._known.clear()  # crude bound; the cache refills in one batch
        self._known[user_id] = (now + self._ttl, nick)


class MsgHandler:
    """Handles batches of ``im.up.msg`` (see the module docstring)."""

    #: A batch costs a script per conversation and a log append whatever its size: a
    #: sender's burst is taken as one (`[kafka] gather_ms`).
    gather = True

    def __init__(
        self, ctx: MsgContext, *, limits: MsgLimits | None = None, include_msg_data: bool = True
    ) -> None:
        load_command_modules()
        self._ctx = ctx
        self.limits = limits or MsgLimits()
        #: whether message.stored events carry msg_data (``[biz] include_msg_data``)
        self.include_msg_data = include_msg_data
        self._users = _UserCache(self.limits.lookup_cache_s)
        self._fanout_partitions: int | None = None

    @property
    def seqs(self) -> SeqAllocator:
        """The conversation seq allocator of this member."""
        return self._ctx.seqs

    # -- GroupHandler ----------------------------------------------------------------------

    async def handle(self, records: Sequence[Record]) -> None:
        """Handle one partition's batch (module docstring)."""
        effects = Effects(self._ctx.topology)
        sends: list[Request] = []
        for record in records:
            request = decode_request(record)
            if request.cmd == Cmd.MSG_DATA:
                sends.append(request)
                continue
            command = registered(request.cmd)
            if command is not None and command.ordered and sends:
                await self._send_all(sends, effects)
                sends = []
            await self._dispatch(request, command, effects)
        if sends:
            await self._send_all(sends, effects)
        if len(effects):
            await effects.flush(self._ctx.bus)

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """Forget sections of conversations in `partitions`: another member may have
        allocated from them since this one last owned them."""
        await self._forget(partitions)

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Forget sections of conversations this member no longer owns."""
        await self._forget(partitions)

    async def close(self) -> None:
        """Nothing is buffered."""

    async def _forget(self, partitions: frozenset[TopicPartition]) -> None:
        mine = [tp.partition for tp in partitions if tp.topic == MSG_TOPIC]
        if mine:
            # im.up.msg is keyed by the conversation id, which is the timeline's name.
            count = await self._ctx.bus.partitions_for(MSG_TOPIC)
            self.seqs.forget_partitions(mine, count, key_of=str.encode)

    # -- other commands ----------------------------------------------------------------------

    async def _dispatch(
        self, request: Request, command: MsgCommand | None, effects: Effects
    ) -> None:
        origin = request.origin
        trace = request.envelope.trace_id
        try:
            if command is None:
                raise Refusal(ExtResultCode.UNKNOWN_COMMAND, "not served on im.up.msg yet")
            await command.handler(self._ctx, request, effects)
        except Refusal as refusal:
            if origin is None:
                raise Reject(f"system command 0x{request.cmd:04X}: {refusal.text}") from None
            effects.error(origin, request.cmd, refusal.code, refusal.text, trace)

    # -- MsgData -----------------------------------------------------------------------------

    async def _send_all(self, requests: Sequence[Request], effects: Effects) -> None:
        sends: list[_Send] = []
        for request in requests:
            try:
                sends.append(self._parse(request))
            except Refusal as refusal:
                self._refuse(request, refusal, effects)
        if not sends:
            return
        nicks = await self._lookup_users(
            {s.sender for s in sends}
            | {UserId(s.msg.to_session_id) for s in sends if s.group_id is None}
        )
        groups = await self._lookup_groups({s.group_id for s in sends if s.group_id is not None})
        accepted: list[_Send] = []
        for send in sends:
            try:
                send.recipients = self._authorize(send, nicks, groups)
            except Refusal as refusal:
                self._refuse(send.request, refusal, effects)
                continue
            accepted.append(send)
        if not accepted:
            return
        stored = await self._store(accepted)
        await self._effects(accepted, stored, nicks, effects)

    def _parse(self, request: Request) -> _Send:
        msg = request.message
        assert isinstance(msg, message_pb2.MsgData)
        origin = request.origin
        if origin is not None:
            # The sender is the connection's user. A body naming someone else is refused,
            # not rewritten: a client claiming another identity is hostile or broken, and
            # storing its message under its real name would hide that.
            sender = acting_user(origin, msg.from_user_id, request.cmd)
        else:
            sender = UserId(msg.from_user_id)
        session_type = int(msg.session_type)
        if sender <= 0:
            raise Refusal(ExtResultCode.INVALID_PARAMETER, "a system message needs from_user_id")
        if session_type not in (SessionType.SINGLE, SessionType.GROUP):
            raise Refusal(ExtResultCode.INVALID_PARAMETER, f"invalid session_type {session_type}")
        if msg.to_session_id <= 0:
            raise Refusal(ExtResultCode.INVALID_PARAMETER, "to_session_id must be set")
        if not 0 < len(msg.client_msg_id) <= MAX_CLIENT_MSG_ID:
            raise Refusal(
                ExtResultCode.INVALID_PARAMETER,
                f"client_msg_id must be 1-{MAX_CLIENT_MSG_ID} characters",
            )
        if len(msg.msg_data) > self.limits.max_msg_data_bytes:
            raise Refusal(
                ExtResultCode.TOO_LARGE,
                f"msg_data is {len(msg.msg_data)} bytes; the limit is "
                f"{self.limits.max_msg_data_bytes}",
            )
        try:
            conversation = conversation_id(session_type, sender, msg.to_session_id)
        except ValueError as exc:
            raise Refusal(ExtResultCode.INVALID_PARAMETER, str(exc)) from None
        group_id = GroupId(msg.to_session_id) if session_type == SessionType.GROUP else None
        return _Send(request, msg, sender, conversation, group_id)

    def _authorize(
        self,
        send: _Send,
        nicks: dict[UserId, str],
        groups: dict[GroupId, _GroupView],
    ) -> tuple[UserId, ...]:
        """The recipients of an allowed send; `Refusal` otherwise."""
        system = send.request.origin is None
        if send.group_id is None:
            peer = UserId(send.msg.to_session_id)
            if peer not in nicks:
                raise Refusal(ExtResultCode.NOT_FOUND, f"user {peer} does not exist")
            return tuple(dict.fromkeys((peer, send.sender)))
        group, members = groups[send.group_id]
        if system:
            extra = extra_recipients(send.msg)
            return tuple(dict.fromkeys((*members, *extra, send.sender)))
        if group is None or group.disbanded:
            raise Refusal(ExtResultCode.NOT_FOUND, f"group {send.group_id} does not exist")
        if send.sender not in members:
            raise Refusal(ExtResultCode.FORBIDDEN, f"not a member of group {send.group_id}")
        if group.muted and send.sender != group.owner_id:
            raise Refusal(ExtResultCode.FORBIDDEN, f"group {send.group_id} is muted")
        return tuple(members)

    def _refuse(self, request: Request, refusal: Refusal, effects: Effects) -> None:
        origin = request.origin
        if origin is None:
            # A system producer sent something invalid: a bug to look at, not to answer.
            raise Reject(f"system MsgData refused: {refusal.text}")
        msg = request.message
        assert isinstance(msg, message_pb2.MsgData)
        trace = request.envelope.trace_id
        log.info(
            "refused MsgData from user %d (gate %s): %s", origin.user_id, origin.gate_id, refusal
        )
        # An ErrorRsp for clients that know the extension, then a MsgDataAck that is not OK
        # for CoffeeChat clients that do not (docs/protocol-extensions.md).
        effects.error(origin, Cmd.MSG_DATA, refusal.code, refusal.text, trace)
        effects.reply(
            origin,
            Cmd.MSG_DATA_ACK,
            message_pb2.MsgDataAck(
                from_user_id=origin.user_id,
                to_session_id=msg.to_session_id,
                client_msg_id=msg.client_msg_id,
                res_code=base_pb2.ResCode.ValueType(ResCode.UNKNOWN),
                session_type=msg.session_type,
            ),
            trace,
        )

    async def _lookup_users(self, user_ids: Iterable[UserId]) -> dict[UserId, str]:
        """Nick names of the users among `user_ids` that exist (one batched lookup)."""
        now = time.monotonic()
        found: dict[UserId, str] = {}
        missing: list[UserId] = []
        for user_id in user_ids:
            nick = self._users.get(user_id, now)
            if nick is None:
                missing.append(user_id)
            else:
                found[user_id] = nick
        if missing:
            for user in await self._ctx.users.list_users(missing):
                found[user.user_id] = user.nick_name
                self._users.put(user.user_id, user.nick_name, now)
        return found

    async def _lookup_groups(self, group_ids: Iterable[GroupId]) -> dict[GroupId, _GroupView]:
        # Read fresh per batch (the group store's Redis cache is versioned and updated on
        # every change): a member invited a moment ago must get the next message.
        groups = self._ctx.groups

        async def one(group_id: GroupId) -> _GroupView:
            group = await groups.get(group_id)
            return group, (await groups.members(group_id) if group is not None else [])

        ids = list(group_ids)
        found = await asyncio.gather(*(one(group_id) for group_id in ids))
        return dict(zip(ids, found, strict=True))

    async def _store(self, sends: Sequence[_Send]) -> list[InsertResult]:
        created = now_ms()
        # One allocation per conversation, all concurrently (a section reservation costs a
        # few store round trips); seqs are handed out in record order within each.
        counts = Counter(send.conversation for send in sends)
        ranges = await self.seqs.allocate_many(counts)
        seqs = {c: iter(r) for c, r in ranges.items()}
        messages: list[StoredMessage] = []
        for send in sends:
            msg = send.msg
            origin = send.request.origin
            messages.append(
                StoredMessage(
                    conversation=send.conversation,
                    seq=next(seqs[send.conversation]),
                    client_msg_id=msg.client_msg_id,
                    from_user_id=send.sender,
                    to_session_id=msg.to_session_id,
                    session_type=int(msg.session_type),
                    msg_type=int(msg.msg_type),
                    msg_data=msg.msg_data,
                    created_ms=created,
                    sender_client_type=origin.client_type if origin is not None else 0,
                )
            )
        return await self._ctx.messages.insert_many(messages)

    async def _effects(
        self,
        sends: Sequence[_Send],
        stored: Sequence[InsertResult],
        nicks: dict[UserId, str],
        effects: Effects,
    ) -> None:
        if self._fanout_partitions is None:
            self._fanout_partitions = await self._ctx.bus.partitions_for(FANOUT_TOPIC)
        partitions = self._fanout_partitions
        fanouts: dict[int, list[Fanout]] = defaultdict(list)
        for send, result in zip(sends, stored, strict=True):
            message = result.message
            origin = send.request.origin
            trace = send.request.envelope.trace_id
            if result.duplicate:
                log.debug(
                    "resent %s of %s: seq %d",
                    message.client_msg_id,
                    message.conversation,
                    message.seq,
                )
            if origin is not None:
                effects.reply(origin, Cmd.MSG_DATA_ACK, _ack(origin, message), trace)
            body = _fanout_message(message, nicks.get(message.from_user_id, ""))
            # Logged again when it is a duplicate: a process that died between the hot
            # write and the log append left it only in Redis (the projection dedupes).
            effects.log_message(body)
            event = _stored_event(message, trace, with_data=self.include_msg_data)
            effects.publish(event.topic, encode_event(event), key=event.key())
            by_partition: dict[int, list[UserId]] = defaultdict(list)
            for user in send.recipients:
                by_partition[partition_for_key(recipient_key(user), partitions)].append(user)
            ts = now_ms()
            for partition, recipients in by_partition.items():
                fanouts[partition].append(
                    Fanout(
                        message=body,
                        recipients=tuple(recipients),
                        trace_id=trace,
                        ts_ms=ts,
                        skip_gate=origin.gate_id if origin is not None else None,
                        skip_conn=origin.conn_id if origin is not None else None,
                    )
                )
        # One record per fan-out partition for the whole run of sends (a batch record when
        # it holds more than one message): the fanout group reads them in order.
        for batch in fanouts.values():
            value = (
                encode_fanout(batch[0])
                if len(batch) == 1
                else encode_record(FanoutBatch(tuple(batch)))
            )
            effects.publish(FANOUT_TOPIC, value, key=recipient_key(batch[0].recipients[0]))


def _ack(origin: Origin, message: StoredMessage) -> message_pb2.MsgDataAck:
    return message_pb2.MsgDataAck(
        from_user_id=origin.user_id,
        to_session_id=message.to_session_id,
        client_msg_id=message.client_msg_id,
        server_msg_id=message.seq,
        res_code=base_pb2.ResCode.ValueType(ResCode.OK),
        session_type=base_pb2.SessionType.ValueType(message.session_type),
        create_time=message.created_ms // 1000,
    )


def _stored_event(message: StoredMessage, trace: TraceId, *, with_data: bool) -> MessageStored:
    return MessageStored(
        id=event_id(MessageStored, message.conversation, message.seq),
        ts=message.created_ms,
        trace_id=trace,
        conversation=message.conversation,
        seq=message.seq,
        from_user_id=message.from_user_id,
        to_session_id=message.to_session_id,
        session_type=message.session_type,
        msg_type=message.msg_type,
        client_msg_id=message.client_msg_id,
        sender_client_type=message.sender_client_type,
        msg_data=message.msg_data if with_data else None,
    )


def _fanout_message(message: StoredMessage, nick: str) -> FanoutMessage:
    return FanoutMessage(
        conversation=message.conversation,
        seq=message.seq,
        client_msg_id=message.client_msg_id,
        from_user_id=message.from_user_id,
        to_session_id=message.to_session_id,
        session_type=message.session_type,
        msg_type=message.msg_type,
        msg_data=message.msg_data,
        created_ms=message.created_ms,
        attach=message.attach,
        sender_client_type=message.sender_client_type,
        from_nick_name=nick,
    )


@consumer_group("msg")
def build(runtime: Runtime) -> MsgHandler:
    """The msg handler on the runtime's stores, with its own conversation seq allocator."""
    settings = runtime.settings.messaging
    ctx = MsgContext(
        bus=runtime.bus,
        topology=runtime.topology,
        users=runtime.users,
        routes=runtime.routes,
        messages=runtime.messages,
        groups=runtime.groups,
        seqs=SeqAllocator(runtime.sections),
        revoke_window_s=settings.revoke_window_s,
    )
    limits = MsgLimits(
        max_msg_data_bytes=settings.max_msg_data_bytes, lookup_cache_s=settings.lookup_cache_s
    )
    return MsgHandler(ctx, limits=limits, include_msg_data=runtime.settings.biz.include_msg_data)
