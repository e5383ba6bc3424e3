"""MemoryBus: the in-process twin of KafkaBus, for the embedded mode and fast tests.

It keeps Kafka's semantics where handlers can observe them:

- topics exist only once declared (`create_topic`), like a broker with
  `auto.create.topics.enable=false`; each has a fixed number of partitions, each partition an
  append-only log with offsets from 0;
- keys map to partitions with the Java client's rule (`bus.partitioner`), keyless records go
  round-robin;
- consumer groups assign partitions round-robin among their live members and rebalance
  eagerly when one joins or leaves: every member first gives up its partitions — waiting
  for its in-flight batches and committing them, as KafkaBus does in its revoke callback —
  then the partitions are dealt out again and each new owner starts from the group's
  committed offset (the earliest offset if none);
- a member that dies (`abort`) commits nothing, so the records of its unfinished batches
  are delivered again to the next owner.

Differences, on purpose: a static member (`static_member_id`) that stops leaves at once (a
broker waits `session.timeout.ms` for it to come back); two live members with the same static
id are an error at once (a broker fences the older one). Nothing is persisted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable, Sequence

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
    RetryPolicy,
    TopicPartition,
    UnknownTopicError,
    check_consumer_args,
    notify_listener,
)
from bus.partitioner import partition_for_key
from bus.runner import BatchRunner
from telemetry.metrics import LAG

log = logging.getLogger(__name__)


class _Topic:
    __slots__ = ("logs", "name", "next_keyless", "subscribers")

    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.logs: list[list[Record]] = [[] for _ in range(partitions)]
        self.next_keyless = 0
        # Wake-up events of the members subscribed to this topic.
        self.subscribers: set[asyncio.Event] = set()


class _Group:
    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[str, MemoryConsumer] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.generation = 0
        # Joins, leaves and the rebalances they cause happen one at a time.
        self.lock = asyncio.Lock()


class MemoryBus:
    """A `bus.base.Bus` living in this process's memory."""

    def __init__(self) -> None:
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, _Group] = {}
        self._consumers: set[MemoryConsumer] = set()
        self._member_ids = itertools.count(1)

    # -- topics ----------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int) -> None:
        """Declare a topic; re-declaring with the same partition count is a no-op."""
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1, not {partitions}")
        existing = self._topics.get(name)
        if existing is None:
            self._topics[name] = _Topic(name, partitions)
        elif len(existing.logs) != partitions:
            raise BusError(
                f"topic {name!r} exists with {len(existing.logs)} partitions, not {partitions}"
            )

    def topics(self) -> dict[str, int]:
        """Declared topics and their partition counts."""
        return {name: len(topic.logs) for name, topic in self._topics.items()}

    def end_offset(self, tp: TopicPartition) -> int:
        """The offset the next record of `tp` will get."""
        return len(self._topic(tp.topic).logs[tp.partition])

    def committed(self, group: str, tp: TopicPartition) -> int | None:
        """The committed offset of `group` on `tp`, if any."""
        state = self._groups.get(group)
        return None if state is None else state.committed.get(tp)

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise UnknownTopicError(name)
        return topic

    # -- Bus -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to connect to."""

    async def stop(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()

    async def publish(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers = (),
    ) -> RecordMeta:
        return self._append(self._topic(topic), value, key, headers)

    async def enqueue(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers = (),
    ) -> asyncio.Future[RecordMeta]:
        durable: asyncio.Future[RecordMeta] = asyncio.get_running_loop().create_future()
        durable.set_result(self._append(self._topic(topic), value, key, headers))
        return durable

    async def publish_batch(self, items: Iterable[Outgoing]) -> list[RecordMeta]:
        items = list(items)
        # All or nothing on unknown topics, as nothing is sent before metadata is known.
        topics = [self._topic(item.topic) for item in items]
        return [
            self._append(topic, item.value, item.key, item.headers)
            for topic, item in zip(topics, items, strict=True)
        ]

    async def partitions_for(self, topic: str) -> int:
        return len(self._topic(topic).logs)

    async def partition_for(self, topic: str, key: bytes) -> int:
        return partition_for_key(key, len(self._topic(topic).logs))

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
    ) -> MemoryConsumer:
        check_consumer_args(topics, batch_max)
        del batch_linger, gather  # records are handed over as soon as they are appended
        member_id = static_member_id or f"{group}-member-{next(self._member_ids)}"
        return MemoryConsumer(
            self,
            self._groups.setdefault(group, _Group(group)),
            member_id,
            tuple(topics),
            handler,
            batch_max=batch_max,
            retry=retry or RetryPolicy(),
            listener=listener,
        )

    def _append(
        self, topic: _Topic, value: bytes, key: bytes | None, headers: Headers
    ) -> RecordMeta:
        if key is None:
            partition = topic.next_keyless % len(topic.logs)
            topic.next_keyless += 1
        else:
            partition = partition_for_key(key, len(topic.logs))
        partition_log = topic.logs[partition]
        timestamp_ms = time.time_ns() // 1_000_000
        offset = len(partition_log)
        partition_log.append(
            Record(topic.name, partition, offset, key, value, tuple(headers), timestamp_ms)
        )
        for wakeup in topic.subscribers:
            wakeup.set()
        return RecordMeta(topic.name, partition, offset, timestamp_ms)


