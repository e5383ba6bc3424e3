"""KafkaBus: the `bus.base.Bus` on a real Kafka cluster, through aiokafka.

Producer: one `AIOKafkaProducer` per bus (acks=all, so `publish` returns only once the
record is on every in-sync replica; not idempotent, see below), partitioning with
`bus.partitioner` — the Java client's murmur2 rule. Topics are never auto-created:
publishing to a topic the cluster does not have raises `UnknownTopicError` after a short
metadata wait instead of aiokafka's request-timeout-long one.

Why not aiokafka's idempotent producer: its broker-side dedupe is not needed (every consumer
tolerates a record twice, DESIGN invariant 3), and in aiokafka 0.14 it breaks on a broker
outage longer than ``request_timeout_ms``: a batch that waited that long for a partition
leader is expired, and ``MessageAccumulator._pop_batch`` assigns its sequence numbers before
failing it unsent, so every later batch to that partition gets ``OutOfOrderSequenceNumber``
for good (the broker-restart fault test: the gate refused every later send of the affected
conversations, consumer batches were dead-lettered, acked messages never reached inboxes).
Replacing the producer on that error healed the partitions but still lost fan-out records in
one run of two (not root-caused; aiokafka counts a ``DuplicateSequenceNumber`` answer as
success, which a broken sequence can cause). Without idempotence an expired batch is a plain
transient error its publisher retries, and per-partition order still holds: aiokafka has one
request in flight per broker and mutes a partition while its batch is in flight.

Consumers: one `AIOKafkaConsumer` per `KafkaConsumer`, auto-commit off, earliest offset reset,
optional static membership (`group.instance.id`). The loop::

    getmany(timeout_ms, max_records=batch_max)      # blocks without spinning when idle
    → with ``gather``, if it returned records: take what arrives within ``gather_ms``
    → one `BatchRunner.run` per partition, concurrently (bus.runner: retry / dead-letter)
    → commit the offsets the runners reached, in one request, while the loop goes on
      (at most one commit per ``commit_interval_ms``: the batches handled meanwhile are
      committed together by the next one)

A rebalance listener makes revocation clean: `on_partitions_revoked` cuts retry backoffs
short, waits for the in-flight batches and their commit, and only then lets the partitions
go — so the next owner starts exactly where this member stopped. `stop` does the same and
then leaves the group; `abort` leaves without finishing or committing anything (a crash).
aiokafka has no type hints: everything it returns is converted to the typed records of
`bus.base` here, at the boundary.

Lag (`KafkaConsumer.lag`, read by the metrics at scrape time): per owned partition, the
high watermark aiokafka learnt from its last fetch response minus the next offset this
member will hand its handler — the offset it last committed (so handled records count until
their commit, at most ``commit_interval_ms`` later), or, before its first batch of
the partition, aiokafka's fetch position (which may already be past records prefetched but
not yet handled: at most one fetch, ``max_partition_fetch_bytes``, is then under-counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from bus.base import (
    DEFAULT_BATCH_MAX,
    BatchLinger,
    BusError,
    ConsumerFailed,
    Handler,
    Headers,
    Outgoing,
    PartitionListener,
    Record,
    RecordMeta,
    RetriableError,
    RetryPolicy,
    TopicPartition,
    UnknownTopicError,
    check_consumer_args,
    notify_listener,
)
from bus.partitioner import kafka_partitioner, partition_for_key
from bus.runner import BatchRunner
from bus.transient import is_transient
from telemetry.metrics import LAG

log = logging.getLogger(__name__)

#: How many times a consumer takes what arrived within its gather window (`_gather`).
GATHER_STEPS = 3


# The producer of the consumer whose loop (and handler) is running in this context.
_consumer_producer: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "bus_kafka_consumer_producer", default=None
)


def _wrap(exc: KafkaError) -> BusError:
    """A Kafka error as the bus's own: retriable ones become `RetriableError`."""
    if is_transient(exc):
        return RetriableError(f"{type(exc).__name__}: {exc}")
    return BusError(f"{type(exc).__name__}: {exc}")


