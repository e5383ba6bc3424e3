"""`KafkaBus.start` against a broker that is not there: it fails and leaves nothing open."""

from __future__ import annotations

import gc
import socket

import pytest
from aiokafka.errors import KafkaConnectionError

from bus.kafka import KafkaBus


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_failed_start_raises_and_closes_its_producer() -> None:
    bus = KafkaBus(f"127.0.0.1:{_closed_port()}", client_id="cbtest", request_timeout_ms=1_000)
    with pytest.raises(KafkaConnectionError):
        await bus.start()
    # An unclosed producer warns ("Unclosed AIOKafkaProducer") when collected; warnings are
    # errors in this suite, so collecting now makes a leak fail this test and not a later one.
    gc.collect()
    await bus.stop()  # nothing to stop: no error either
