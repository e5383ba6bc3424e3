"""The Kafka broker (a single node, private to this test) restarted mid-load.

While the broker is down the gate cannot publish uplink frames (the client gets a retriable
INTERNAL_ERROR or no answer, and resends with the same client_msg_id), the consumers cannot
fetch or commit, and the producers of msg/fanout cannot publish. When it is back everything
reconnects by itself: every message is acked in the end, stored once with its acked
server_msg_id and in both inboxes in order (DESIGN invariants 3, 4, 5).

The bus's request timeout (5 s) is shorter than the restart (15-45 s here), so records wait
longer than it for a partition leader and aiokafka expires their batches — which burns
their sequence numbers, and the broker then answers OutOfOrderSequenceNumber to every later
batch of those partitions (bus/kafka.py's docstring). Before the bus replaced its producer
on that answer, this test lost acked messages: fan-out records were dead-lettered and the
gate refused every later send of the affected conversations.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.faults import assert_clean, run_under_load
from tests.chaos.services import private_services
from tests.consumers.conftest import open_real_system

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.mongo, pytest.mark.timeout(420)]


async def test_kafka_restarted_under_load_loses_nothing(
    tmp_path: Path, redis_url: str, mongo_url: str
) -> None:
    async with (
        private_services(tmp_path, kafka_nodes=1) as services,
        open_real_system(
            services.kafka_bootstrap, redis_url, mongo_url, request_timeout_ms=5_000
        ) as system,
    ):
        run = await run_under_load(system, lambda: services.restart("kafka"))
        assert_clean(run, expected=6 * 80)
        assert run.ledger.resends > 0, "the restart should have cost some sends a retry"
