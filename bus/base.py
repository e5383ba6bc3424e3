"""The bus contract: records, the `Bus` and `Consumer` protocols, and the ack-policy errors.

Two implementations satisfy it — `bus.kafka.KafkaBus` (aiokafka on a real broker) and
`bus.memory.MemoryBus` (in-process, for the embedded mode and fast tests) — and one contract
test suite (tests/bus/test_contract.py) runs against both.

Delivery model
    At-least-once. A consumer hands its handler batches of records from ONE partition, in
    offset order; the offset after the batch is committed only after the handler returned.
    Batches of different partitions may run concurrently. Per-key order follows from the
    key → partition rule (`bus.partitioner`) and from one in-flight batch per partition.

Ack policy, expressed as exceptions raised by a handler (the runner, `bus.runner`, maps them)::

    BusError                      root of everything this package raises
    ├── RetriableError            transient: retry the batch with backoff, commit nothing,
    │                             skip nothing (also: transient errors of Kafka and the
    │                             network, and those the store adapters register with
    │                             `bus.transient`, are treated the same way)
    ├── Reject(reason)            this record is poison: send it to `<topic>.dlq`
    ├── UnknownTopicError         publish/lookup of a topic the bus does not have
    └── ConsumerFailed            a consumer loop died of an error it cannot handle

Partition ownership changes are reported to an optional `PartitionListener`.

Any other exception from a handler is treated like `Reject`: the runner re-runs the batch
record by record to find which record fails, dead-letters only those, and moves on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final, Literal, NamedTuple, Protocol

import msgspec

log = logging.getLogger(__name__)

Headers = tuple[tuple[str, bytes], ...]

DLQ_SUFFIX = ".dlq"
# Headers added to a dead-lettered record (its own headers, key and value are kept as they were).
DLQ_ERROR = "dlq.error"
DLQ_ERROR_TYPE = "dlq.error_type"
DLQ_TOPIC = "dlq.topic"
DLQ_PARTITION = "dlq.partition"
DLQ_OFFSET = "dlq.offset"
DLQ_GROUP = "dlq.group"


#: Records a consumer hands its handler at most per batch, unless asked for another size.
DEFAULT_BATCH_MAX: Final = 500


def dlq_topic(topic: str) -> str:
    """Name of the dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX


class BatchLinger(msgspec.Struct, frozen=True):
    """How long a consumer lets the broker hold a fetch to fill it: up to `max_wait_ms`,
    unless `min_bytes` arrive first (Kafka's ``fetch.max.wait.ms`` and ``fetch.min.bytes``).

    For a group whose cost is per batch rather than per record — the projection, whose
    every update statement covers whatever its batch holds for one document — larger
    batches are cheaper, and a delay it can afford buys them. A group on the message path
    keeps the default: the broker answers as soon as it has anything.
    """

    max_wait_ms: int
    min_bytes: int

    def __post_init__(self) -> None:
        if self.max_wait_ms < 0 or self.min_bytes < 1:
            raise ValueError(f"invalid batch linger {self!r}")


def check_consumer_args(topics: Sequence[str], batch_max: int) -> None:
    """The argument checks every `Bus.consumer` implementation makes."""
    if batch_max < 1:
        raise ValueError("batch_max must be >= 1")
    if not topics:
        raise ValueError("a consumer needs at least one topic")


class TopicPartition(NamedTuple):
    """One partition of one topic."""

    topic: str
    partition: int


class Record(msgspec.Struct, frozen=True, gc=False):
    """A consumed record. `offset` is its position in its partition's log."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp_ms: int

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        """Value of the first header called `name`, or None."""
        for header_name, value in self.headers:
            if header_name == name:
                return value
        return None


class RecordMeta(msgspec.Struct, frozen=True, gc=False):
    """Where a published record was stored."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


class Outgoing(msgspec.Struct, frozen=True, gc=False):
    """A record to publish with `Bus.publish_batch`."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers = ()


Handler = Callable[[Sequence[Record]], Awaitable[None]]
"""Processes a batch of records of one partition, in offset order.

Must be idempotent: after a crash or a rebalance, records whose batch was not committed are
handed over again (DESIGN invariant 3).
"""


class RetryPolicy(msgspec.Struct, frozen=True):
    """How a consumer retries transient failures (see `bus.runner`).

    Backoff is exponential from `initial_backoff_s` up to `max_backoff_s`, plus up to
    `jitter_s` of random jitter. `max_attempts=None` retries forever — the right default when
    the failure is an outage of a store: skipping would lose records, and dead-lettering good
    records because a database is down would be worse. With a limit, a batch still failing
    after `max_attempts` attempts is dead-lettered like a rejected one.
    """

    max_attempts: int | None = None
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 30.0
    jitter_s: float = 0.1


class BusError(Exception):
    """Root of the errors of the bus package."""


class RetriableError(BusError):
    """A transient failure: the batch is retried with backoff, nothing is committed or skipped."""


class Reject(BusError):
    """The record cannot be processed, ever: it goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownTopicError(BusError):
    """The topic does not exist (topics are declared, never auto-created)."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"unknown topic {topic!r}: declare it in topology.yaml and apply it")
        self.topic = topic


class ConsumerFailed(BusError):
    """A consumer's loop stopped because of an error it cannot recover from."""


