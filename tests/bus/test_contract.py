"""The bus contract, run against MemoryBus and against KafkaBus on the real broker.

Every test takes the `harness` fixture (tests/bus/conftest.py), so each runs twice: once
in memory, once on Kafka. Waiting is always on an event with a timeout, never a sleep.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence

import pytest

from bus.base import (
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_GROUP,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_TOPIC,
    BatchLinger,
    Consumer,
    Handler,
    Outgoing,
    Record,
    Reject,
    RetriableError,
    RetryPolicy,
    TopicPartition,
    UnknownTopicError,
    dlq_topic,
)
from bus.partitioner import partition_for_key
from bus.runner import hold
from tests.bus.harness import FAST_RETRY, BusHarness

WAIT_S = 30.0

Hook = Callable[[Sequence[Record]], Awaitable[None]]


class Seen:
    """Handlers that log what they handled (tagged by member) and a way to await the log."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Record]] = []
        self.batches: list[Sequence[Record]] = []
        self._changed = asyncio.Event()

    def handler(self, member: str = "", hook: Hook | None = None) -> Handler:
        async def handle(records: Sequence[Record]) -> None:
            if hook is not None:
                await hook(records)
            self.batches.append(records)
            self.log.extend((member, record) for record in records)
            self._changed.set()

        return handle

    def records(self, member: str | None = None) -> list[Record]:
        return [r for m, r in self.log if member is None or m == member]

    def values(self, member: str | None = None) -> list[bytes]:
        return [r.value for r in self.records(member)]

    async def wait(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


async def started(consumer: Consumer) -> Consumer:
    async with asyncio.timeout(WAIT_S):
        await consumer.start()
    return consumer


def keys_covering(partitions: int, per_partition: int) -> list[bytes]:
    """Keys such that every partition gets exactly `per_partition` of them."""
    chosen: dict[int, list[bytes]] = defaultdict(list)
    for i in itertools.count():
        key = f"user-{i}".encode()
        slot = chosen[partition_for_key(key, partitions)]
        if len(slot) < per_partition:
            slot.append(key)
        if sum(map(len, chosen.values())) == partitions * per_partition:
            return [key for slot in chosen.values() for key in slot]
    raise AssertionError("unreachable")


def assert_per_key_order(records: Sequence[Record], expected: dict[bytes, int]) -> int:
    """Check the per-key order contract; returns how many deliveries were redeliveries.

    For every key, the values (0, 1, 2, …) must be handled in order: each one is either the
    successor of the previous one, or a *rewind* to a value already handled — the start of an
    at-least-once redelivery of what the previous owner had not committed — after which the
    run continues in order again. No value is ever skipped and every value arrives.
    """
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for record in records:
        assert record.key is not None
        by_key[record.key].append(int(record.value))
    redelivered = 0
    for key, count in expected.items():
        values = by_key[key]
        previous, highest = -1, -1
        for value in values:
            if value != previous + 1:
                assert value <= highest, f"key {key!r}: {value} after {previous} skips values"
                redelivered += 1
            elif value <= highest:
                redelivered += 1
            previous, highest = value, max(highest, value)
        assert set(values) == set(range(count)), f"key {key!r}: values missing"
    assert set(by_key) == set(expected)
    return redelivered


async def test_round_trip_keeps_key_value_and_headers(harness: BusHarness) -> None:
    bus = harness.bus
    topic = await harness.topic(partitions=3)
    meta = await bus.publish(topic, b"hello", key=b"conv-1", headers=(("trace", b"t-1"),))
    assert meta.partition == await bus.partition_for(topic, b"conv-1")
    assert await bus.partitions_for(topic) == 3

    seen = Seen()
    consumer = await started(bus.consumer(harness.group(), [topic], seen.handler()))
    await seen.wait(lambda: len(seen.log) == 1)
    await consumer.stop()

    (record,) = seen.records()
    assert (record.topic, record.partition, record.offset) == (topic, meta.partition, meta.offset)
    assert record.key == b"conv-1"
    assert record.value == b"hello"
    assert record.headers == (("trace", b"t-1"),)
    assert record.header("trace") == b"t-1"
    assert record.timestamp_ms > 0


async def test_unknown_topics_are_refused(harness: BusHarness) -> None:
    with pytest.raises(UnknownTopicError):
        await harness.bus.publish("test.never-declared", b"x")
    with pytest.raises(UnknownTopicError):
        await harness.bus.partitions_for("test.never-declared")
    with pytest.raises(UnknownTopicError):
        await harness.bus.consumer(
            harness.group(), ["test.never-declared"], Seen().handler()
        ).start()


async def test_enqueued_records_keep_their_order_before_they_are_durable(
    harness: BusHarness,
) -> None:
    """`enqueue` returns once a record has its place: records enqueued one after another,
    none awaited yet, are stored and consumed in that order."""
    bus = harness.bus
    topic = await harness.topic(partitions=2)
    pending = [await bus.enqueue(topic, str(n).encode(), key=b"conv-1") for n in range(50)]
    metas = [await durable for durable in pending]
    assert {meta.partition for meta in metas} == {await bus.partition_for(topic, b"conv-1")}
    assert [meta.offset for meta in metas] == list(range(metas[0].offset, metas[0].offset + 50))
    with pytest.raises(UnknownTopicError):
        await bus.enqueue("test.never-declared", b"x")

    seen = Seen()
    consumer = await started(bus.consumer(harness.group(), [topic], seen.handler()))
    await seen.wait(lambda: len(seen.log) == 50)
    await consumer.stop()
    assert seen.values() == [str(n).encode() for n in range(50)]


async def test_publish_batch_keeps_per_key_order_across_partitions(harness: BusHarness) -> None:
    bus = harness.bus
    topic = await harness.topic(partitions=4)
    keys = keys_covering(4, per_partition=3)
    rounds = 40
    metas = await bus.publish_batch(
        Outgoing(topic, str(n).encode(), key=key) for n in range(rounds) for key in keys
    )
    assert len(metas) == rounds * len(keys)
    for meta, (_, key) in zip(metas, itertools.product(range(rounds), keys), strict=True):
        assert meta.partition == partition_for_key(key, 4)

    seen = Seen()
    group = harness.group()
    members = [bus.consumer(group, [topic], seen.handler(m), batch_max=7) for m in "ab"]
    for member in members:
        await started(member)
    await seen.wait(lambda: len(seen.log) >= rounds * len(keys))
    for member in members:
        await member.stop()

    assert assert_per_key_order(seen.records(), dict.fromkeys(keys, rounds)) == 0
    # A batch is one partition's records, consecutive offsets, at most batch_max of them.
    for batch in seen.batches:
        assert len({r.partition for r in batch}) == 1
        assert [r.offset for r in batch] == list(range(batch[0].offset, batch[-1].offset + 1))
        assert len(batch) <= 7


async def test_per_key_order_while_members_join_and_leave(harness: BusHarness) -> None:
    """Members join and leave while records keep coming: every key stays in order.

    One member starts, a producer publishes continuously, two more members join, then those
    two stop again. The contract (`assert_per_key_order`) allows redelivery only as a rewind
    to an uncommitted tail, never reordering, gaps or losses. These handoffs are graceful —
    a revoked member finishes and commits its in-flight batch before the partition moves —
    so the test also demands zero redeliveries: without that wait, the new owner restarts
    from an older commit and this fails.
    """
    bus = harness.bus
    partitions = 6
    topic = await harness.topic(partitions=partitions)
    keys = keys_covering(partitions, per_partition=2)
    group = harness.group()
    seen = Seen()
    consumers = {m: bus.consumer(group, [topic], seen.handler(m), batch_max=20) for m in "abc"}
    counts: Counter[bytes] = Counter()
    producing = True

    async def produce() -> None:
        while producing:
            await bus.publish_batch(
                Outgoing(topic, str(counts[key]).encode(), key=key) for key in keys
            )
            counts.update(keys)
            await asyncio.sleep(0.002)  # pacing the load, not waiting for anything

    await started(consumers["a"])
    producer = asyncio.create_task(produce())
    try:
        await seen.wait(lambda: len(seen.log) >= 100)
        await asyncio.gather(started(consumers["b"]), started(consumers["c"]))
        assert consumers["b"].assigned()
        assert consumers["c"].assigned()
        await seen.wait(lambda: bool(seen.records("b")) and bool(seen.records("c")))
        await asyncio.gather(consumers["b"].stop(), consumers["c"].stop())
        # The first member takes every partition back and goes on with all of them.
        mark = len(seen.log)
        await seen.wait(
            lambda: {r.partition for m, r in seen.log[mark:] if m == "a"} == set(range(partitions))
        )
    finally:
        producing = False
        await producer
    total = sum(counts.values())
    await seen.wait(lambda: len({(r.key, r.value) for r in seen.records()}) == total)
    await consumers["a"].stop()

    assert assert_per_key_order(seen.records(), dict(counts)) == 0


async def test_member_dying_mid_batch_gets_its_records_redelivered(harness: BusHarness) -> None:
    bus = harness.bus
    topic = await harness.topic(partitions=1)
    await bus.publish_batch(Outgoing(topic, str(n).encode(), key=b"k") for n in range(20))
    group = harness.group()
    dying = asyncio.Event()

    async def die_at_ten(records: Sequence[Record]) -> None:
        if any(r.value == b"10" for r in records):
            dying.set()
            await asyncio.Event().wait()  # hangs until the member is killed

    seen = Seen()
    first = await started(bus.consumer(group, [topic], seen.handler("a", die_at_ten), batch_max=5))
    async with asyncio.timeout(WAIT_S):
        await dying.wait()
    await first.abort()
    handled_before = {int(v) for v in seen.values("a")}
    assert 10 not in handled_before

    await started(bus.consumer(group, [topic], seen.handler("b"), batch_max=5))
    await seen.wait(lambda: {int(v) for v in seen.values()} == set(range(20)))
    redelivered = [int(v) for v in seen.values("b")]
    # The new owner starts at the committed offset: after a batch the first member finished
    # (the last one, or an earlier one when the commit interval held the last commit back),
    # so the batch it died in is handled again, in order; nothing is lost.
    assert redelivered, "nothing was handed to the new owner"
    assert redelivered[0] <= max(handled_before, default=-1) + 1
    assert redelivered == list(range(redelivered[0], 20))


async def test_poison_record_goes_to_the_dlq_and_the_partition_moves_on(
    harness: BusHarness,
) -> None:
    bus = harness.bus
    topic = await harness.topic(partitions=2)

    async def reject_poison(records: Sequence[Record]) -> None:
        for record in records:
            if record.value == b"poison":
                raise Reject("cannot decode")
            if record.value == b"crash":
                raise ValueError("handler bug")

    group = harness.group()
    seen, dead = Seen(), Seen()
    await started(bus.consumer(group, [topic], seen.handler(hook=reject_poison)))
    await started(bus.consumer(harness.group(), [dlq_topic(topic)], dead.handler()))
    values = [b"ok0", b"ok1", b"poison", b"ok3", b"crash", b"ok5"]
    metas = await bus.publish_batch(
        Outgoing(topic, value, key=b"conv", headers=(("trace", value),)) for value in values
    )
    await seen.wait(lambda: {b"ok0", b"ok1", b"ok3", b"ok5"} <= set(seen.values()))
    await dead.wait(lambda: len(dead.log) == 2)
    assert b"poison" not in seen.values()
    assert b"crash" not in seen.values()

    poison, crash = dead.records()
    assert (poison.value, poison.key) == (b"poison", b"conv")
    assert poison.header("trace") == b"poison"
    assert poison.header(DLQ_ERROR) == b"cannot decode"
    assert poison.header(DLQ_ERROR_TYPE) == b"bus.base.Reject"
    assert poison.header(DLQ_TOPIC) == topic.encode()
    assert poison.header(DLQ_PARTITION) == str(metas[2].partition).encode()
    assert poison.header(DLQ_OFFSET) == str(metas[2].offset).encode()
    assert poison.header(DLQ_GROUP) == group.encode()
    assert crash.header(DLQ_ERROR) == b"handler bug"
    assert crash.header(DLQ_ERROR_TYPE) == b"builtins.ValueError"

    # The partition moved on: later records flow, and only poison reaches the DLQ.
    await bus.publish(topic, b"ok6", key=b"conv")
    await bus.publish(topic, b"poison", key=b"conv")
    await seen.wait(lambda: b"ok6" in seen.values())
    await dead.wait(lambda: len(dead.log) == 3)
    assert [r.value for r in dead.records()] == [b"poison", b"crash", b"poison"]


@pytest.mark.parametrize(
    "error",
    [
        RetriableError("store busy"),
        ConnectionResetError("peer went away"),
    ],
    ids=["RetriableError", "ConnectionResetError"],
)
async def test_transient_errors_are_retried_without_skipping(
    harness: BusHarness, error: Exception
) -> None:
    bus = harness.bus
    topic = await harness.topic(partitions=1)
    attempts: Counter[bytes] = Counter()

    async def flaky(records: Sequence[Record]) -> None:
        for record in records:
            attempts[record.value] += 1
            if record.value == b"flaky" and attempts[b"flaky"] <= 2:
                raise error
            if record.value == b"poison":
                raise Reject("poison")

    seen, dead = Seen(), Seen()
    await started(
        bus.consumer(harness.group(), [topic], seen.handler(hook=flaky), retry=FAST_RETRY)
    )
    await started(bus.consumer(harness.group(), [dlq_topic(topic)], dead.handler()))
    await bus.publish(topic, b"flaky", key=b"k")
    await bus.publish(topic, b"after", key=b"k")
    await seen.wait(lambda: b"after" in seen.values())
    assert attempts[b"flaky"] == 3
    assert seen.values() == [b"flaky", b"after"]

    # Nothing was dead-lettered: the first DLQ record is the poison published now.
    await bus.publish(topic, b"poison", key=b"k")
    await dead.wait(lambda: len(dead.log) >= 1)
    assert [r.value for r in dead.records()] == [b"poison"]


async def test_exhausted_retries_dead_letter_the_record(harness: BusHarness) -> None:
    bus = harness.bus
    topic = await harness.topic(partitions=1)
    attempts: Counter[bytes] = Counter()

    async def always_down(records: Sequence[Record]) -> None:
        for record in records:
            attempts[record.value] += 1
            if record.value == b"doomed":
                raise RetriableError("still down")

    seen, dead = Seen(), Seen()
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02, jitter_s=0)
    await started(
        bus.consumer(harness.group(), [topic], seen.handler(hook=always_down), retry=policy)
    )
    await started(bus.consumer(harness.group(), [dlq_topic(topic)], dead.handler()))
    await bus.publish(topic, b"doomed", key=b"k")
    await dead.wait(lambda: len(dead.log) == 1)
    await bus.publish(topic, b"next", key=b"k")
    await seen.wait(lambda: b"next" in seen.values())

    assert attempts[b"doomed"] == 3
    (letter,) = dead.records()
    assert letter.header(DLQ_ERROR) == b"still down"
    assert letter.header(DLQ_ERROR_TYPE) == b"bus.base.RetriableError"