def _settle(durable: asyncio.Future[RecordMeta], sent: asyncio.Future[Any]) -> None:
    """Complete `durable` as aiokafka completed `sent`, in the bus's own types."""
    if durable.done():
        return
    if sent.cancelled():
        durable.cancel()
        return
    exc = sent.exception()
    if exc is None:
        meta = sent.result()
        durable.set_result(RecordMeta(meta.topic, meta.partition, meta.offset, meta.timestamp))
    else:
        if isinstance(exc, KafkaError):
            wrapped = _wrap(exc)
            wrapped.__cause__ = exc
            exc = wrapped
        durable.set_exception(exc)


class KafkaBus:
    """A `bus.base.Bus` on Kafka.

    Producer batching (`linger_ms`, `max_batch_size`, `compression_type`) and the consumer
    group timings are keyword arguments; the defaults suit production, tests shorten the
    group timings so that joins and rebalances take a fraction of a second.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "coffeebus",
        linger_ms: int = 0,
        max_batch_size: int = 256 * 1024,
        compression_type: str | None = None,
        request_timeout_ms: int = 30_000,
        metadata_wait_ms: int = 3_000,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        rebalance_timeout_ms: int | None = None,
        max_poll_interval_ms: int = 300_000,
        fetch_max_wait_ms: int = 500,
        max_partition_fetch_bytes: int = 1024 * 1024,
        poll_timeout_ms: int = 1_000,
        commit_while_handling: bool = True,
        commit_interval_ms: int = 100,
        gather_ms: int = 0,
        producer_per_consumer: bool = True,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._producer_config: dict[str, Any] = {
            "linger_ms": linger_ms,
            "max_batch_size": max_batch_size,
            "compression_type": compression_type,
            "request_timeout_ms": request_timeout_ms,
        }
        self._consumer_config: dict[str, Any] = {
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "rebalance_timeout_ms": rebalance_timeout_ms,
            "max_poll_interval_ms": max_poll_interval_ms,
            "fetch_max_wait_ms": fetch_max_wait_ms,
            "max_partition_fetch_bytes": max_partition_fetch_bytes,
            "request_timeout_ms": request_timeout_ms,
        }
        self._metadata_wait_s = metadata_wait_ms / 1000
        #: How long a consumer waits for one offset commit (`KafkaConsumer._commit`).
        self.commit_timeout_s = request_timeout_ms / 1000
        self.poll_timeout_ms = poll_timeout_ms
        #: Commit a batch's offsets while the next batch is fetched and handled, rather
        #: than before (`KafkaConsumer._commit_behind`).
        self.commit_while_handling = commit_while_handling
        #: The shortest time between the starts of two commits of one consumer
        #: (`KafkaConsumer._commit_loop`).
        self.commit_interval_s = commit_interval_ms / 1000
        #: How long a consumer made with ``gather=True`` lets records gather after a fetch
        #: brought some (`KafkaConsumer._gather`).
        self.gather_s = gather_ms / 1000
        #: Give each consumer a producer of its own for what its handler publishes.
        self.producer_per_consumer = producer_per_consumer
        self._producer: Any = None
        self._consumers: set[KafkaConsumer] = set()

    @property
    def bootstrap_servers(self) -> str:
        return self._bootstrap

    def consumer_config(self, group: str, static_member_id: str | None) -> dict[str, Any]:
        """Keyword arguments of the `AIOKafkaConsumer` of a member of `group`."""
        return {
            **self._consumer_config,
            "bootstrap_servers": self._bootstrap,
            "client_id": f"{self._client_id}-{group}",
            "group_id": group,
            "group_instance_id": static_member_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
        }

    async def start(self) -> None:
        if self._producer is not None:
            return
        self._producer = await self._new_producer(self._client_id)

    async def _new_producer(self, client_id: str) -> Any:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=False,  # see the module docstring
            partitioner=kafka_partitioner,
            **self._producer_config,
        )
        try:
            await producer.start()
        except BaseException:
            # A broker that cannot be reached fails start() with the producer's client and
            # sender half set up; stop() releases them (else "Unclosed AIOKafkaProducer").
            await producer.stop()
            raise
        return producer

    async def stop(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes what is still buffered

    def _require_producer(self) -> Any:
        """The producer of the consumer whose handler is running, else the bus's own."""
        if self._producer is None:
            raise BusError("KafkaBus is not started")
        own = _consumer_producer.get()
        return self._producer if own is None else own

    async def _partitions(self, topic: str) -> set[int]:
        """The partitions of `topic`, refreshing metadata briefly if it is not known yet."""
        client = self._require_producer().client
        partitions: set[int] | None = client.cluster.partitions_for_topic(topic)
        if partitions:
            return partitions
        client.add_topic(topic)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._metadata_wait_s
        while True:
            try:
                await client.force_metadata_update()
            except KafkaError as exc:
                raise _wrap(exc) from exc
            partitions = client.cluster.partitions_for_topic(topic)
            if partitions:
                return partitions
            if loop.time() >= deadline:
                raise UnknownTopicError(topic)
            # A topic created a moment ago may not be in every broker's metadata yet.
            await asyncio.sleep(0.1)

    async def publish(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers = (),
    ) -> RecordMeta:
        return await (await self.enqueue(topic, value, key=key, headers=headers))

    async def enqueue(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers = (),
    ) -> asyncio.Future[RecordMeta]:
        producer = self._require_producer()
        partitions = await self._partitions(topic)
        try:
            # `send` returns once the record is in the accumulator: its place in the
            # partition's order is fixed from here (the module docstring: one request in
            # flight per broker, a partition muted while its batch is).
            sent = await producer.send(
                topic,
                value,
                key=key,
                partition=None if key is None else partition_for_key(key, len(partitions)),
                headers=list(headers) if headers else None,
            )
        except KafkaError as exc:
            raise _wrap(exc) from exc
        durable: asyncio.Future[RecordMeta] = asyncio.get_running_loop().create_future()
        sent.add_done_callback(functools.partial(_settle, durable))
        return durable

    async def publish_batch(self, items: Iterable[Outgoing]) -> list[RecordMeta]:
        producer = self._require_producer()
        items = list(items)
        counts: dict[str, int] = {}
        for item in items:
            if item.topic not in counts:
                counts[item.topic] = len(await self._partitions(item.topic))
        send = producer.send
        futures = []
        try:
            # `send` only appends to the accumulator (it awaits only when the buffer is
            # full); the sender task ships whole batches while we keep appending. Keyed
            # records get their partition here, once per key thanks to the partitioner's
            # cache, sparing aiokafka's per-record partitioner call.
            for item in items:
                key = item.key
                futures.append(
                    await send(
                        item.topic,
                        item.value,
                        key=key,
                        partition=None
                        if key is None
                        else partition_for_key(key, counts[item.topic]),
                        headers=list(item.headers) if item.headers else None,
                    )
                )
        except KafkaError as exc:
            await asyncio.gather(*futures, return_exceptions=True)
            raise _wrap(exc) from exc
        results = await asyncio.gather(*futures, return_exceptions=True)
        metas: list[RecordMeta] = []
        for result in results:
            if isinstance(result, BaseException):
                if isinstance(result, KafkaError):
                    raise _wrap(result) from result
                raise result
            metas.append(
                RecordMeta(result.topic, result.partition, result.offset, result.timestamp)
            )
        return metas

    async def partitions_for(self, topic: str) -> int:
        return len(await self._partitions(topic))

    async def partition_for(self, topic: str, key: bytes) -> int:
        return partition_for_key(key, len(await self._partitions(topic)))

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
    ) -> KafkaConsumer:
        check_consumer_args(topics, batch_max)
        return KafkaConsumer(
            self,
            group,
            tuple(topics),
            handler,
            batch_max=batch_max,
            batch_linger=batch_linger,
            gather_s=self.gather_s if gather and batch_linger is None else 0.0,
            static_member_id=static_member_id,
            retry=retry or RetryPolicy(),
            listener=listener,
        )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, owner: KafkaConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._owner._on_revoked()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._owner._on_assigned(assigned)