class MemoryConsumer:
    """A member of a MemoryBus consumer group (see the module docstring for the semantics)."""

    def __init__(
        self,
        bus: MemoryBus,
        group: _Group,
        member_id: str,
        topics: tuple[str, ...],
        handler: Handler,
        *,
        batch_max: int,
        retry: RetryPolicy,
        listener: PartitionListener | None = None,
    ) -> None:
        self._bus = bus
        self._listener = listener
        self._group = group
        self.member_id = member_id
        self._topics = topics
        self._batch_max = batch_max
        self._assignment: dict[TopicPartition, int] = {}  # partition -> next offset to hand out
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._abort = asyncio.Event()
        self._revoking = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._runner = BatchRunner(
            handler,
            group=group.name,
            publish_many=bus.publish_batch,
            policy=retry,
            abort=self._abort,
        )

    @property
    def group(self) -> str:
        return self._group.name

    def assigned(self) -> frozenset[TopicPartition]:
        return frozenset(self._assignment)

    def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet handled per owned partition: its end minus the next offset."""
        topics = self._bus._topics
        return {
            tp: len(topics[tp.topic].logs[tp.partition]) - position
            for tp, position in self._assignment.items()
        }

    async def start(self) -> None:
        if self._task is not None:
            raise BusError(f"consumer {self.member_id} was already started")
        topics = [self._bus._topic(name) for name in self._topics]
        async with self._group.lock:
            if self.member_id in self._group.members:
                raise BusError(f"group {self.group}: member {self.member_id!r} is already running")
            self._group.members[self.member_id] = self
            self._bus._consumers.add(self)
            LAG.track(self)
            for topic in topics:
                topic.subscribers.add(self._wakeup)
            self._task = asyncio.create_task(self._run(), name=f"bus-consumer-{self.member_id}")
            await self._rebalance()

    async def stop(self) -> None:
        if self._task is None or self._stopping:
            await self._leave()
            return
        self._stopping = True
        self._abort.set()
        self._wakeup.set()
        try:
            await self._task
        except Exception:
            log.exception("group %s: member %s failed", self.group, self.member_id)
        else:
            # The loop committed its last batches before it ended.
            await self._give_up_assignment()
        finally:
            await self._leave()

    async def abort(self) -> None:
        if self._task is not None and not self._task.done():
            self._stopping = True
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("group %s: member %s failed", self.group, self.member_id)
        await self._leave()

    async def join(self) -> None:
        if self._task is None:
            return
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._task.cancelled():
                return  # aborted
            raise
        except Exception as exc:
            raise ConsumerFailed(f"group {self.group}: member {self.member_id} failed") from exc

    # -- group membership -------------------------------------------------------------------

    async def _leave(self) -> None:
        async with self._group.lock:
            for name in self._topics:
                topic = self._bus._topics.get(name)
                if topic is not None:
                    topic.subscribers.discard(self._wakeup)
            self._bus._consumers.discard(self)
            LAG.untrack(self)
            self._assignment = {}
            if self._group.members.get(self.member_id) is self:
                del self._group.members[self.member_id]
                await self._rebalance()

    async def _rebalance(self) -> None:
        """Eager rebalance of the whole group; the caller holds the group lock."""
        group = self._group
        members = [group.members[mid] for mid in sorted(group.members)]
        # Every member finishes and commits its in-flight batches before anyone gets a
        # partition, so a partition is never processed by two members at once.
        await asyncio.gather(*(member._revoke() for member in members))
        group.generation += 1
        # Members on their way out (waiting for this lock to leave) get nothing.
        members = [m for m in members if not m._stopping]
        owners: dict[str, list[TopicPartition]] = {m.member_id: [] for m in members}
        all_tps = sorted(
            {
                TopicPartition(name, p)
                for m in members
                for name in m._topics
                for p in range(len(self._bus._topic(name).logs))
            }
        )
        # Round-robin over the members subscribed to each partition's topic (like aiokafka's
        # default RoundRobinPartitionAssignor).
        for turn, tp in enumerate(all_tps):
            eligible = [m for m in members if tp.topic in m._topics]
            owners[eligible[turn % len(eligible)].member_id].append(tp)
        for member in members:
            await member._assign(owners[member.member_id])
        log.info(
            "group %s generation %d: %s",
            group.name,
            group.generation,
            {mid: [f"{t}[{p}]" for t, p in tps] for mid, tps in owners.items()},
        )

    async def _revoke(self) -> None:
        self._revoking = True
        self._abort.set()
        await self._idle.wait()
        if not self._stopping:
            self._abort.clear()
        await self._give_up_assignment()

    async def _give_up_assignment(self) -> None:
        """Forget the assignment (its batches are committed) and tell the listener."""
        revoked, self._assignment = frozenset(self._assignment), {}
        await notify_listener(self._listener, "revoked", revoked, group=self.group)

    async def _assign(self, tps: Sequence[TopicPartition]) -> None:
        # The listener hears of the partitions before the loop may hand out a batch of
        # them: `_revoking` keeps `_collect` empty until the assignment is set below.
        await notify_listener(self._listener, "assigned", tps, group=self.group)
        committed = self._group.committed
        self._assignment = {tp: committed.get(tp, 0) for tp in tps}
        self._revoking = False
        self._wakeup.set()

    # -- the loop ---------------------------------------------------------------------------

    def _collect(self) -> dict[TopicPartition, list[Record]]:
        if self._revoking or self._stopping:
            return {}
        batches: dict[TopicPartition, list[Record]] = {}
        topics = self._bus._topics
        for tp, position in self._assignment.items():
            partition_log = topics[tp.topic].logs[tp.partition]
            if len(partition_log) > position:
                batches[tp] = partition_log[position : position + self._batch_max]
        return batches

    async def _run(self) -> None:
        while not self._stopping:
            batches = self._collect()
            if not batches:
                # No await between _collect and clear: a publish cannot slip in between.
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._idle.clear()
            try:
                done = await self._process(batches)
                self._commit(done)
            finally:
                self._idle.set()
            # A handler that never awaits must not starve the other tasks.
            await asyncio.sleep(0)

    async def _process(
        self, batches: dict[TopicPartition, list[Record]]
    ) -> dict[TopicPartition, int]:
        if len(batches) == 1:
            ((tp, records),) = batches.items()
            return {tp: await self._runner.run(records)}
        async with asyncio.TaskGroup() as tasks:
            running = {
                tp: tasks.create_task(self._runner.run(records)) for tp, records in batches.items()
            }
        return {tp: task.result() for tp, task in running.items()}

    def _commit(self, done: dict[TopicPartition, int]) -> None:
        committed = self._group.committed
        for tp, offset in done.items():
            if tp in self._assignment:
                self._assignment[tp] = offset
                if offset > committed.get(tp, -1):
                    committed[tp] = offset
