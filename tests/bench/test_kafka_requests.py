"""`bench.kafka_requests` on the real broker: every kind of request is measured, and the
topic and group it made are gone afterwards."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from bench.kafka_requests import run


async def test_each_request_is_measured_and_nothing_is_left_behind(kafka_bootstrap: str) -> None:
    figures = await run(20, kafka_bootstrap)
    assert list(figures) == ["produce", "commit", "produce → fetch"]
    for cost in figures.values():
        assert cost.time_us > 0
        assert cost.client_cpu_us >= 0
        assert cost.broker_cpu_us is None or cost.broker_cpu_us >= 0
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        topics = await admin.list_topics()
        groups = [group for group, _ in await admin.list_consumer_groups()]
    finally:
        await admin.close()
    assert not [t for t in topics if t.startswith("bench.requests.")]
    assert not [g for g in groups if g.startswith("bench-requests-")]