class KafkaConsumer:
    """A member of a Kafka consumer group (see the module docstring for the loop)."""

    def __init__(
        self,
        bus: KafkaBus,
        group: str,
        topics: tuple[str, ...],
        handler: Handler,
        *,
        batch_max: int,
        batch_linger: BatchLinger | None = None,
        gather_s: float = 0.0,
        static_member_id: str | None,
        retry: RetryPolicy,
        listener: PartitionListener | None = None,
    ) -> None:
        self._bus = bus
        self._batch_linger = batch_linger
        self._gather_s = gather_s
        self._listener = listener
        self._group = group
        self._topics = topics
        self._batch_max = batch_max
        self._static_member_id = static_member_id
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._assigned: frozenset[TopicPartition] = frozenset()
        # Next offset to handle, per owned partition, as last committed by this member.
        self._positions: dict[TopicPartition, int] = {}
        self._first_assignment = asyncio.Event()
        # Cleared while the listener hears of a new assignment: records fetched meanwhile
        # wait until it has (aiokafka may fetch for the assignment during the callback).
        self._settled = asyncio.Event()
        self._settled.set()
        self._idle = asyncio.Event()
        self._idle.set()
        # Commits running while the next batches are handled (`_commit_behind`): the offsets
        # handled and not yet sent, the task sending them, and the event that cuts its wait
        # between two commits short.
        self._uncommitted: dict[Any, int] = {}
        self._committing: asyncio.Task[None] | None = None
        self._flush = asyncio.Event()
        # Commits that outlived their wait and still run (`_commit`).
        self._late_commits: set[asyncio.Future[None]] = set()
        self._abort = asyncio.Event()
        self._stopping = False
        # True while the loop waits on the broker (getmany, error backoff): the only
        # moments at which stop() may cancel it without losing handled work.
        self._waiting = False
        # This consumer's own producer (`KafkaBus.producer_per_consumer`), made at start.
        self._producer: Any = None
        self._runner = BatchRunner(
            handler,
            group=group,
            publish_many=bus.publish_batch,
            policy=retry,
            abort=self._abort,
        )

    @property
    def group(self) -> str:
        return self._group

    def assigned(self) -> frozenset[TopicPartition]:
        return self._assigned

    def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet handled per owned partition whose end is known (module doc)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        lags: dict[tuple[str, int], int] = {}
        for tp in self._assigned:
            ktp = KafkaTopicPartition(tp.topic, tp.partition)
            if not consumer._subscription.is_assigned(ktp):
                continue  # a rebalance is under way
            state = consumer._subscription.subscription.assignment.state_value(ktp)
            highwater = state.highwater
            position = self._positions.get(tp)
            if position is None and state.has_valid_position:
                position = state.position
            if highwater is not None and position is not None:
                lags[tp] = max(0, highwater - position)
        return lags

    async def start(self) -> None:
        if self._task is not None:
            raise BusError(f"a consumer of group {self._group} was already started")
        for topic in self._topics:
            await self._bus._partitions(topic)  # UnknownTopicError now, not a silent wait
        if self._bus.producer_per_consumer:
            self._producer = await self._bus._new_producer(f"{self._bus._client_id}-{self._group}")
        config = self._bus.consumer_config(self._group, self._static_member_id)
        if self._batch_linger is not None:
            config["fetch_max_wait_ms"] = self._batch_linger.max_wait_ms
            config["fetch_min_bytes"] = self._batch_linger.min_bytes
        consumer = AIOKafkaConsumer(**config)
        try:
            await consumer.start()
            consumer.subscribe(list(self._topics), listener=_Listener(self))
        except KafkaError as exc:
            await consumer.stop()
            await self._stop_producer()
            raise _wrap(exc) from exc
        self._consumer = consumer
        self._bus._consumers.add(self)
        LAG.track(self)
        self._task = asyncio.create_task(self._main(), name=f"bus-consumer-{self._group}")
        assigned = asyncio.create_task(self._first_assignment.wait())
        try:
            await asyncio.wait({assigned, self._task}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self.abort()  # e.g. a start timeout: do not leave a half-joined member
            raise
        finally:
            assigned.cancel()
        if self._task.done():
            await self.join()

    async def stop(self) -> None:
        task = self._task
        if task is None:
            return
        self._stopping = True
        self._abort.set()
        if self._waiting:
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if (current := asyncio.current_task()) is not None and current.cancelling():
                raise
        except Exception:
            log.exception("group %s: consumer failed", self._group)
            await self._close()
            return
        try:
            # The loop ended between batches (or was cancelled waiting for records, with the
            # last batch's commit maybe still in flight): once that commit is done, the
            # partitions go, and the listener hears so before the member leaves the group.
            with contextlib.suppress(Exception):
                await self._committed()
            await self._give_up_assignment()
        finally:
            await self._close()

    async def abort(self) -> None:
        task = self._task
        if task is None:
            return
        self._stopping = True
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if (current := asyncio.current_task()) is not None and current.cancelling():
                raise
        except Exception:
            log.exception("group %s: consumer failed", self._group)
        finally:
            await self._close()

    async def join(self) -> None:
        if self._task is None:
            return
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._task.cancelled():
                return
            raise
        except ConsumerFailed:
            raise
        except Exception as exc:
            raise ConsumerFailed(f"group {self._group}: consumer failed") from exc

    async def _close(self) -> None:
        if self._committing is not None:  # an abort: a crash commits nothing more
            self._committing.cancel()
            self._committing = None
        self._uncommitted = {}
        self._bus._consumers.discard(self)
        LAG.untrack(self)
        self._assigned = frozenset()
        self._positions = {}
        consumer = self._consumer
        try:
            await self._close_consumer(consumer)
        finally:
            # A commit still retrying is moot once the member has left the group.
            for commit in list(self._late_commits):
                commit.cancel()
            await self._stop_producer()

    async def _close_consumer(self, consumer: Any) -> None:
        if consumer is not None:
            try:
                await consumer.stop()  # leaves the group (unless static); commits nothing
            except asyncio.CancelledError:
                if (current := asyncio.current_task()) is not None and current.cancelling():
                    raise
                # aiokafka 0.14's Fetcher.close cancels the fetch requests in flight and then
                # awaits them without suppressing their CancelledError (seen with a fetch in
                # its retry backoff during a broker outage). Escaping, it skipped the client's
                # close here and, above, the stop of every other role of the process.
                await consumer._client.close()

    # -- rebalance callbacks (run by aiokafka's coordinator task) ---------------------------

    async def _on_revoked(self) -> None:
        # Partitions go only after their in-flight batches are done and committed.
        self._abort.set()
        await self._idle.wait()
        await self._committed()
        if not self._stopping:
            self._abort.clear()
        await self._give_up_assignment()

    async def _give_up_assignment(self) -> None:
        revoked, self._assigned = self._assigned, frozenset()
        self._positions = {}
        await notify_listener(self._listener, "revoked", revoked, group=self._group)

    async def _on_assigned(self, assigned: Iterable[Any]) -> None:
        tps = frozenset(TopicPartition(tp.topic, tp.partition) for tp in assigned)
        self._settled.clear()
        try:
            await notify_listener(self._listener, "assigned", tps, group=self._group)
        finally:
            self._settled.set()
        self._assigned = tps
        log.info(
            "group %s: assigned %s",
            self._group,
            sorted(f"{t}[{p}]" for t, p in self._assigned),
        )
        self._first_assignment.set()

    # -- the loop ---------------------------------------------------------------------------

    async def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes what is still buffered

    async def _main(self) -> None:
        # What the handler publishes (and the runner dead-letters) goes out on this
        # consumer's producer: aiokafka sends one request at a time per broker and producer,
        # so groups sharing a process would otherwise queue behind each other's requests.
        _consumer_producer.set(self._producer)
        try:
            await self._run()
        except Exception as exc:
            log.exception("group %s: consumer loop failed; leaving the group", self._group)
            await self._close()
            raise ConsumerFailed(f"group {self._group}: {exc!r}") from exc

    async def _run(self) -> None:
        consumer = self._consumer
        poll_timeout_ms = self._bus.poll_timeout_ms
        failures = 0
        while not self._stopping:
            self._waiting = True
            try:
                fetched = await consumer.getmany(
                    timeout_ms=poll_timeout_ms, max_records=self._batch_max
                )
            except Exception as exc:  # a KafkaError, or uvloop's error for a closed broker link
                if not is_transient(exc):
                    raise
                failures += 1
                delay = min(0.1 * 2**failures, 10.0)
                log.warning(
                    "group %s: fetch failed (%r); retrying in %.1fs", self._group, exc, delay
                )
                await asyncio.sleep(delay)
                continue
            finally:
                self._waiting = False
            failures = 0
            if not fetched:
                continue
            # From here the records are in flight: a revocation waits for them.
            self._idle.clear()
            try:
                if self._gather_s:
                    await self._gather(fetched)
                await self._settled.wait()
                done = await self._process(fetched)
                await self._commit_behind(done)
            finally:
                self._idle.set()
        await self._committed()

    async def _gather(self, fetched: dict[Any, list[Any]]) -> None:
        """Add to `fetched` what arrives within the gather window (`KafkaBus.gather_s`, for a
        consumer made with ``gather=True``) of it.

        A stage's cost is mostly per batch — a produce request and a Redis round trip per
        handler call, whatever the records — and records that arrive a few milliseconds
        apart (a sender's burst published frame by frame, the fan-outs of one batch) would
        otherwise cost a batch each, one after the other. An idle consumer still waits in
        the broker's long poll: the window opens only once records came. What arrived is
        taken a few times in the window (aiokafka fetches a partition again only once its
        last records were taken), until it closes or the batch holds ``batch_max`` records.

        The records are in flight from the moment they were fetched (a revocation waits for
        them), so the window never waits inside aiokafka: ``getmany`` blocks without a
        timeout while a rebalance is under way, and that rebalance would be waiting for this
        batch. Once one starts, the window closes and the batch goes to its handlers while
        this member still owns its partitions.
        """
        consumer = self._consumer
        subscription = consumer._subscription
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._gather_s
        step = max(self._gather_s / GATHER_STEPS, 0.001)
        room = self._batch_max - sum(len(records) for records in fetched.values())
        while room > 0 and (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(step, left))
            if subscription.reassignment_in_progress:
                return
            try:
                more = await consumer.getmany(timeout_ms=0, max_records=room)
            except Exception as exc:
                # As in `_run`: what may succeed again is left to the next fetch.
                if not is_transient(exc):
                    raise
                return
            for tp, records in more.items():
                fetched.setdefault(tp, []).extend(records)
                room -= len(records)

    async def _commit_behind(self, done: dict[Any, int]) -> None:
        """Commit `done` while the loop goes on to the next batches (`commit_while_handling`):
        the round trip to the group coordinator leaves the path every record takes, and the
        loop never waits for it. `_commit_loop` sends the commits one at a time, so they land
        in order. Otherwise commit, then go on."""
        if not self._bus.commit_while_handling:
            await self._commit(done)
            return
        self._uncommitted.update(done)
        task = self._committing
        if task is not None and task.done():
            self._committing = None
            task.result()  # what the commit loop could not handle ends the consumer
            task = None
        if task is None:
            self._committing = asyncio.create_task(
                self._commit_loop(), name=f"bus-commit-{self._group}"
            )

    async def _commit_loop(self) -> None:
        """Commit what was handled, at most once per `KafkaBus.commit_interval_s`, until
        nothing is left. A commit costs the group coordinator a write to
        ``__consumer_offsets`` and this process a round trip; once per batch, it was a
        quarter of the requests of a lightly loaded message path (docs/benchmarks.md). What a
        crash leaves uncommitted — at most an interval's batches — is replayed, which
        handlers tolerate (DESIGN invariant 3)."""
        loop = asyncio.get_running_loop()
        interval = self._bus.commit_interval_s
        while self._uncommitted:
            offsets, self._uncommitted = self._uncommitted, {}
            started = loop.time()
            await self._commit(offsets)
            rest = interval - (loop.time() - started)
            if rest > 0 and not self._flush.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(rest):
                        await self._flush.wait()

    async def _committed(self) -> None:
        """Commit what was handled and wait until it is (before a revoke lets partitions go,
        and when the consumer stops): the interval's wait is cut short."""
        task, self._committing = self._committing, None
        if task is not None:
            self._flush.set()
            try:
                await task
            finally:
                self._flush.clear()
        if self._uncommitted:
            offsets, self._uncommitted = self._uncommitted, {}
            await self._commit(offsets)

    async def _process(self, fetched: dict[Any, list[Any]]) -> dict[Any, int]:
        batches = {
            tp: [
                Record(
                    r.topic,
                    r.partition,
                    r.offset,
                    r.key,
                    r.value if r.value is not None else b"",
                    r.headers,
                    r.timestamp,
                )
                for r in records
            ]
            for tp, records in fetched.items()
        }
        run = self._runner.run
        if len(batches) == 1:
            ((tp, records),) = batches.items()
            return {tp: await run(records)}
        async with asyncio.TaskGroup() as tasks:
            running = {tp: tasks.create_task(run(records)) for tp, records in batches.items()}
        return {tp: task.result() for tp, task in running.items()}

    async def _commit(self, done: dict[Any, int]) -> None:
        offsets = {
            KafkaTopicPartition(tp.topic, tp.partition): offset for tp, offset in done.items()
        }
        # aiokafka retries a commit for as long as the group coordinator cannot be found,
        # i.e. for the whole of a broker outage, and `stop` waits for this loop: a SIGTERM
        # during an outage never ended the process. So the wait is bounded — but the commit
        # is not cancelled: aiokafka sends it from a shielded task that would go on alone,
        # having let go of its commit lock, so a newer commit could land before it and its
        # failure would go unseen. Left running, it keeps the lock (a newer commit waits
        # behind it, so offsets never go back) and `_late_commit` reports how it ended.
        # An uncommitted batch costs nothing but a replay: a later commit covers it, or the
        # next owner handles it again (handlers are idempotent).
        commit = asyncio.ensure_future(self._consumer.commit(offsets))
        try:
            finished, _ = await asyncio.wait({commit}, timeout=self._bus.commit_timeout_s)
        except asyncio.CancelledError:  # an abort: `_close` ends the commit too
            self._leave_running(commit, offsets)
            raise
        if not finished:
            log.warning(
                "group %s: commit of %s not done within %.1fs (broker unreachable?); "
                "left to finish, and a later commit or the next owner covers these records",
                self._group,
                offsets,
                self._bus.commit_timeout_s,
            )
            self._leave_running(commit, offsets)
            return
        exc = commit.exception()
        if isinstance(exc, (CommitFailedError, IllegalStateError)):
            # The group moved on without us (e.g. max_poll_interval exceeded): the new owner
            # gets these records again, which handlers tolerate.
            log.warning("group %s: commit of %s failed: %r", self._group, offsets, exc)
            return
        if exc is not None:
            raise exc
        self._positions.update(
            (TopicPartition(tp.topic, tp.partition), offset) for tp, offset in done.items()
        )

    def _leave_running(self, commit: asyncio.Future[None], offsets: dict[Any, int]) -> None:
        self._late_commits.add(commit)
        commit.add_done_callback(functools.partial(self._late_commit, offsets))

    def _late_commit(self, offsets: dict[Any, int], commit: asyncio.Future[None]) -> None:
        """How a commit that outlived its wait ended (`_commit`), said once it has."""
        self._late_commits.discard(commit)
        if commit.cancelled():
            return  # the consumer closed first
        exc = commit.exception()
        if exc is None:
            log.info("group %s: the late commit of %s is done", self._group, offsets)
        else:
            log.warning("group %s: the late commit of %s failed: %r", self._group, offsets, exc)