async def test_graceful_stop_commits_what_was_handled(harness: BusHarness) -> None:
    bus = harness.bus
    topic = await harness.topic(partitions=3)
    group = harness.group()
    await bus.publish_batch(
        Outgoing(topic, f"m{n}".encode(), key=f"k{n}".encode()) for n in range(30)
    )

    seen = Seen()
    first = await started(bus.consumer(group, [topic], seen.handler("a"), batch_max=4))
    await seen.wait(lambda: len(seen.log) == 30)
    await first.stop()

    await bus.publish(topic, b"sentinel", key=b"k0")
    await started(bus.consumer(group, [topic], seen.handler("b")))
    await seen.wait(lambda: bool(seen.records("b")))
    assert seen.values("b") == [b"sentinel"]


async def test_stop_cuts_endless_retries_short_and_commits_nothing_for_them(
    harness: BusHarness,
) -> None:
    bus = harness.bus
    topic = await harness.topic(partitions=1)
    group = harness.group()
    failing = asyncio.Event()

    async def outage(records: Sequence[Record]) -> None:
        if any(r.value == b"stuck" for r in records):
            failing.set()
            raise RetriableError("database down")

    seen = Seen()
    slow = RetryPolicy(initial_backoff_s=60.0, max_backoff_s=60.0, jitter_s=0)
    first = await started(bus.consumer(group, [topic], seen.handler("a", outage), retry=slow))
    await bus.publish(topic, b"fine", key=b"k")
    await seen.wait(lambda: seen.values("a") == [b"fine"])
    await bus.publish(topic, b"stuck", key=b"k")
    async with asyncio.timeout(WAIT_S):
        await failing.wait()
        await first.stop()  # would take a minute if the backoff were not cut short

    await started(bus.consumer(group, [topic], seen.handler("b")))
    await seen.wait(lambda: bool(seen.records("b")))
    assert seen.values("b") == [b"stuck"]


