"""Fixtures of the bus contract tests: one `BusHarness` per implementation.

`harness` is parametrized over MemoryBus and KafkaBus (on the real broker of
`kafka_bootstrap`); each test creates its own uniquely named topics — the broker does not
auto-create topics — and uses unique group names, so tests never see each other's records.
Kafka topics are deleted at teardown.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bus.kafka import KafkaBus
from bus.memory import MemoryBus
from tests.bus.harness import BusHarness


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[BusHarness]:
    if request.param == "memory":
        memory = MemoryBus()

        async def create_memory(name: str, partitions: int) -> None:
            memory.create_topic(name, partitions)

        await memory.start()
        yield BusHarness("memory", memory, create_memory)
        await memory.stop()
        return

    bootstrap: str = request.getfixturevalue("kafka_bootstrap")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="coffeebus-tests")
    await admin.start()
    # Short group timings so that joins and rebalances take a fraction of a second.
    kafka = KafkaBus(
        bootstrap,
        client_id="coffeebus-tests",
        linger_ms=0,
        metadata_wait_ms=500,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=100,
        fetch_max_wait_ms=100,
        poll_timeout_ms=200,
        # Far longer than any test: after its first, a member commits only when it stops or
        # loses partitions, so every test of hand-overs checks that those commit what was
        # handled (`KafkaConsumer._committed`).
        commit_interval_ms=600_000,
        # Every batch waits for what follows it (`KafkaConsumer._gather`), so the hand-over
        # tests check that records gathered while partitions move are not lost or handled
        # by two members.
        gather_ms=20,
    )
    # ... which the bus gives every consumer made with gather=True.
    kafka.consumer = functools.partial(kafka.consumer, gather=True)  # type: ignore[method-assign]

    async def create_kafka(name: str, partitions: int) -> None:
        await admin.create_topics([NewTopic(name, partitions, 1)])
        # Creation is asynchronous: this waits until the producer's metadata has the topic.
        assert await kafka.partitions_for(name) == partitions

    await kafka.start()
    harness = BusHarness("kafka", kafka, create_kafka)
    try:
        yield harness
    finally:
        await kafka.stop()
        if harness.created:
            await admin.delete_topics(harness.created)
        await admin.close()
