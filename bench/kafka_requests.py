"""What one Kafka request costs on this machine: CPU of the client and of the broker, and time.

    uv run python -m bench.kafka_requests [--requests N]

On the services of `make services-up`, one aiokafka client (as `bus.kafka.KafkaBus` makes
them: acks=all, no idempotence) sends, one at a time and waiting for each answer:

- **produce**: one 200-byte record;
- **commit**: an offset commit of one partition (a write to ``__consumer_offsets``);
- **produce → fetch**: one record, then the fetch that a waiting consumer gets it by — one
  hop of a message's path, without the commit.

For each it prints the time per request and the CPU per request of this process and of the
broker (`bench.rig.service_pids`: every thread of the JVM; not reported for a broker
that runs elsewhere). At low rates every hop of
the message path is a batch of one, so these are what a message pays per request there
(docs/benchmarks.md, "Reading the figures"). Nothing else should run meanwhile: the broker's
CPU is the whole process's.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.rig import cpu_of, service_pids
from bus.admin import forget
from coffeebus.settings import load_settings

RECORD = b"x" * 200
PARTITIONS = 16


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Cost:
    """What one request of a kind cost, in microseconds."""

    time_us: float
    client_cpu_us: float
    #: None: the broker runs on another machine.
    broker_cpu_us: float | None


async def measure(
    name: str, count: int, brokers: list[int], one: Callable[[int], Awaitable[Any]]
) -> Cost:
    """Run `one(i)` `count` times in a row; what one of them cost."""
    broker_before = sum(cpu_of(pid) for pid in brokers)
    client_before = own_cpu()
    started = time.perf_counter()
    for i in range(count):
        await one(i)
    elapsed = time.perf_counter() - started
    per_request = elapsed / count * 1e6
    client = (own_cpu() - client_before) / count * 1e6
    broker = (
        (sum(cpu_of(pid) for pid in brokers) - broker_before) / count * 1e6 if brokers else None
    )
    print(
        f"{name:18s} {per_request:8.0f} µs/request   client CPU {client:6.0f} µs   broker CPU "
        + ("n/a (not on this machine)" if broker is None else f"{broker:6.0f} µs")
    )
    return Cost(per_request, client, broker)


async def run(count: int, bootstrap: str | None = None) -> dict[str, Cost]:
    """Measure `count` requests of each kind on `bootstrap` (default: the settings')."""
    bootstrap = bootstrap or load_settings().kafka.bootstrap_servers
    # None found: a broker that runs elsewhere, whose CPU is then not reported.
    brokers = service_pids().get("kafka", [])
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"bench.requests.{suffix}", f"bench-requests-{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-requests")
    await admin.start()
    producer: Any = None
    consumer: Any = None
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=False
        )
        await producer.start()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        await consumer.start()
        # Warm up: metadata, the group's join, the JIT's first compilations.
        for i in range(PARTITIONS * 4):
            await producer.send_and_wait(topic, RECORD, partition=i % PARTITIONS)
        while await consumer.getmany(timeout_ms=1000):
            pass
        partition = TopicPartition(topic, 0)

        async def produce(i: int) -> None:
            await producer.send_and_wait(topic, RECORD, partition=i % PARTITIONS)

        async def commit(i: int) -> None:
            await consumer.commit({partition: i + 1})

        async def produce_fetch(i: int) -> None:
            await producer.send_and_wait(topic, RECORD, partition=i % PARTITIONS)
            while not await consumer.getmany(timeout_ms=1000):
                pass

        results = {}
        for name, one in (
            ("produce", produce),
            ("commit", commit),
            ("produce → fetch", produce_fetch),
        ):
            results[name] = await measure(name, count, brokers, one)
        return results
    finally:
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()
        await admin.close()
        await forget(bootstrap, groups=[group], topics=[topic])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests of each kind")
    args = parser.parse_args()
    asyncio.run(run(args.requests))


if __name__ == "__main__":
    main()
