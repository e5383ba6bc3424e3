"""The timer handler on the memory bus and stores: waits once per head (not per record),
never fires a record before it is due, drops what a device acked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from bus.base import Outgoing, Record, RecordMeta
from bus.memory import MemoryBus
from bus.topology import load_topology
from consumers.timer import PUSH_TOPIC, TimerHandler
from schemas.events import (
    DeliveryTimer,
    PushNotice,
    decode_push_request,
    encode_record,
)
from schemas.ids import ConversationId, TraceId, UserId
from store.deliveries import DeliveryMark
from store.groups import GroupSpec
from store.memory.deliveries import MemoryDeliveryStore
from store.memory.groups import MemoryGroupStore

BOB = UserId(7)
CONV = ConversationId("s:3:7")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def timer(seq: int, due_ms: int, *, conv: ConversationId = CONV, group: int = 0) -> DeliveryTimer:
    notice = PushNotice(
        conversation=conv,
        seq=seq,
        from_user_id=UserId(3),
        from_nick_name="alice",
        session_type=2 if group else 1,
        msg_type=1,
        created_ms=due_ms - 300,
        group_id=group,
    )
    return DeliveryTimer(user_id=BOB, notice=notice, due_ms=due_ms, trace_id=TraceId("ab" * 16))


def records(timers: list[DeliveryTimer]) -> list[Record]:
    return [Record("im.timer", 0, n, b"7", encode_record(t), (), 0) for n, t in enumerate(timers)]


class RecordingBus(MemoryBus):
    """A memory bus that also keeps what was published, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[Outgoing] = []

    async def publish_batch(self, items: Iterable[Outgoing]) -> list[RecordMeta]:
        batch = list(items)
        self.published.extend(batch)
        return await super().publish_batch(batch)


class Harness:
    def __init__(self) -> None:
        self.topology = load_topology()
        self.bus = RecordingBus()
        for spec in self.topology.topics.values():
            self.bus.create_topic(spec.name, spec.partitions)
        self.deliveries = MemoryDeliveryStore()
        self.groups = MemoryGroupStore()
        self.waits: list[float] = []
        self.fired_at: list[int] = []
        self.handler = TimerHandler(
            bus=self.bus,
            topology=self.topology,
            deliveries=self.deliveries,
            delay_s=0.3,
            wait=self.wait,
        )

    async def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(seconds)

    async def pushed(self) -> list[int]:
        """The seqs of the push requests published."""
        assert all(o.topic == PUSH_TOPIC and o.key == b"7" for o in self.bus.published)
        return sorted(decode_push_request(o.value).notice.seq for o in self.bus.published)


async def test_one_wait_per_head_and_nothing_fires_early() -> None:
    h = Harness()
    start = now_ms()
    # three fan-out batches: 0 ms, +120 ms, +240 ms from now; many records each
    timers = [timer(seq, start + 100 + 120 * ((seq - 1) // 10)) for seq in range(1, 31)]
    await h.bus.start()
    try:
        await h.handler.handle(records(timers))
        done = now_ms()
        assert h.handler.stats.holds == len(h.waits) == 3
        assert all(0 < w <= 0.3 for w in h.waits)
        assert done >= max(t.due_ms for t in timers)
        assert h.handler.stats.fired == 30
        assert await h.pushed() == list(range(1, 31))
    finally:
        await h.bus.stop()


async def test_due_records_fire_without_waiting_and_acked_ones_are_dropped() -> None:
    h = Harness()
    past = now_ms() - 1000
    created = await h.groups.create(
        GroupSpec(name="g", owner_id=UserId(3)), [BOB], create_key="test"
    )
    group = created.group.group_id
    group_conv = ConversationId(f"g:{group}")
    await h.deliveries.mark_delivered_many([DeliveryMark(BOB, CONV, 2, past)])
    # A group member's ack is a delivery mark of the group's conversation (the ack group).
    await h.deliveries.mark_delivered_many([DeliveryMark(BOB, group_conv, 5, past)])
    timers = [
        timer(1, past),
        timer(2, past),
        timer(3, past),  # above the delivery mark: pushed
        timer(5, past, conv=group_conv, group=group),
        timer(6, past, conv=group_conv, group=group),  # above the member's ack: pushed
    ]
    await h.bus.start()
    try:
        await h.handler.handle(records(timers))
        assert h.waits == []
        assert (h.handler.stats.acked, h.handler.stats.requested) == (3, 2)
        assert await h.pushed() == [3, 6]
    finally:
        await h.bus.stop()


async def test_a_head_due_beyond_the_delay_waits_only_the_delay() -> None:
    h = Harness()
    await h.bus.start()
    try:
        await h.handler.handle(records([timer(1, now_ms() + 3_600_000)]))
        assert h.waits == [0.3]
        assert await h.pushed() == [1]
    finally:
        await h.bus.stop()
