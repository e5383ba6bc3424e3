"""The ``fanout`` group: write inboxes and sessions, push messages to online devices.

``im.fanout`` is keyed by recipient, so the member owning a partition is the single writer of
its recipients' inbox timelines and allocates their inbox seqs in memory
(`store.seq.SeqAllocator`, timeline ``u:<user>``; sections are forgotten on assignment and
revocation). Per batch (one partition, in order; a record may carry several messages):

1. decode the `schemas.events.Fanout` records (undecodable → `Reject` → DLQ);
2. allocate an inbox seq per (recipient, message), in record order;
3. ``UserTimelines.deliver``: inbox appends and session touches together — on the real
   services one script per shard on the users' hot state (`store.redis.user_state`),
   whatever the number of recipients: entries already
   there (a replayed record, a resent message) are reported with their original inbox seq
   and appended again nowhere; the last message only moves forward, and touching replays
   too is what repairs a crash between the two;
4. the effects, logged first (`consumers.effects`): every entry — a replayed one at its
   original inbox seq — appended to ``im.log.user``, and only once every in-sync replica
   has it, each new entry pushed to the recipient's devices (but the connection it was
   sent from: one MsgData body per message, one record per gate partition), and a delivery
   check for every entry, new or not, of a recipient other than the sender (``im.timer``,
   one record per partition, `consumers.timer.DeliveryTimers`); routes come from
   ``RouteStore.get_many`` for the recipients of the new entries;
5. the runner commits after.

Only new entries are pushed, so replaying any record — or a client resending — delivers
nothing twice. The price is one window: if a member dies after 3 and before the pushes go
out, the replay finds the entries and pushes nothing. The message is safe in the inbox (and
logged by the replay) — the receiver gets it by sync / session list after a reconnect, and
the delivery timer sends an offline push for what was not acked — but an online device does
not see it live. Closing that would mean remembering "pushed" per entry or pushing
duplicates on every replay; clients dedupe by server_msg_id, but pushing twice on every
resend is worse for everyone than a rare late delivery after a crash.

``im.s2c`` (business pushes) is consumed by this group too: its batches go to
`consumers.s2c.S2CHandler` (route lookup, S2CPush to online devices; nothing stored).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from bus.base import Bus, Record, Reject, TopicPartition
from bus.topology import Topology
from consumers.effects import Effects
from consumers.registry import consumer_group
from consumers.s2c import S2C_TOPIC, S2CHandler
from consumers.timer import TIMER_TOPIC, DeliveryTimers
from schemas.commands import Cmd
from schemas.errors import EnvelopeError
from schemas.events import Fanout, FanoutMessage, decode_fanouts
from schemas.ids import UserId
from schemas.pb.coffeechat import base_pb2, message_pb2
from store.inbox import InboxEntry
from store.messages import StoredMessage
from store.routes import RouteStore
from store.seq import SeqAllocator, inbox_timeline
from store.timelines import UserTimelines

if TYPE_CHECKING:
    from consumers.runtime import Runtime

__all__ = ["FanoutHandler", "build", "push_body"]

log = logging.getLogger(__name__)

FANOUT_TOPIC = "im.fanout"


class FanoutHandler:
    """Handles batches of ``im.fanout`` (see the module docstring)."""

    #: A batch costs a script per shard, a log append and a push record per gate partition
    #: whatever its size (`[kafka] gather_ms`).
    gather = True

    def __init__(
        self,
        *,
        bus: Bus,
        topology: Topology,
        timelines: UserTimelines,
        routes: RouteStore,
        seqs: SeqAllocator,
        timers: DeliveryTimers | None = None,
    ) -> None:
        self._bus = bus
        self._topology = topology
        self._timelines = timelines
        self._routes = routes
        self.seqs = seqs
        #: schedules a delivery check per recipient and message (None: no offline pushes)
        self.timers = timers
        #: business pushes (``im.s2c``), a separate concern sharing this group
        self.s2c = S2CHandler(bus=bus, topology=topology, routes=routes)
        self._timer_partitions: int | None = None

    async def handle(self, records: Sequence[Record]) -> None:
        """Handle one partition's batch (module docstring)."""
        if records[0].topic == S2C_TOPIC:
            await self.s2c.handle(records)
            return
        fanouts = [fanout for record in records for fanout in _decode(record)]
        seqs = await self._allocate(fanouts)
        entries: list[InboxEntry] = []
        sources: list[int] = []  # index into fanouts of each entry
        for index, fanout in enumerate(fanouts):
            message = stored_message(fanout.message)
            for user in fanout.recipients:
                seq = next(seqs[user])
                entries.append(InboxEntry(user_id=user, inbox_seq=seq, message=message))
                sources.append(index)
        if not entries:
            return
        appended = await self._timelines.deliver(entries)
        new = [seq > 0 for seq in appended]
        effects = Effects(self._topology)
        # The inbox log, before any push: every entry at the seq it has — a replayed one at
        # its original seq, which a process that died before its log append left only in
        # Redis (the projection skips what it has). An entry Redis no longer holds (0) is in
        # the store already.
        logged: dict[int, tuple[list[UserId], list[int]]] = {}
        for entry, index, seq in zip(entries, sources, appended, strict=True):
            if seq:
                who, at = logged.setdefault(index, ([], []))
                who.append(entry.user_id)
                at.append(abs(seq))
        for index, (who, at) in logged.items():
            effects.log_inbox(fanouts[index].message, who, at)
        if self.timers is not None:
            # Delivery timers (consumers.timer) for every entry, new or not: a replay after a
            # crash between the inbox write and the publish pushes nothing live, so the timer
            # is what still brings the message to the user (an offline push if unacked).
            timers = self.timers.timers(
                (fanouts[index], entry.user_id)
                for entry, index in zip(entries, sources, strict=True)
            )
            if timers:
                if self._timer_partitions is None:
                    self._timer_partitions = await self._bus.partitions_for(TIMER_TOPIC)
                self.timers.publish(effects, timers, self._timer_partitions)
        fresh = [(entry, sources[i]) for i, entry in enumerate(entries) if new[i]]
        routes = await self._routes.get_many({entry.user_id for entry, _ in fresh}) if fresh else {}
        bodies: dict[int, bytes] = {}
        for entry, index in fresh:
            user_routes = routes.get(entry.user_id)
            if not user_routes:
                continue
            fanout = fanouts[index]
            body = bodies.get(index)
            if body is None:
                body = bodies[index] = push_body(fanout.message)
            skip = None
            if fanout.skip_gate is not None and fanout.skip_conn is not None:
                skip = (fanout.skip_gate, fanout.skip_conn)
            effects.push(entry.user_id, user_routes, Cmd.MSG_DATA, body, fanout.trace_id, skip=skip)
        if len(effects):
            await effects.flush(self._bus)

    async def _allocate(self, fanouts: Sequence[Fanout]) -> dict[UserId, Iterator[int]]:
        """Inbox seqs for every entry of the batch, per recipient in record order.

        One `allocate(n)` per recipient (`SeqAllocator.allocate_many`: at once for those whose
        section has room, concurrently for the others): a recipient whose section ran out (or
        who is new to this member) costs a section reservation — a few store round trips —
        and those must not add up one after the other.
        """
        counts: Counter[UserId] = Counter()
        for fanout in fanouts:
            counts.update(fanout.recipients)
        timelines = {user: inbox_timeline(user) for user in counts}
        ranges = await self.seqs.allocate_many({timelines[u]: n for u, n in counts.items()})
        return {user: iter(ranges[timeline]) for user, timeline in timelines.items()}

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """Forget inbox sections of users in `partitions` (another member may have
        allocated from them since this one last owned them)."""
        await self._forget(partitions)

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Forget inbox sections of users this member no longer owns."""
        await self._forget(partitions)

    async def close(self) -> None:
        """Nothing is buffered."""

    async def _forget(self, partitions: frozenset[TopicPartition]) -> None:
        mine = [tp.partition for tp in partitions if tp.topic == FANOUT_TOPIC]
        if mine:
            # A user's records are keyed by the id in decimal; the timeline is "u:<id>".
            count = await self._bus.partitions_for(FANOUT_TOPIC)
            self.seqs.forget_partitions(mine, count, key_of=_inbox_key)


def _inbox_key(timeline: str) -> bytes:
    return timeline.partition(":")[2].encode()


def _decode(record: Record) -> tuple[Fanout, ...]:
    try:
        return decode_fanouts(record.value)
    except EnvelopeError as exc:
        raise Reject(str(exc)) from exc


def stored_message(message: FanoutMessage) -> StoredMessage:
    """The stored message a fan-out record carries."""
    return StoredMessage(
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
    )


def push_body(message: FanoutMessage) -> bytes:
    """The MsgData (0x0301) pushed to recipients: the same bytes for every recipient."""
    return message_pb2.MsgData(
        from_user_id=message.from_user_id,
        from_nick_name=message.from_nick_name,
        to_session_id=message.to_session_id,
        client_msg_id=message.client_msg_id,
        server_msg_id=message.seq,
        create_time=message.created_ms // 1000,
        msg_type=base_pb2.MsgType.ValueType(message.msg_type),
        session_type=base_pb2.SessionType.ValueType(message.session_type),
        msg_data=message.msg_data,
    ).SerializeToString()


@consumer_group("fanout")
def build(runtime: Runtime) -> FanoutHandler:
    """The fanout handler on the runtime's stores, with its own inbox seq allocator."""
    return FanoutHandler(
        bus=runtime.bus,
        topology=runtime.topology,
        timelines=runtime.timelines,
        routes=runtime.routes,
        seqs=SeqAllocator(runtime.sections),
        timers=DeliveryTimers(
            delay_s=runtime.settings.push.timer_delay_s,
            preview_chars=runtime.settings.push.preview_chars,
        ),
    )
