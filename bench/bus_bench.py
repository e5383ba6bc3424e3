"""Bus benchmark: records/s publish → consume through KafkaBus vs. raw aiokafka.

    uv run python -m bench.bus_bench --records 200000 --size 256

Both sides do the same work on the same broker, with the same record size, keys, partition
count and producer settings (idempotent, acks=all, same linger and batch size):

- raw: an `AIOKafkaProducer` sends chunks of records and gathers their futures; an
  `AIOKafkaConsumer` (manual commits) loops on `getmany` and commits after every round —
  the at-least-once pattern the bus implements, written by hand;
- bus: `KafkaBus.publish_batch` with the same chunks; a `KafkaBus` consumer whose handler
  counts records (per-partition batches, runner, commit per round).

Each run uses a fresh topic and group: the consumer joins first, then the producer starts,
and the clock runs from the first publish until the consumer has seen every record
("end-to-end"); "publish" is the time until the last record was acknowledged. Runs
alternate raw/bus `--repeat` times; the table shows the median. Results go to
bench/results/bus.json. Needs the broker of `services/services.sh up` (or
KAFKA_BOOTSTRAP_SERVERS). This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bus.admin import forget
from bus.base import Outgoing, Record
from bus.kafka import KafkaBus

RESULTS = Path(__file__).parent / "results" / "bus.json"
CHUNK = 1000
LINGER_MS = 5
MAX_BATCH_SIZE = 256 * 1024


@dataclass(frozen=True)
class Run:
    kind: str
    publish_s: float
    end_to_end_s: float
    records: int

    @property
    def publish_rps(self) -> float:
        return self.records / self.publish_s

    @property
    def end_to_end_rps(self) -> float:
        return self.records / self.end_to_end_s


class Counter:
    """Counts consumed records and wakes the waiter when the target is reached."""

    def __init__(self, target: int) -> None:
        self.seen = 0
        self.target = target
        self.done = asyncio.Event()

    def add(self, n: int) -> None:
        self.seen += n
        if self.seen >= self.target:
            self.done.set()


def payloads(records: int, size: int) -> list[tuple[bytes, bytes]]:
    value = os.urandom(size)
    return [(f"user-{i % 1000}".encode(), value) for i in range(records)]


async def timed(
    publish: Callable[[Sequence[tuple[bytes, bytes]]], Awaitable[None]],
    data: list[tuple[bytes, bytes]],
    counter: Counter,
) -> tuple[float, float]:
    start = time.perf_counter()
    for i in range(0, len(data), CHUNK):
        await publish(data[i : i + CHUNK])
    published = time.perf_counter()
    await asyncio.wait_for(counter.done.wait(), timeout=600)
    return published - start, time.perf_counter() - start


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, event: asyncio.Event) -> None:
        self._event = event

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._event.set()


async def run_raw(bootstrap: str, topic: str, data: list[tuple[bytes, bytes]], batch: int) -> Run:
    counter = Counter(len(data))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=LINGER_MS,
        max_batch_size=MAX_BATCH_SIZE,
    )
    group = f"bench-raw-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await producer.start()
    await consumer.start()
    assigned = asyncio.Event()
    consumer.subscribe([topic], listener=_Assigned(assigned))

    async def consume() -> None:
        while not counter.done.is_set():
            fetched = await consumer.getmany(timeout_ms=500, max_records=batch)
            if not fetched:
                continue
            offsets = {}
            for tp, records in fetched.items():
                counter.add(len(records))
                offsets[KafkaTopicPartition(tp.topic, tp.partition)] = records[-1].offset + 1
            await consumer.commit(offsets)

    async def publish(chunk: Sequence[tuple[bytes, bytes]]) -> None:
        futures = [await producer.send(topic, value, key=key) for key, value in chunk]
        await asyncio.gather(*futures)

    task = asyncio.create_task(consume())
    # Join the group before the clock starts, as the bus consumer does in start().
    await asyncio.wait_for(assigned.wait(), timeout=60)
    try:
        publish_s, total_s = await timed(publish, data, counter)
    finally:
        await task
        await consumer.stop()
        await producer.stop()
        await forget(bootstrap, groups=[group])
    return Run("raw aiokafka", publish_s, total_s, len(data))


async def run_bus(bootstrap: str, topic: str, data: list[tuple[bytes, bytes]], batch: int) -> Run:
    counter = Counter(len(data))
    bus = KafkaBus(bootstrap, linger_ms=LINGER_MS, max_batch_size=MAX_BATCH_SIZE)
    await bus.start()

    async def handle(records: Sequence[Record]) -> None:
        counter.add(len(records))

    group = f"bench-bus-{uuid.uuid4().hex[:8]}"
    consumer = bus.consumer(group, [topic], handle, batch_max=batch)
    await consumer.start()

    async def publish(chunk: Sequence[tuple[bytes, bytes]]) -> None:
        await bus.publish_batch(Outgoing(topic, value, key=key) for key, value in chunk)

    try:
        publish_s, total_s = await timed(publish, data, counter)
    finally:
        await consumer.stop()
        await bus.stop()
        await forget(bootstrap, groups=[group])
    return Run("KafkaBus", publish_s, total_s, len(data))


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    data = payloads(args.records, args.size)
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    await admin.start()
    topics: list[str] = []
    runs: list[Run] = []
    try:
        for _ in range(args.repeat):
            for runner in (run_raw, run_bus):
                topic = f"bench.bus.{uuid.uuid4().hex[:10]}"
                await admin.create_topics([NewTopic(topic, args.partitions, 1)])
                topics.append(topic)
                run = await runner(args.bootstrap, topic, data, args.batch)
                runs.append(run)
                print(
                    f"  {run.kind:13} publish {run.publish_rps:>10,.0f} rec/s   "
                    f"end-to-end {run.end_to_end_rps:>10,.0f} rec/s",
                    flush=True,
                )
    finally:
        if topics:
            await admin.delete_topics(topics)
        await admin.close()

    summary: dict[str, dict[str, float]] = {}
    for kind in ("raw aiokafka", "KafkaBus"):
        mine = [r for r in runs if r.kind == kind]
        summary[kind] = {
            "publish_rps": statistics.median(r.publish_rps for r in mine),
            "end_to_end_rps": statistics.median(r.end_to_end_rps for r in mine),
        }
    raw, bus = summary["raw aiokafka"], summary["KafkaBus"]
    return {
        "command": "uv run python -m bench.bus_bench " + " ".join(args.argv),
        "records": args.records,
        "size": args.size,
        "partitions": args.partitions,
        "batch": args.batch,
        "repeat": args.repeat,
        "linger_ms": LINGER_MS,
        "max_batch_size": MAX_BATCH_SIZE,
        "machine": machine(),
        "runs": [
            {**asdict(r), "publish_rps": r.publish_rps, "e2e_rps": r.end_to_end_rps} for r in runs
        ],
        "median": summary,
        "bus_vs_raw": {
            "publish": bus["publish_rps"] / raw["publish_rps"],
            "end_to_end": bus["end_to_end_rps"] / raw["end_to_end_rps"],
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bus_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=256, help="value size in bytes")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--batch", type=int, default=500, help="max records per consumer batch")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    print(
        f"{args.records:,} records of {args.size} B, {args.partitions} partitions, "
        f"{args.repeat} alternating runs each, broker {args.bootstrap}"
    )
    result = asyncio.run(bench(args))
    print()
    print(f"{'':14}{'publish rec/s':>15}{'end-to-end rec/s':>19}")
    for kind, figures in result["median"].items():
        print(f"{kind:14}{figures['publish_rps']:>15,.0f}{figures['end_to_end_rps']:>19,.0f}")
    ratio = result["bus_vs_raw"]
    print(f"{'bus / raw':14}{ratio['publish']:>15.1%}{ratio['end_to_end']:>19.1%}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
