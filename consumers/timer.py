"""The ``timer`` group: delivery checks from ``im.timer`` come due; unacked → ``im.push``.

When the fanout group delivers a message to a recipient (other than its sender), it also
publishes a `schemas.events.DeliveryTimer` keyed by the recipient: "at ``due_ms = now +
[push] timer_delay_s``, see whether a device of this user acked this message".

Waiting: pause the partition until its head is due
    Every record is published with the *same* delay, so within one partition the records are
    already in due order (give or take the clocks of the fanout members that wrote them).
    The earliest-due record of a partition is therefore always its head, and nothing behind
    the head can be due before it. So the handler never polls and never sleeps per record:
    for the batch it was handed it fires the prefix that is due now, then waits *once* until
    the new head is due (`bus.runner.hold`), fires the prefix due by then, and so on. While
    it waits, it holds the partition — which is the point: everything behind the head is due
    later, and the partition's offset is committed only after the whole batch has fired.
    One wait usually covers many records (a fan-out batch publishes its timers at one
    instant), and each wait is at most the delay.

    A stop or a rebalance cuts the wait short (`bus.runner.hold` raises `Aborted`): the batch
    is not committed and the next owner handles all of it again. Records that fired already
    fire again — harmless, because the push group sends at most one push per (user,
    conversation, seq) (`store.push_log`).

    A head due further ahead than the delay (a fanout member whose clock runs ahead, or a
    delay shortened since) is waited for only as long as the delay, then fires: a skewed
    clock may make one push early, but can never stall a partition for longer than that.
    Records behind the head that are due *earlier* than it (clocks again) fire with it —
    late, never early.

Firing: the due records are checked in one read of the delivery marks — the user's mark of
the conversation, a single chat or a group (`store.deliveries`, moved forward only by the
ack group: delivered seq ≥ the record's seq means a device acked it). Acked records are
dropped. For each of the
others a `schemas.events.PushRequest` goes to ``im.push``, all in one publish, after which
the runner commits. One request per message, not one per conversation: the push group's
at-most-once claim is per (user, conversation, seq), and a request standing for several
messages would make that claim depend on how a replay happens to split the batch. Devices
show one notification per conversation anyway (APNs ``apns-collapse-id``, FCM
``collapse_key``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bus.base import Bus, Record, Reject, TopicPartition
from bus.partitioner import partition_for_key
from bus.runner import hold
from bus.topology import Topology
from consumers.effects import Effects
from consumers.registry import consumer_group
from schemas.codes import MsgType, SessionType, VoipByeReason, VoipInviteType
from schemas.errors import EnvelopeError
from schemas.events import (
    DeliveryTimer,
    Fanout,
    FanoutMessage,
    PushNotice,
    PushRequest,
    TimerBatch,
    decode_delivery_timers,
    encode_record,
    recipient_key,
)
from schemas.ids import ConversationId, UserId
from store.clock import Clock, SystemClock
from store.deliveries import DeliveryStore

if TYPE_CHECKING:
    from consumers.runtime import Runtime

__all__ = [
    "PUSH_TOPIC",
    "TIMER_TOPIC",
    "DeliveryTimers",
    "TimerHandler",
    "TimerStats",
    "build",
    "call_summary",
    "push_notice",
]

log = logging.getLogger(__name__)

TIMER_TOPIC = "im.timer"
PUSH_TOPIC = "im.push"

Hold = Callable[[float], Awaitable[None]]


class DeliveryTimers:
    """How the fanout group schedules delivery checks: one `DeliveryTimer` per recipient of
    a message other than its sender, due ``delay_s`` after now, added to the fan-out's
    `Effects` (published with its deliveries, before its commit)."""

    def __init__(self, *, delay_s: float, preview_chars: int, clock: Clock | None = None) -> None:
        self._delay_ms = round(delay_s * 1000)
        self._preview_chars = preview_chars
        self._clock = clock or SystemClock()

    def timers(self, checks: Iterable[tuple[Fanout, UserId]]) -> list[DeliveryTimer]:
        """`timer` for each (fan-out, recipient), the senders left out; a message's notice
        is made once, however many recipients it has (a group's members)."""
        due = self._clock.now_ms() + self._delay_ms
        notices: dict[int, PushNotice] = {}
        out: list[DeliveryTimer] = []
        for fanout, recipient in checks:
            if recipient == fanout.message.from_user_id:
                continue
            notice = notices.get(id(fanout))
            if notice is None:
                notice = notices[id(fanout)] = push_notice(fanout.message, self._preview_chars)
            out.append(
                DeliveryTimer(
                    user_id=recipient, notice=notice, due_ms=due, trace_id=fanout.trace_id
                )
            )
        return out

    @staticmethod
    def publish(effects: Effects, timers: Sequence[DeliveryTimer], partitions: int) -> None:
        """`timers` as one record per ``im.timer`` partition (a `TimerBatch` when more than
        one), in the order given: what a fan-out batch schedules costs a record per
        partition, not per recipient and message."""
        by_partition: dict[int, list[DeliveryTimer]] = {}
        for timer in timers:
            key = recipient_key(timer.user_id)
            by_partition.setdefault(partition_for_key(key, partitions), []).append(timer)
        for batch in by_partition.values():
            value = encode_record(batch[0] if len(batch) == 1 else TimerBatch(tuple(batch)))
            effects.publish(TIMER_TOPIC, value, key=recipient_key(batch[0].user_id))


def call_summary(msg_data: bytes) -> str:
    """An AVCHAT message (PROTOCOL.md, "VoIP signalling") in a few words: "Voice call 1:05",
    "Missed video call", "Declined voice call"."""
    try:
        record = json.loads(msg_data)
        seconds, reason = int(record.get("timeLen", 0)), int(record.get("hangupReason", 0))
        kind = (
            "video call"
            if int(record.get("callType", 1)) == VoipInviteType.VIDEO_CALL
            else ("voice call")
        )
    except (ValueError, TypeError, AttributeError):
        return "Call"
    if seconds or reason == VoipByeReason.END:
        return f"{kind.capitalize()} {seconds // 60}:{seconds % 60:02d}"
    if reason == VoipByeReason.REJECT:
        return f"Declined {kind}"
    return f"Missed {kind}"


def push_notice(message: FanoutMessage, preview_chars: int) -> PushNotice:
    """What a push says about `message`: sender, conversation, and for a text message its
    first `preview_chars` characters (none when 0); for a call's record, what became of
    the call (`call_summary`)."""
    preview = ""
    if preview_chars and message.msg_type == MsgType.TEXT:
        preview = message.msg_data.decode("utf-8", "replace")[:preview_chars]
    elif message.msg_type == MsgType.AVCHAT:
        # A call's record says what happened, not what anyone wrote: shown whatever
        # preview_chars (a phone says "Missed voice call", not "New message").
        preview = call_summary(message.msg_data)
    group = message.session_type == SessionType.GROUP
    return PushNotice(
        conversation=message.conversation,
        seq=message.seq,
        from_user_id=message.from_user_id,
        from_nick_name=message.from_nick_name,
        session_type=message.session_type,
        msg_type=message.msg_type,
        created_ms=message.created_ms,
        group_id=message.to_session_id if group else 0,
        preview=preview,
    )


@dataclass(slots=True)
class TimerStats:
    """Counters of one timer member (monotonic; for metrics and tests)."""

    #: records that came due and were checked
    fired: int = 0
    #: of those, acked by a device in time (no push)
    acked: int = 0
    #: push requests published (one per unacked record)
    requested: int = 0
    #: waits for a head record to come due
    holds: int = 0


class TimerHandler:
    """Handles batches of ``im.timer`` (see the module docstring)."""

    def __init__(
        self,
        *,
        bus: Bus,
        topology: Topology,
        deliveries: DeliveryStore,
        delay_s: float,
        clock: Clock | None = None,
        wait: Hold = hold,
    ) -> None:
        self._bus = bus
        self._topology = topology
        self._deliveries = deliveries
        self._max_wait_ms = max(1, round(delay_s * 1000))
        self._clock = clock or SystemClock()
        self._wait = wait
        self.stats = TimerStats()

    async def handle(self, records: Sequence[Record]) -> None:
        """Fire the batch's records as they come due, waiting once per head."""
        decoded = [(timer, record) for record in records for timer in _decode(record)]
        timers = [timer for timer, _ in decoded]
        start = 0
        while start < len(timers):
            now = self._clock.now_ms()
            head = timers[start]
            if head.due_ms > now:
                wait_ms = min(head.due_ms - now, self._max_wait_ms)
                self.stats.holds += 1
                await self._wait(wait_ms / 1000)
                if head.due_ms - now > self._max_wait_ms:
                    log.warning(
                        "timer: %s[%d]@%d was due %d ms ahead, more than the delay; "
                        "firing it now (is a fanout member's clock ahead?)",
                        decoded[start][1].topic,
                        decoded[start][1].partition,
                        decoded[start][1].offset,
                        head.due_ms - now,
                    )
                    now = head.due_ms  # fire it (and what is due with it) after the wait
                else:
                    now = self._clock.now_ms()
                if head.due_ms > now:
                    continue  # the wait ended a hair early: wait the rest
            end = start + 1
            while end < len(timers) and timers[end].due_ms <= now:
                end += 1
            await self._fire(timers[start:end])
            start = end

    async def _fire(self, due: Sequence[DeliveryTimer]) -> None:
        self.stats.fired += len(due)
        acked_seq = await self._acked_seqs(due)
        effects = Effects(self._topology)
        now = self._clock.now_ms()
        for timer in due:
            if acked_seq.get((timer.user_id, timer.notice.conversation), 0) >= timer.notice.seq:
                self.stats.acked += 1
                continue
            request = PushRequest(
                user_id=timer.user_id, notice=timer.notice, trace_id=timer.trace_id, ts_ms=now
            )
            effects.publish(PUSH_TOPIC, encode_record(request), key=recipient_key(timer.user_id))
        if not len(effects):
            return
        self.stats.requested += len(effects)
        await effects.flush(self._bus)

    async def _acked_seqs(
        self, due: Sequence[DeliveryTimer]
    ) -> dict[tuple[UserId, ConversationId], int]:
        """The highest acked seq per (user, conversation) of `due`, single chats and groups
        alike: one read of the delivery marks (Redis on the real services)."""
        return await self._deliveries.delivered_seqs(
            (t.user_id, t.notice.conversation) for t in due
        )

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def close(self) -> None:
        """Nothing is buffered."""


def _decode(record: Record) -> tuple[DeliveryTimer, ...]:
    try:
        return decode_delivery_timers(record.value)
    except EnvelopeError as exc:
        raise Reject(str(exc)) from exc


@consumer_group("timer")
def build(runtime: Runtime) -> TimerHandler:
    """The timer handler on the runtime's delivery marks and group acks."""
    return TimerHandler(
        bus=runtime.bus,
        topology=runtime.topology,
        deliveries=runtime.deliveries,
        delay_s=runtime.settings.push.timer_delay_s,
    )
