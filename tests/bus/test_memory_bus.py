"""What only MemoryBus has: topic declaration, round-robin keyless records, static ids."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bus.base import BusError, Outgoing, Record, TopicPartition, UnknownTopicError
from bus.memory import MemoryBus


async def nothing(records: Sequence[Record]) -> None:
    del records


def test_topics_are_declared_once_with_a_fixed_partition_count() -> None:
    bus = MemoryBus()
    bus.create_topic("t", 3)
    bus.create_topic("t", 3)  # idempotent, like `topology apply`
    assert bus.topics() == {"t": 3}
    with pytest.raises(BusError, match="exists with 3 partitions"):
        bus.create_topic("t", 4)
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        bus.create_topic("u", 0)


async def test_keyless_records_go_round_robin() -> None:
    bus = MemoryBus()
    bus.create_topic("t", 3)
    metas = [await bus.publish("t", b"x") for _ in range(6)]
    assert [m.partition for m in metas] == [0, 1, 2, 0, 1, 2]
    assert [m.offset for m in metas] == [0, 0, 0, 1, 1, 1]


async def test_a_batch_with_an_unknown_topic_publishes_nothing() -> None:
    bus = MemoryBus()
    bus.create_topic("t", 1)
    with pytest.raises(UnknownTopicError):
        await bus.publish_batch([Outgoing("t", b"a"), Outgoing("missing", b"b")])
    assert bus.end_offset(TopicPartition("t", 0)) == 0


async def test_two_live_members_cannot_share_a_static_id() -> None:
    bus = MemoryBus()
    bus.create_topic("t", 1)
    first = bus.consumer("g", ["t"], nothing, static_member_id="gate-1")
    await first.start()
    with pytest.raises(BusError, match="already running"):
        await bus.consumer("g", ["t"], nothing, static_member_id="gate-1").start()
    await first.stop()
    again = bus.consumer("g", ["t"], nothing, static_member_id="gate-1")
    await again.start()
    assert again.assigned() == {TopicPartition("t", 0)}
    await bus.stop()
    assert again.assigned() == frozenset()


async def test_commits_are_visible_per_group() -> None:
    bus = MemoryBus()
    bus.create_topic("t", 1)
    await bus.publish_batch(Outgoing("t", b"x") for _ in range(3))
    handled = asyncio.Event()

    async def handle(records: Sequence[Record]) -> None:
        if records[-1].offset == 2:
            handled.set()

    consumer = bus.consumer("g", ["t"], handle)
    await consumer.start()
    async with asyncio.timeout(5):
        await handled.wait()
    await consumer.stop()
    assert bus.committed("g", TopicPartition("t", 0)) == 3
    assert bus.committed("other", TopicPartition("t", 0)) is None