async def test_hold_waits_then_commits_and_stop_cuts_it_short(harness: BusHarness) -> None:
    """`bus.runner.hold` in a handler: a short hold ends and the batch is committed; a long
    one is cut short by `stop`, which commits nothing of that batch."""
    bus = harness.bus
    topic = await harness.topic(partitions=1)
    group = harness.group()
    holding = asyncio.Event()

    async def wait_in_handler(records: Sequence[Record]) -> None:
        for record in records:
            if record.value == b"short":
                await hold(0.01)
            elif record.value == b"long":
                holding.set()
                await hold(600.0)

    seen = Seen()
    first = await started(bus.consumer(group, [topic], seen.handler("a", wait_in_handler)))
    await bus.publish(topic, b"short", key=b"k")
    await seen.wait(lambda: seen.values("a") == [b"short"])
    await bus.publish(topic, b"long", key=b"k")
    async with asyncio.timeout(WAIT_S):
        await holding.wait()
        await first.stop()  # would take ten minutes if the hold were not cut short
    assert seen.values("a") == [b"short"]

    await started(bus.consumer(group, [topic], seen.handler("b")))
    await seen.wait(lambda: bool(seen.records("b")))
    assert seen.values("b") == [b"long"]


async def test_static_member_restarts_into_its_partitions(harness: BusHarness) -> None:
    bus = harness.bus
    topic = await harness.topic(partitions=2)
    group = harness.group()
    seen = Seen()
    first = await started(
        bus.consumer(group, [topic], seen.handler("a"), static_member_id="gate-1")
    )
    assert len(first.assigned()) == 2
    await bus.publish(topic, b"before", key=b"k")
    await seen.wait(lambda: seen.values("a") == [b"before"])
    await first.stop()

    await bus.publish(topic, b"after", key=b"k")
    again = await started(
        bus.consumer(group, [topic], seen.handler("b"), static_member_id="gate-1")
    )
    assert len(again.assigned()) == 2
    await seen.wait(lambda: bool(seen.records("b")))
    assert seen.values("b") == [b"after"]
    await again.stop()


