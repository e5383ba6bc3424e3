"""A three-broker KRaft cluster (private to this test) loses one broker to SIGKILL mid-load.

Every topic is created with replication factor 3 and ``min.insync.replicas`` 2 (the overlay
that topology.yaml's header recommends for three brokers), and the bus producer publishes
with ``acks=all`` (bus/kafka.py), so a record the broker acknowledged is on at least two
brokers: killing the one that leads the most ``im.up.msg`` partitions moves
their leadership to a surviving in-sync replica, and nothing acked is lost. The broker stays
down until the end: two of three brokers still satisfy min ISR, so the load must finish.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from bus.topology import load_topology
from tests.chaos.faults import assert_clean, run_under_load
from tests.chaos.services import PrivateServices, private_services
from tests.consumers.conftest import open_real_system

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.mongo, pytest.mark.timeout(480)]

log = logging.getLogger(__name__)

OVERLAY = """\
defaults:
  replication_factor: 3
  configs: {min.insync.replicas: 2}
"""


async def _busiest_leader(services: PrivateServices, topic: str) -> int:
    """The broker id leading the most partitions of `topic`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    leaders = Counter(p["leader"] for p in described["partitions"])
    log.info("%s leaders: %s", topic, dict(leaders))
    return int(leaders.most_common(1)[0][0])


async def test_a_killed_broker_of_three_loses_nothing_acked(
    tmp_path: Path, redis_url: str, mongo_url: str
) -> None:
    overlay = tmp_path / "rf3.yaml"
    overlay.write_text(OVERLAY)
    topology = load_topology(overlay=overlay)
    async with (
        private_services(tmp_path, kafka_nodes=3) as services,
        open_real_system(
            services.kafka_bootstrap, redis_url, mongo_url, topology=topology
        ) as system,
    ):
        victim = await _busiest_leader(services, "im.up.msg")

        async def kill() -> None:
            await services.kill(f"kafka-{victim}")

        run = await run_under_load(system, kill)
        assert_clean(run, expected=6 * 80)
        assert services.pid(f"kafka-{victim}") is None  # it stayed down throughout
