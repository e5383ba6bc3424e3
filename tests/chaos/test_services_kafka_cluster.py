"""The replicated Kafka profile: a three-broker KRaft cluster (private to this test) with the
production overlay, one broker killed with SIGKILL under load and brought back.

The topics are created with topology.prod.yaml over topology.yaml — replication factor 3,
``min.insync.replicas`` 2, unclean leader election off, as production runs them — and the bus
publishes with its own settings (bus/kafka.py: ``acks=all``, not idempotent), so a record the
cluster acknowledged is on at least two brokers. Killing the broker that leads the most
``im.up.msg`` partitions moves their leadership to an in-sync replica while two brokers still
satisfy min ISR, so the load must go on; the broker is then started again (its data kept),
catches up and is back in every partition's ISR, and the checker finds every acked message
exactly once, in order, in every inbox.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from bus.admin import show
from bus.topology import default_topology_path, load_topology
from tests.chaos.faults import assert_clean, run_under_load
from tests.chaos.services import PrivateServices, private_services
from tests.consumers.conftest import open_real_system
from tests.waiting import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.mongo, pytest.mark.timeout(480)]

log = logging.getLogger(__name__)

#: The production overlay (docs/operations.md, "Topics, partitions and consumer groups").
PROD_OVERLAY = default_topology_path().with_name("topology.prod.yaml")


async def _partitions(services: PrivateServices, topic: str) -> list[dict[str, object]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return list(described["partitions"])


async def test_a_broker_of_three_killed_and_brought_back_loses_nothing_acked(
    tmp_path: Path, redis_url: str, mongo_url: str
) -> None:
    topology = load_topology(overlay=PROD_OVERLAY)
    async with (
        private_services(tmp_path, kafka_nodes=3) as services,
        open_real_system(
            services.kafka_bootstrap, redis_url, mongo_url, topology=topology
        ) as system,
    ):
        # Every declared topic as the overlay says: replication 3, min ISR 2, no unclean
        # leader election (a config drift would be a row with status "drift").
        report = await show(topology, services.kafka_bootstrap)
        assert not report.drift, [row for row in report.rows if row.drift]
        assert {row.replication_factor for row in report.rows} == {3}
        spec = topology.topic("im.log.msg")
        assert spec.configs["min.insync.replicas"] == "2"
        assert spec.configs["unclean.leader.election.enable"] == "false"
        partitions = await _partitions(services, "im.up.msg")
        assert {len(p["replicas"]) for p in partitions} == {3}  # type: ignore[arg-type]
        leaders = Counter(p["leader"] for p in partitions)
        victim = int(leaders.most_common(1)[0][0])  # type: ignore[call-overload]
        log.info("im.up.msg leaders %s; killing broker %d", dict(leaders), victim)

        async def kill_and_bring_back() -> None:
            await services.kill(f"kafka-{victim}")
            await services.start()  # only the killed node; returns once it answers

        run = await run_under_load(system, kill_and_bring_back)
        assert_clean(run, expected=6 * 80)
        assert services.pid(f"kafka-{victim}") is not None

        async def back_in_sync() -> bool:
            for topic in ("im.up.msg", "im.log.msg", "im.fanout", "im.log.user"):
                if any(len(p["isr"]) < 3 for p in await _partitions(services, topic)):  # type: ignore[arg-type]
                    return False
            return True

        await wait_for(back_in_sync, within=120.0)
