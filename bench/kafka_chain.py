"""A bare three-hop Kafka chain in Python: the baseline a c2c message's path is set beside.

    source → hop 1 → relay → hop 2 → relay → hop 3 → sink

A c2c message crosses several hops (gate → ``im.up.msg`` → msg → ``im.log.msg`` and
``im.fanout`` → fanout → ``im.log.user`` and the gate's topic → gate); this chain is the
same pattern with nothing but Kafka in it, so its figures bound what any such path can do
on the broker and machine of the run. Each stage is a process of its own, as the roles are
deployed: the **source** produces `RECORD_BYTES`-byte records open-loop at the step's rate;
each **relay** is a consumer-group member (manual commits) that fetches a batch
(``getmany``), produces every record to the next topic, waits for the acks (``acks=all``),
commits the batch and only then fetches again; the **sink** is a member that fetches,
takes each record's latency and commits per batch. The producers use the ``[kafka]
linger_ms`` setting, as the system under test does, and, like `bus.kafka.KafkaBus`, no
idempotence; the consumers the bus's fetch settings.

Record *i* of a step is due at ``t0 + i / rate`` and carries that due time: end-to-end
latency runs from it to the sink's fetch (a late source is charged, not hidden). A step
keeps up when the sink got at least `bench.stats.KEEPS_UP_SHARE` of the records within the
drain time; the ramp stops after a step that did not, or whose p99 passed
`RAMP_STOP_P99_MS`. Figures: the highest rate kept up with p99 ≤ 100 ms, and the saturation
rate — the most records per second the sink received in a step (records / (last arrival -
first arrival): the offered rate while the chain keeps up, its throughput past that).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import struct
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rich.progress import Progress

from bench.rig import START_TIMEOUT_S, STOP_TIMEOUT_S, BenchError, answer, ask
from bench.stats import KEEPS_UP_SHARE, P99_BOUND_MS, latency_ms
from bus.admin import forget
from coffeebus.settings import load_settings

log = logging.getLogger(__name__)

HOPS = 3
RECORD_BYTES = 200
#: The head of a record's value: its due time (perf_counter seconds) and its step.
STAMP = struct.Struct(">dI")
#: Records per fetch (`bus.base.DEFAULT_BATCH_MAX`'s order of magnitude).
BATCH_MAX = 500
FETCH_MAX_WAIT_MS = 500
POLL_TIMEOUT_MS = 1000
RAMP_STOP_P99_MS = 2000.0
#: Keys the source spreads records over (so over every partition).
KEYS = 1000
SINK_POLL_S = 0.1
#: The unmeasured first step: its rate (records/s) and seconds.
WARM_UP_RATE = 500.0
WARM_UP_S = 2.0


@dataclass(frozen=True)
class ChainRamp:
    """The rates (records/s) of the ramp, the seconds of each step and its drain."""

    rates: tuple[float, ...]
    step_s: float
    drain_s: float


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, event: asyncio.Event) -> None:
        self._event = event

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            self._event.set()


def _producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=load_settings().kafka.linger_ms,
        max_batch_size=256 * 1024,
    )


async def _member(bootstrap: str, group: str, topic: str) -> tuple[AIOKafkaConsumer, asyncio.Event]:
    """A started consumer-group member of `group` on `topic`, and the event set once it has
    partitions (its loop's first fetch joins the group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    assigned = asyncio.Event()
    consumer.subscribe([topic], listener=_Assigned(assigned))
    return consumer, assigned


def _offsets(fetched: dict[Any, list[Any]]) -> dict[KafkaTopicPartition, int]:
    return {
        KafkaTopicPartition(tp.topic, tp.partition): records[-1].offset + 1
        for tp, records in fetched.items()
    }


class Source:
    """Produces a step's records open-loop."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._pad = b"x" * (RECORD_BYTES - STAMP.size)

    async def step(self, rate: float, seconds: float, step: int) -> dict[str, Any]:
        total = max(1, round(rate * seconds))
        futures = []
        t0 = time.perf_counter() + 0.05
        sent = 0
        while sent < total:
            # Everything due by now goes out in this wake-up (the loop's sleep granularity
            # must not cap the rate).
            due_count = min(total, int((time.perf_counter() - t0) * rate) + 1)
            while sent < due_count:
                value = STAMP.pack(t0 + sent / rate, step) + self._pad
                key = f"k{sent % KEYS}".encode()
                futures.append(await self._producer.send(self._topic, value, key=key))
                sent += 1
            if sent < total:
                await asyncio.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))
        send_s = time.perf_counter() - t0
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = sum(isinstance(r, BaseException) for r in results)
        return {"t0": t0, "sent": total - failed, "failed": failed, "send_s": send_s}


async def _relay(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, topic: str) -> None:
    """Fetch a batch, produce it to `topic`, wait for the acks, commit, fetch again."""
    while True:
        fetched = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=BATCH_MAX)
        if not fetched:
            continue
        futures = [
            await producer.send(topic, r.value, key=r.key)
            for records in fetched.values()
            for r in records
        ]
        await asyncio.gather(*futures)
        await consumer.commit(_offsets(fetched))


class Sink:
    """Takes every record's end-to-end latency, per step; commits per batch."""

    def __init__(self) -> None:
        self.latencies: defaultdict[int, list[float]] = defaultdict(list)
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}

    async def run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            fetched = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=BATCH_MAX)
            now = time.perf_counter()
            for records in fetched.values():
                for r in records:
                    due, step = STAMP.unpack_from(r.value)
                    self.latencies[step].append(now - due)
                    self.first.setdefault(step, now)
                    self.last[step] = now
            if fetched:
                await consumer.commit(_offsets(fetched))

    def take(self, step: int) -> dict[str, Any]:
        """The latencies of `step` seen since the last take, its first and last arrival."""
        return {
            "latencies": self.latencies.pop(step, []),
            "first": self.first.get(step),
            "last": self.last.get(step),
        }