class PartitionListener(Protocol):
    """Told when a consumer member gains or loses partitions (`Bus.consumer(listener=...)`).

    Handlers that cache per-partition state — a seq allocator's in-memory sections, above
    all — must forget it when ownership changes, because another member may have written
    meanwhile. Both buses call, for a member:

    - `revoked(partitions)` once the member's in-flight batches of those partitions are
      handled *and committed*, before any other member is given them — on a rebalance and
      on a graceful `Consumer.stop`; never on `Consumer.abort` (a killed process keeps no
      memory to forget);
    - `assigned(partitions)` before the first batch of the new assignment is handed to the
      handler.

    Only non-empty sets are passed. A listener should not raise: an error is logged and the
    rebalance goes on (on Kafka nothing else could be done with it).
    """

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None: ...

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None: ...


async def notify_listener(
    listener: PartitionListener | None,
    event: Literal["assigned", "revoked"],
    partitions: Iterable[TopicPartition],
    *,
    group: str,
) -> None:
    """Call `listener.assigned` or `listener.revoked` with `partitions` if there are any,
    logging (not raising) what it raises — the buses' shared way to call a listener."""
    tps = frozenset(partitions)
    if listener is None or not tps:
        return
    try:
        callback = listener.assigned if event == "assigned" else listener.revoked
        await callback(tps)
    except Exception:
        log.exception("group %s: partition listener failed on %s %s", group, event, sorted(tps))


class Consumer(Protocol):
    """A member of a consumer group running a handler over its assigned partitions."""

    @property
    def group(self) -> str: ...

    async def start(self) -> None:
        """Join the group; returns once this member holds its (possibly empty) assignment."""

    async def stop(self) -> None:
        """Graceful stop: finish the in-flight batches, commit them, leave the group.

        Retry backoffs in progress are cut short: what was handled is committed, the rest is
        left to the next owner.
        """

    async def abort(self) -> None:
        """Die like a killed process: cancel in-flight batches, commit nothing, leave.

        Whatever was not committed is redelivered to the next owner of its partition.
        """

    async def join(self) -> None:
        """Wait until the consumer stops; raises `ConsumerFailed` if its loop died."""

    def assigned(self) -> frozenset[TopicPartition]:
        """The partitions this member currently owns."""


class Bus(Protocol):
    """Publish records and run consumer groups over a set of declared topics."""

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Stop the consumers created by this bus that are still running, then the producer."""

    async def publish(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers = (),
    ) -> RecordMeta:
        """Publish one record; returns once it is durable (acks=all on Kafka).

        Records with the same key go to the same partition (`bus.partitioner`); keyless
        records are spread over the partitions.
        """

    async def enqueue(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers = (),
    ) -> asyncio.Future[RecordMeta]:
        """Queue one record and return once it has its place: records enqueued one after
        another keep that order in their partition, whether or not the earlier ones are
        durable yet. The future completes when the record is durable (as `publish`) or
        fails with a `BusError`; what fails before the record is queued (an unknown topic)
        raises here. `publish` is enqueue-and-wait; this lets a caller with a stream of
        records (a gate's client connection) keep several in flight, in order.
        """

    async def publish_batch(self, items: Iterable[Outgoing]) -> list[RecordMeta]:
        """Publish many records at once and wait until all are durable.

        Records are enqueued in order (so per-partition order is the iteration order) and
        awaited together, which is what makes fan-out cheap: one round trip per broker
        batch, not per record. Fails if any record fails (some may have been stored).
        """

    async def partitions_for(self, topic: str) -> int:
        """Number of partitions of `topic`; raises `UnknownTopicError`."""

    async def partition_for(self, topic: str, key: bytes) -> int:
        """The partition `key` maps to in `topic` (same rule as the Java client)."""

    def consumer(
        self,
        group: str,
        topics: Sequence[str],
        handler: Handler,
        *,
        batch_max: int = DEFAULT_BATCH_MAX,
        batch_linger: BatchLinger | None = None,
        gather: bool = False,
        static_member_id: str | None = None,
        retry: RetryPolicy | None = None,
        listener: PartitionListener | None = None,
    ) -> Consumer:
        """A new (not yet started) member of `group` consuming `topics` with `handler`.

        `batch_max` caps the records per handler call. `batch_linger` lets the broker hold a
        fetch until it has that much to hand over (`BatchLinger`; the memory bus hands
        records over at once). `gather` lets records gather for the bus's gather window
        once a fetch brought some (Kafka: ``[kafka] gather_ms``; the memory bus hands records
        over at once): for a group on the message path, whose cost is per batch.
        `static_member_id` enables static membership (Kafka `group.instance.id`): a
        restarted member with the same id gets its partitions back without a group
        rebalance. `retry` tunes the retry policy (default: `RetryPolicy()`, retry transient
        errors forever). `listener` is told of partition assignments and revocations
        (`PartitionListener`).
        """
