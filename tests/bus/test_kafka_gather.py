"""`KafkaConsumer`'s gather window (`[kafka] gather_ms`) on the real broker: once a fetch
brings records, what arrives within the window joins them in one batch; a consumer with a
`BatchLinger` lets the broker gather instead."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bus.base import Record
from bus.kafka import KafkaBus

pytestmark = pytest.mark.kafka


@pytest.fixture
async def topic(kafka_bootstrap: str) -> AsyncIterator[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="coffeebus-tests")
    await admin.start()
    name = f"test.gather.{uuid.uuid4().hex[:8]}"
    await admin.create_topics([NewTopic(name, 2, 1)])
    try:
        yield name
    finally:
        await admin.delete_topics([name])
        await admin.close()


async def batches_of(
    bootstrap: str, topic: str, *, gather_ms: int, gap_s: float, count: int
) -> list[list[bytes]]:
    """The batches a consumer of `topic` with a window of `gather_ms` got for `count`
    records published `gap_s` apart, the first of them once it owns its partitions."""
    bus = KafkaBus(
        bootstrap,
        client_id="coffeebus-tests",
        session_timeout_ms=6_000,
        heartbeat_interval_ms=100,
        poll_timeout_ms=200,
        gather_ms=gather_ms,
    )
    batches: list[list[bytes]] = []
    arrived = asyncio.Event()

    async def handle(records: Sequence[Record]) -> None:
        batches.append([r.value for r in records])
        if sum(map(len, batches)) >= count:
            arrived.set()

    await bus.start()
    try:
        consumer = bus.consumer(f"test.gather.{uuid.uuid4().hex[:8]}", [topic], handle, gather=True)
        await consumer.start()
        for n in range(count):
            if n:
                await asyncio.sleep(gap_s)  # the gap the window bridges, not a wait for an outcome
            # Keys on both partitions: one gathered batch per partition, handed over together.
            await bus.publish(topic, b"%d" % n, key=b"%d" % n)
        async with asyncio.timeout(30):
            await arrived.wait()
        await consumer.stop()
    finally:
        await bus.stop()
    return batches


async def test_records_arriving_within_the_window_are_handled_with_the_first(
    kafka_bootstrap: str, topic: str
) -> None:
    # A window far longer than the gaps: every record after the first arrives while the
    # consumer waits, so the first fetch's batch and what followed go to the handler at once
    # (one batch per partition), not as a batch per record.
    batches = await batches_of(kafka_bootstrap, topic, gather_ms=3_000, gap_s=0.1, count=4)
    assert sorted(v for batch in batches for v in batch) == [b"0", b"1", b"2", b"3"]
    assert len(batches) <= 2, batches


async def test_without_a_window_each_fetch_is_handed_over_at_once(
    kafka_bootstrap: str, topic: str
) -> None:
    # Records a whole second apart are fetched one by one; with no window each is handled as
    # it comes (a window of 0 adds no wait to a lightly loaded path).
    batches = await batches_of(kafka_bootstrap, topic, gather_ms=0, gap_s=1.0, count=3)
    assert batches == [[b"0"], [b"1"], [b"2"]]