def _group(topic: str) -> str:
    """The consumer group of the stage that reads `topic`."""
    return f"bench-chain-{topic}"


async def _stage(conn: Connection, role: str, bootstrap: str, topics: list[str]) -> None:
    """One stage: ``source`` (to topics[0]), ``relay`` (topics[0] → topics[1]) or ``sink``
    (from topics[0]); answers the driver's requests until ``("stop",)``."""
    group = _group(topics[0])
    producer = _producer(bootstrap) if role in ("source", "relay") else None
    if producer is not None:
        await producer.start()
    consumer, assigned = None, None
    if role in ("relay", "sink"):
        consumer, assigned = await _member(bootstrap, group, topics[0])
    source = Source(producer, topics[0]) if role == "source" and producer else None
    sink = Sink() if role == "sink" else None
    loop: asyncio.Task[None] | None = None
    if role == "relay" and consumer is not None and producer is not None:
        loop = asyncio.create_task(_relay(consumer, producer, topics[1]))
    elif sink is not None and consumer is not None:
        loop = asyncio.create_task(sink.run(consumer))
    if assigned is not None:
        async with asyncio.timeout(START_TIMEOUT_S):
            await assigned.wait()
    conn.send((0, ("ready",)))
    stop_id = 0
    try:
        while True:
            request = await asyncio.to_thread(conn.recv)
            request_id, name, args = request[0], request[1], request[2:]
            if loop is not None and loop.done():
                conn.send((request_id, ("error", f"{role}: {loop.exception()!r}")))
                continue
            if name == "stop":
                stop_id = request_id
                break
            if name == "step" and source is not None:
                conn.send((request_id, await source.step(*args)))
            elif name == "take" and sink is not None:
                conn.send((request_id, sink.take(*args)))
            else:
                conn.send((request_id, ("error", f"{role}: unknown request {name!r}")))
    finally:
        if loop is not None:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()
    conn.send((stop_id, ("stopped",)))


def stage(conn: Connection, role: str, bootstrap: str, topics: list[str]) -> None:
    """Process entry point of one stage."""
    import uvloop  # noqa: PLC0415 - the loop the roles run on

    logging.basicConfig(level=logging.WARNING)
    uvloop.run(_stage(conn, role, bootstrap, topics))


def chain_step(
    offered: float,
    source: Mapping[str, Any],
    latencies: Sequence[float],
    arrivals: tuple[float | None, float | None],
) -> dict[str, Any]:
    """One step of the ramp from the source's answer (``sent``, ``send_s``) and the sink's
    latencies and (first, last) arrival: rates, end-to-end latency, keeps-up."""
    sent, send_s = source["sent"], source["send_s"]
    first, last = arrivals
    delivered = len(latencies)
    e2e = latency_ms(latencies)
    return {
        "offered_per_s": offered,
        "sent_per_s": round(sent / send_s, 1) if send_s > 0 else 0.0,
        # From the first arrival to the last: the offered rate while the chain keeps up,
        # the rate it moves records at past saturation.
        "delivered_per_s": (
            round((delivered - 1) / (last - first), 1)
            if first is not None and last is not None and last > first
            else 0.0
        ),
        "sent": sent,
        "delivered": delivered,
        "end_to_end_ms": e2e,
        "keeps_up": sent > 0 and delivered >= KEEPS_UP_SHARE * sent,
    }


