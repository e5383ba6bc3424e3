"""A consumer stopped (SIGTERM) while its Kafka broker is down stops, instead of waiting for
the broker forever.

Found on a `coffeebus consume` process that had outlived its broker (a chaos run's private
one): it ignored SIGTERM for over an hour. A SIGUSR1 task dump showed the consumer loop in
aiokafka's offset commit, which looks for the group coordinator for as long as the broker is
unreachable; `KafkaConsumer.stop` waits for the loop. The commit is now bounded by the
request timeout (an uncommitted batch is only handled again, by this member after a later
commit or by the next owner). With that fixed, a second aiokafka 0.14 flaw showed: its
fetcher's close re-raises the CancelledError of the fetch it cancels, which skipped the
client's close and, in a process of several roles, the stop of the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from bus.admin import apply
from bus.base import Record
from bus.kafka import KafkaBus
from bus.topology import default_topology_path, load_topology
from tests.chaos.services import private_services

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.timeout(300)]

TOPIC = "im.up.ack"
REQUEST_TIMEOUT_MS = 3_000
#: Far above the request timeout the commit now waits at most, far below "forever".
STOP_WITHIN_S = 60.0


async def test_a_consumer_stops_while_its_broker_is_down(tmp_path: Path) -> None:
    async with private_services(tmp_path, kafka_nodes=1) as services:
        await apply(load_topology(default_topology_path()), services.kafka_bootstrap)
        # The records go out on a producer with the default request timeout: a broker that
        # just created every topic of the topology (500 partitions) may answer "not leader"
        # for a few seconds after its metadata names it leader, and aiokafka retries for as
        # long as the request timeout — the 3 s this test needs for its outage was too short
        # for that (NotLeaderForPartitionError, one run in several).
        seeder = KafkaBus(services.kafka_bootstrap, client_id="cbtest-outage-seed")
        await seeder.start()
        try:
            for i in range(20):
                await seeder.publish(TOPIC, b"record %d" % i, key=b"user-%d" % i)
        finally:
            await seeder.stop()
        bus = KafkaBus(
            services.kafka_bootstrap,
            client_id="cbtest-outage",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )
        await bus.start()
        entered, release = asyncio.Event(), asyncio.Event()
        handled: list[Record] = []

        async def handler(records: Sequence[Record]) -> None:
            entered.set()
            await release.wait()  # the broker dies while this batch is being handled
            handled.extend(records)

        consumer = bus.consumer("cbtest.outage", [TOPIC], handler)
        async with asyncio.timeout(60):
            await consumer.start()
            await entered.wait()

        await services.kill("kafka")
        release.set()  # the loop goes on to commit the batch, to a dead broker
        async with asyncio.timeout(STOP_WITHIN_S):
            await consumer.stop()  # returns, and raises nothing
            await bus.stop()
        assert handled, "the batch in flight was handled before the consumer stopped"