class Ownership:
    """A `PartitionListener` that logs the calls and checks them against the handler's work."""

    def __init__(self, member: str, log: list[tuple[str, str, frozenset[TopicPartition]]]) -> None:
        self.member = member
        self.log = log
        self.owned: set[TopicPartition] = set()
        self.in_flight = 0
        self.changed = asyncio.Event()

    async def wait(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        assert not self.owned & partitions
        self.owned |= partitions
        self.log.append((self.member, "assigned", partitions))
        self.changed.set()

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        # Only after the in-flight batches of the partitions are done (and committed).
        assert self.in_flight == 0
        assert partitions <= self.owned
        self.owned -= partitions
        self.log.append((self.member, "revoked", partitions))
        self.changed.set()

    def handler(self, seen: Seen) -> Handler:
        inner = seen.handler(self.member)

        async def handle(records: Sequence[Record]) -> None:
            # Never a batch of a partition the listener has not been told about.
            assert records[0].topic_partition in self.owned
            self.in_flight += 1
            try:
                await asyncio.sleep(0)  # let a rebalance try to slip in mid-batch
                await inner(records)
            finally:
                self.in_flight -= 1

        return handle


async def test_partition_listener_hears_assignments_and_revocations(
    harness: BusHarness,
) -> None:
    """Listeners learn of every ownership change: assigned before the first batch, revoked
    after the last one is committed; the owners never overlap; stop revokes, abort does not."""
    bus = harness.bus
    partitions = 4
    topic = await harness.topic(partitions=partitions)
    every = frozenset(TopicPartition(topic, p) for p in range(partitions))
    group = harness.group()
    log: list[tuple[str, str, frozenset[TopicPartition]]] = []
    seen = Seen()
    a, b = Ownership("a", log), Ownership("b", log)
    first = await started(bus.consumer(group, [topic], a.handler(seen), listener=a))
    assert a.owned == every
    assert log == [("a", "assigned", every)]

    keys = keys_covering(partitions, per_partition=1)
    await bus.publish_batch(Outgoing(topic, b"1", key=key) for key in keys)
    await seen.wait(lambda: len(seen.log) == partitions)

    second = await started(bus.consumer(group, [topic], b.handler(seen), listener=b))
    await a.wait(lambda: bool(a.owned))  # on Kafka, a may rejoin a moment after b
    assert a.owned | b.owned == every
    assert not a.owned & b.owned
    assert ("a", "revoked", every) in log

    await bus.publish_batch(Outgoing(topic, b"2", key=key) for key in keys)
    await seen.wait(lambda: len(seen.log) == 2 * partitions)
    by_member = {(r.partition, r.value): m for m, r in seen.log}
    for tp in every:
        owner = "a" if tp in a.owned else "b"
        assert by_member[(tp.partition, b"2")] == owner

    b_owned = frozenset(b.owned)
    await second.stop()
    assert log[-1] != ("b", "assigned", b_owned)
    assert ("b", "revoked", b_owned) in log
    assert not b.owned
    await a.wait(lambda: a.owned == every)  # the survivor takes everything back

    mark = len(log)
    await first.abort()
    assert log[mark:] == []  # a killed member is told nothing


async def test_a_batch_linger_lets_records_gather_into_one_batch(harness: BusHarness) -> None:
    """With `BatchLinger`, Kafka holds a fetch until enough arrived or the wait ends: two
    records published 200 ms apart reach the handler together (the wait is 5 s). The memory
    bus hands records over at once, linger or not."""
    bus = harness.bus
    topic = await harness.topic(partitions=1)
    seen = Seen()
    linger = BatchLinger(max_wait_ms=5000, min_bytes=1 << 20)
    consumer = await started(
        bus.consumer(harness.group(), [topic], seen.handler(), batch_linger=linger)
    )
    await bus.publish(topic, b"first", key=b"k")
    await asyncio.sleep(0.2)  # a gap the linger bridges; not a wait for an outcome
    await bus.publish(topic, b"second", key=b"k")
    await seen.wait(lambda: len(seen.log) == 2)
    await consumer.stop()
    if harness.kind == "kafka":
        assert [[r.value for r in batch] for batch in seen.batches] == [[b"first", b"second"]]
    else:
        assert [[r.value for r in batch] for batch in seen.batches] == [[b"first"], [b"second"]]