def summary(steps: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """The highest offered rate of a step that kept up with p99 ≤ 100 ms (0: none did),
    and the saturation rate: the highest delivered rate of any step."""
    good = [
        s["offered_per_s"]
        for s in steps
        if s["keeps_up"]
        and s["end_to_end_ms"]["p99"] is not None
        and s["end_to_end_ms"]["p99"] <= P99_BOUND_MS
    ]
    return max(good, default=0.0), max((s["delivered_per_s"] for s in steps), default=0.0)


class _Stages:
    """The chain's processes, stopped (or killed) on the way out."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[SpawnProcess, Connection]] = {}

    async def start(self, bootstrap: str, topics: list[str]) -> None:
        ctx = multiprocessing.get_context("spawn")
        roles = {
            "source": ("source", [topics[0]]),
            **{f"relay{n}": ("relay", topics[n - 1 : n + 1]) for n in range(1, HOPS)},
            "sink": ("sink", [topics[-1]]),
        }
        for name, (role, mine) in roles.items():
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=stage, args=(theirs, role, bootstrap, mine), name=f"bench-chain-{name}"
            )
            proc.start()
            theirs.close()
            self.held[name] = (proc, ours)
        for name, (_, conn) in self.held.items():
            await answer(conn, START_TIMEOUT_S, f"chain {name} start")

    async def ask(self, name: str, *request: Any, wait_s: float = 120.0) -> Any:
        return await ask(self.held[name][1], request, wait_s)

    async def stop(self) -> None:
        for proc, conn in self.held.values():
            if proc.is_alive():
                try:
                    await ask(conn, ("stop",), STOP_TIMEOUT_S)
                except (BenchError, OSError, EOFError):
                    proc.kill()
        for proc, _ in self.held.values():
            await asyncio.to_thread(proc.join, STOP_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join)
        self.held.clear()


async def _step(
    stages: _Stages, rate: float, seconds: float, drain_s: float, index: int
) -> dict[str, Any]:
    sent = await stages.ask("source", "step", rate, seconds, index)
    latencies: list[float] = []
    deadline = time.perf_counter() + drain_s
    while True:
        got = await stages.ask("sink", "take", index)
        latencies.extend(got["latencies"])
        if len(latencies) >= sent["sent"] or time.perf_counter() > deadline:
            break
        await asyncio.sleep(SINK_POLL_S)
    return chain_step(rate, sent, latencies, (got["first"], got["last"]))


async def ramp(
    bootstrap: str, plan: ChainRamp, partitions: int, progress: Progress
) -> dict[str, Any]:
    """The chain on fresh topics of `partitions` partitions, stepped up through the rates
    of `plan`; its figures for `latest.json`'s baselines."""
    task = progress.add_task("baseline kafka chain", total=len(plan.rates))
    topics = [f"bench.chain.{uuid.uuid4().hex[:10]}.{n}" for n in range(1, HOPS + 1)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    stages = _Stages()
    steps: list[dict[str, Any]] = []
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
        await stages.start(bootstrap, topics)
        # Not measured: the first records of a fresh topic pay its producers' metadata
        # requests and its consumers' offset look-ups (hundreds of ms).
        await _step(stages, WARM_UP_RATE, WARM_UP_S, START_TIMEOUT_S, 0)
        for index, rate in enumerate(plan.rates, start=1):
            progress.update(task, description=f"baseline kafka chain {rate:,.0f}/s")
            step = await _step(stages, rate, plan.step_s, plan.drain_s, index)
            steps.append(step)
            progress.advance(task)
            p99 = step["end_to_end_ms"]["p99"]
            if not step["keeps_up"] or p99 is None or p99 > RAMP_STOP_P99_MS:
                break
    finally:
        await stages.stop()
        await admin.delete_topics(topics)
        await admin.close()
        await forget(bootstrap, groups=[_group(t) for t in topics])
    progress.update(task, completed=len(plan.rates))
    best, saturation = summary(steps)
    return {
        "kafka_chain_max_rate_p99_100ms": best,
        "kafka_chain_saturation_per_s": saturation,
        "kafka_chain": {
            "hops": HOPS,
            "record_bytes": RECORD_BYTES,
            "partitions": partitions,
            "linger_ms": load_settings().kafka.linger_ms,
            "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
            "batch_max": BATCH_MAX,
            "step_s": plan.step_s,
            "drain_s": plan.drain_s,
            "steps": steps,
        },
    }
