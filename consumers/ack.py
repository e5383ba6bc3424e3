"""The ``ack`` group: receivers' acks from ``im.up.ack`` (keyed by user).

- MsgDataAck (0x0302) from a receiver's device: the message reached it. The user's delivery
  mark of the conversation moves forward (`DeliveryStore.mark_delivered_many` — a single
  chat, or a group member's ack seq), so acks may come in any order and any number of times;
  the delivery timer reads it. One write per batch, whatever its size. When a single chat's
  mark moves, DeliveredNotify (0x0820) goes to the devices of the chat's other user, the
  sender of what was delivered: the "delivered" of their ticks.
- MsgDataReadAck (0x0303): the session's read seq moves forward, and the unread count with
  it (`SessionStore.advance_reads`, one write per batch, returning the read seqs from before
  it), then MsgDataReadNotify (0x0304) goes to the peer's devices (single chat) and to the
  reader's other devices for every read that moved. A group's read state is asked for, not
  pushed (GroupReadStateReq 0x080D).
- S2CPushAck (0x080C): business push receipts; their events come with issue 5.

Marks are logged to ``im.log.user`` (the projection writes them into MongoDB's
``session_reads``, ``deliveries`` and group members' ack seqs) before anything else goes out
(`consumers.effects`): a delivery mark whenever one is written, a read mark whenever the read
seq reached it — a replayed ack finds its own hot write done and logs it again, so a crash
between the write and the append loses no mark. Business events (`schemas.bizevents`, on
``biz.events.message`` keyed by conversation) go out after: ``message.delivered`` for every
(clamped) delivery ack, ``message.read`` for every read ack that is not behind the stored
read seq — a replayed ack finds its own write done and emits its event again (same id), so a
crash between the write and the publish loses no event.

Acks have no response. One that cannot be honoured (another user's id in the body, a group
the user is not in, a seq the conversation never reached) is dropped with a log line.
Every seq is clamped to the conversation's latest message (its head: `MessageStore.latest_seqs`,
from Redis on the real services), so a client cannot mark messages that do not exist yet as
read or delivered.

Single writer: read seqs and delivery marks are keyed by user and written only here, by the
owner of the user's ``im.up.ack`` partition (and behind, from the log, by the projection).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bus.base import Bus, Record, TopicPartition
from bus.topology import Topology
from consumers.effects import Effects
from consumers.registry import consumer_group
from consumers.requests import Refusal, Request, acting_user, conversation_of, decode_request
from schemas.bizevents import BizEvent, MessageDelivered, MessageRead, encode_event, event_id
from schemas.codes import SessionType
from schemas.commands import Cmd
from schemas.envelope import Origin
from schemas.ids import ConversationId, GroupId, TraceId, UserId
from schemas.logs import LogMark
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, message_pb2
from store.clock import Clock, SystemClock
from store.deliveries import DeliveryMark, DeliveryStore
from store.groups import GroupStore
from store.messages import MessageStore
from store.routes import RouteStore
from store.sessions import ReadMark, SessionStore

if TYPE_CHECKING:
    from consumers.runtime import Runtime

__all__ = ["AckHandler", "build"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Read:
    """The furthest read ack of a batch for one (user, conversation)."""

    user: UserId
    conversation: ConversationId
    session_type: int
    session_id: int
    seq: int
    origin: Origin
    trace_id: TraceId


@dataclass(slots=True)
class _Delivered:
    """The furthest delivery ack of a batch for one (user, conversation)."""

    user: UserId
    conversation: ConversationId
    session_type: int
    session_id: int
    seq: int
    trace_id: TraceId


class AckHandler:
    """Handles delivery acks, read acks and push receipts of ``im.up.ack``."""

    #: A batch costs one mark write and one log append whatever its size: the acks of a
    #: group message's members come a few milliseconds apart (`[kafka] gather_ms`).
    gather = True

    def __init__(
        self,
        *,
        bus: Bus,
        topology: Topology,
        routes: RouteStore,
        messages: MessageStore,
        sessions: SessionStore,
        groups: GroupStore,
        deliveries: DeliveryStore,
        clock: Clock | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._bus = bus
        self._topology = topology
        self._routes = routes
        self._messages = messages
        self._sessions = sessions
        self._groups = groups
        self.deliveries = deliveries
        self._clock = clock or SystemClock()
        self._on_close = on_close

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def close(self) -> None:
        """Nothing is buffered past a batch: every batch flushes its acks before it returns."""
        if self._on_close is not None:
            await self._on_close()

    async def handle(self, records: Sequence[Record]) -> None:
        """Fold the batch into one write per kind, then publish the read notifies."""
        reads: dict[tuple[UserId, ConversationId], _Read] = {}
        delivered: dict[tuple[UserId, ConversationId], _Delivered] = {}
        for record in records:
            request = decode_request(record)
            try:
                self._fold(request, reads, delivered)
            except Refusal as refusal:
                log.warning("dropped ack 0x%04X: %s", request.cmd, refusal.text)
        if not reads and not delivered:
            return
        convs = {c for _, c in reads} | {c for _, c in delivered}
        items: list[_Read | _Delivered] = [*reads.values(), *delivered.values()]
        groups = {(i.user, i.session_id) for i in items if i.session_type == SessionType.GROUP}
        # Single chats' marks as they were, to notify the senders only of marks that move:
        # exact, as this partition's owner is the marks' single writer (keyed by user).
        singles = [
            (d.user, d.conversation)
            for d in delivered.values()
            if d.session_type == SessionType.SINGLE
        ]
        latest, membership, marked = await asyncio.gather(
            self._latest_seqs(convs),
            self._memberships(groups),
            self.deliveries.delivered_seqs(singles) if singles else _no_marks(),
        )
        effects = Effects(self._topology)
        delivered_events, read_events = await asyncio.gather(
            self._deliver(list(delivered.values()), latest, membership, marked, effects),
            self._read(list(reads.values()), latest, membership, effects),
        )
        events: list[BizEvent] = [*delivered_events, *read_events]
        for event in events:
            effects.publish(event.topic, encode_event(event), key=event.key())
        if len(effects):
            await effects.flush(self._bus)

    def _fold(
        self,
        request: Request,
        reads: dict[tuple[UserId, ConversationId], _Read],
        delivered: dict[tuple[UserId, ConversationId], _Delivered],
    ) -> None:
        origin, msg = request.origin, request.message
        if origin is None:
            log.warning("ack 0x%04X without an origin: ignored", request.cmd)
            return
        if isinstance(msg, message_pb2.MsgDataReadAck):
            user = acting_user(origin, msg.user_id, request.cmd)
            conversation = conversation_of(user, msg.session_type, msg.session_id)
            key = (user, conversation)
            old = reads.get(key)
            if old is None or msg.msg_id > old.seq:
                reads[key] = _Read(
                    user,
                    conversation,
                    msg.session_type,
                    msg.session_id,
                    msg.msg_id,
                    origin,
                    request.envelope.trace_id,
                )
        elif isinstance(msg, message_pb2.MsgDataAck):
            # A receipt asserts nothing about identity: the acking user is the connection's.
            # Clients differ on the ids (the SDK sends its own id and the sender as the
            # session; others echo the pushed MsgData's from/to), so the peer of a single
            # chat is whichever of the two ids is not the acking user.
            user = UserId(origin.user_id)
            session_id = msg.to_session_id
            if int(msg.session_type) == SessionType.SINGLE and session_id == user:
                session_id = msg.from_user_id
            if int(msg.session_type) == SessionType.SINGLE and session_id in (0, user):
                return  # the user's own message, echoed to another of their devices
            conversation = conversation_of(user, msg.session_type, session_id)
            key = (user, conversation)
            seen = delivered.get(key)
            if seen is None:
                delivered[key] = _Delivered(
                    user,
                    conversation,
                    msg.session_type,
                    session_id,
                    msg.server_msg_id,
                    request.envelope.trace_id,
                )
            else:
                seen.seq = max(seen.seq, msg.server_msg_id)
        elif isinstance(msg, ext_pb2.S2CPushAck):
            acting_user(origin, msg.user_id, request.cmd)  # a receipt for someone else: dropped
            log.debug(
                "S2CPushAck %s from user %d (receipts come with issue 5)",
                msg.push_id,
                origin.user_id,
            )
        else:
            log.warning("command 0x%04X is not an ack: ignored", request.cmd)

    async def _latest_seqs(self, convs: set[ConversationId]) -> dict[ConversationId, int]:
        # One call for the batch: on the real services, one Redis round trip
        # (`store.redis.heads`) instead of a timeline scan per conversation on FerretDB.
        return await self._messages.latest_seqs(convs)

    async def _memberships(self, pairs: set[tuple[UserId, int]]) -> set[tuple[UserId, int]]:
        """The (user, group) pairs that are memberships: one request per group (a group
        message's acks come from hundreds of members at once)."""
        by_group: dict[int, list[UserId]] = defaultdict(list)
        for user, group in pairs:
            by_group[group].append(user)
        groups = list(by_group)
        found = await asyncio.gather(
            *(self._groups.members_among(GroupId(g), by_group[g]) for g in groups)
        )
        return {(user, g) for g, members in zip(groups, found, strict=True) for user in members}

    async def _deliver(
        self,
        items: list[_Delivered],
        latest: dict[ConversationId, int],
        members: set[tuple[UserId, int]],
        marked: dict[tuple[UserId, ConversationId], int],
        effects: Effects,
    ) -> list[MessageDelivered]:
        """Move and log the delivery marks (a group's per-member ack seqs too), notify the
        senders of single chats whose mark moved; the events of the acks that were honoured."""
        now = self._clock.now_ms()
        marks: list[DeliveryMark] = []
        events: list[MessageDelivered] = []
        moved: list[_Delivered] = []
        for item in items:
            seq = min(item.seq, latest.get(item.conversation, 0))
            if seq <= 0:
                continue
            if (
                item.session_type == SessionType.GROUP
                and (item.user, item.session_id) not in members
            ):
                continue
            marks.append(DeliveryMark(item.user, item.conversation, seq, now))
            effects.log_delivery(LogMark(item.user, item.conversation, seq, now))
            if item.session_type == SessionType.SINGLE and seq > marked.get(
                (item.user, item.conversation), 0
            ):
                item.seq = seq
                moved.append(item)
            events.append(
                MessageDelivered(
                    id=event_id(MessageDelivered, item.user, item.conversation, seq),
                    ts=now,
                    conversation=item.conversation,
                    user_id=item.user,
                    session_type=item.session_type,
                    session_id=item.session_id,
                    seq=seq,
                )
            )
        if marks:
            await self.deliveries.mark_delivered_many(marks)
        if moved:
            await self._notify_delivered(moved, effects)
        return events

    async def _notify_delivered(self, items: Sequence[_Delivered], effects: Effects) -> None:
        """DeliveredNotify to the devices of each chat's other user (who sent what arrived)."""
        routes = await self._routes.get_many({UserId(d.session_id) for d in items})
        for d in items:
            sender = UserId(d.session_id)
            # As the sender sees it: its chat with the receiver.
            notify = ext_pb2.DeliveredNotify(
                user_id=d.user,
                session_id=d.user,
                msg_id=d.seq,
                session_type=base_pb2.SESSION_TYPE_SINGLE,
            )
            effects.push(
                sender,
                routes.get(sender, []),
                Cmd.DELIVERED_NOTIFY,
                notify.SerializeToString(),
                d.trace_id,
            )

    async def _read(
        self,
        items: list[_Read],
        latest: dict[ConversationId, int],
        members: set[tuple[UserId, int]],
        effects: Effects,
    ) -> list[MessageRead]:
        """Move read seqs forward and notify; the events of the acks not behind."""
        wanted: list[_Read] = []
        for item in items:
            item.seq = min(item.seq, latest.get(item.conversation, 0))
            if item.seq <= 0:
                continue
            if (
                item.session_type == SessionType.GROUP
                and (item.user, item.session_id) not in members
            ):
                log.warning(
                    "dropped read ack: user %d is not in group %d", item.user, item.session_id
                )
                continue
            wanted.append(item)
        if not wanted:
            return []
        before = await self._sessions.advance_reads(
            [ReadMark(r.user, r.conversation, r.seq) for r in wanted]
        )
        forward = [r for r, seq in zip(wanted, before, strict=True) if r.seq > seq]
        reached = [r for r, seq in zip(wanted, before, strict=True) if r.seq >= seq]
        now = self._clock.now_ms()
        for r in reached:
            # Logged when reached, not only when moved: a process that died between the
            # hot write and the log append left the move only in Redis.
            effects.log_read(LogMark(r.user, r.conversation, r.seq, now))
        if forward:
            await self._notify_reads(forward, effects)
        return [
            MessageRead(
                id=event_id(MessageRead, r.user, r.conversation, r.seq),
                ts=self._clock.now_ms(),
                trace_id=r.trace_id,
                conversation=r.conversation,
                user_id=r.user,
                session_type=r.session_type,
                session_id=r.session_id,
                seq=r.seq,
            )
            for r in reached
        ]

    async def _notify_reads(self, reads: Sequence[_Read], effects: Effects) -> None:
        users = {r.user for r in reads} | {
            UserId(r.session_id) for r in reads if r.session_type == SessionType.SINGLE
        }
        routes = await self._routes.get_many(users)
        for r in reads:
            session_type = base_pb2.SessionType.ValueType(r.session_type)
            mine = message_pb2.MsgDataReadNotify(
                user_id=r.user, session_id=r.session_id, msg_id=r.seq, session_type=session_type
            )
            effects.push(
                r.user,
                routes.get(r.user, []),
                Cmd.MSG_READ_NOTIFY,
                mine.SerializeToString(),
                r.trace_id,
                skip=(r.origin.gate_id, r.origin.conn_id),
            )
            if r.session_type == SessionType.SINGLE:
                peer = UserId(r.session_id)
                # As the peer sees it: its session with the reader.
                theirs = message_pb2.MsgDataReadNotify(
                    user_id=r.user, session_id=r.user, msg_id=r.seq, session_type=session_type
                )
                effects.push(
                    peer,
                    routes.get(peer, []),
                    Cmd.MSG_READ_NOTIFY,
                    theirs.SerializeToString(),
                    r.trace_id,
                )


async def _no_marks() -> dict[tuple[UserId, ConversationId], int]:
    return {}


@consumer_group("ack")
def build(runtime: Runtime) -> AckHandler:
    """The ack handler on the runtime's stores."""
    return AckHandler(
        bus=runtime.bus,
        topology=runtime.topology,
        routes=runtime.routes,
        messages=runtime.messages,
        sessions=runtime.sessions,
        groups=runtime.groups,
        deliveries=runtime.deliveries,
    )
