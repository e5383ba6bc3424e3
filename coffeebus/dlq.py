"""Dead-letter topics on a Kafka cluster: what is in them, and putting records back.

The bus runner sends a record its handler rejected to ``<topic>.dlq`` (topology.yaml
declares one per consumed topic) with its key, value and headers unchanged plus ``dlq.*``
headers: the error, its type, and the source topic, partition, offset and group
(`bus.base.DLQ_ERROR` ...). This module reads them back for an operator:

- `summary` counts the records of every declared dead-letter topic;
- `read` returns the records of one, decoded headers included;
- `replay` publishes records of a dead-letter topic again to their source topic, with the
  original key, value and headers (the ``dlq.*`` ones dropped, a ``dlq.replayed_from`` one
  added), once the cause is fixed. Handlers are idempotent (DESIGN invariant 3), so a
  record replayed twice changes nothing more than once; a record that fails again is
  dead-lettered again, with the new error.

Replay reads up to the end offsets taken when it starts, so it terminates even while the
same records are being dead-lettered again.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bus.base import (
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_GROUP,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_TOPIC,
)
from bus.topology import Topology

__all__ = [
    "DLQ_REPLAYED_FROM",
    "DeadLetter",
    "DlqCount",
    "ReplayResult",
    "dlq_name",
    "read",
    "replay",
    "summary",
]

#: Header a replayed record carries: ``<dlq topic>:<partition>:<offset>`` it came from.
DLQ_REPLAYED_FROM = "dlq.replayed_from"
_DLQ_PREFIX = "dlq."


class DlqCount(msgspec.Struct, frozen=True, kw_only=True):
    """How many records one dead-letter topic holds (between its log start and end)."""

    topic: str
    source: str
    records: int
    #: per partition: (log start offset, log end offset)
    offsets: dict[int, tuple[int, int]]


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One dead-lettered record, as an operator reads it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value_bytes: int
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    group: str | None
    error_type: str | None
    error: str | None
    #: ``<dlq>:<partition>:<offset>`` when this record had been replayed and failed again
    replayed_from: str | None


class ReplayResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `replay` did (or, with ``dry_run``, would do)."""

    topic: str
    source: str
    replayed: int
    dry_run: bool
    #: per partition of the dead-letter topic: the offset a later replay should start from
    next_offsets: dict[int, int]


def _source_of(topology: Topology, topic: str) -> str:
    """The source topic of dead-letter topic `topic` (raises for an undeclared one)."""
    spec = topology.topic(topic)
    if spec.dlq_of is None:
        raise KeyError(f"{topic} is not a dead-letter topic (declared ones end in .dlq)")
    return spec.dlq_of


def dlq_name(topology: Topology, topic: str) -> str:
    """`topic` if it is a declared dead-letter topic, else the dead-letter topic of `topic`."""
    spec = topology.topic(topic)
    if spec.dlq_of is not None:
        return spec.name
    if spec.dlq is None:
        raise KeyError(f"{topic} has no dead-letter topic (no group consumes it)")
    return spec.dlq


@contextlib.asynccontextmanager
async def _reader(bootstrap: str, request_timeout: float) -> AsyncIterator[AIOKafkaConsumer]:
    # No group: reading a dead-letter topic must never move anybody's committed offsets.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        request_timeout_ms=int(request_timeout * 1000),
        client_id="coffeebus-dlq",
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _bounds(
    consumer: AIOKafkaConsumer, topic: str, partitions: int
) -> dict[TopicPartition, tuple[int, int]]:
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    starts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    return {tp: (starts[tp], ends[tp]) for tp in tps}


async def summary(
    topology: Topology, bootstrap: str, *, request_timeout: float = 10.0
) -> list[DlqCount]:
    """Every declared dead-letter topic with its record count."""
    counts = []
    async with _reader(bootstrap, request_timeout) as consumer:
        for spec in topology.dlq_topics():
            bounds = await _bounds(consumer, spec.name, spec.partitions)
            counts.append(
                DlqCount(
                    topic=spec.name,
                    source=_source_of(topology, spec.name),
                    records=sum(end - start for start, end in bounds.values()),
                    offsets={tp.partition: b for tp, b in bounds.items()},
                )
            )
    return counts


async def _records(
    consumer: AIOKafkaConsumer,
    bounds: dict[TopicPartition, tuple[int, int]],
    from_offset: int,
    limit: int | None,
) -> AsyncIterator[Any]:
    """Records of the partitions in `bounds` from `from_offset` up to the ends in `bounds`."""
    todo = {tp: end for tp, (start, end) in bounds.items() if max(start, from_offset) < end}
    if not todo:
        return
    consumer.assign(list(todo))
    for tp in todo:
        consumer.seek(tp, max(bounds[tp][0], from_offset))
    seen = 0
    while todo:
        batches = await consumer.getmany(*todo, timeout_ms=1000, max_records=500)
        for tp, records in batches.items():
            for record in records:
                if record.offset >= todo.get(tp, -1):
                    break  # dead-lettered after we started: not ours to show or replay
                yield record
                seen += 1
                if limit is not None and seen >= limit:
                    return
        # Done with a partition once past its end (also when the last offsets hold no
        # record, as after compaction or transaction markers).
        for tp in list(todo):
            if await consumer.position(tp) >= todo[tp]:
                del todo[tp]


def _headers(record: Any) -> dict[str, bytes]:
    return dict(record.headers or ())


def _int(value: bytes | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value is not None else None


def _dead_letter(record: Any, source: str) -> DeadLetter:
    headers = _headers(record)
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=_text(record.key),
        value_bytes=len(record.value or b""),
        source_topic=_text(headers.get(DLQ_TOPIC)) or source,
        source_partition=_int(headers.get(DLQ_PARTITION)),
        source_offset=_int(headers.get(DLQ_OFFSET)),
        group=_text(headers.get(DLQ_GROUP)),
        error_type=_text(headers.get(DLQ_ERROR_TYPE)),
        error=_text(headers.get(DLQ_ERROR)),
        replayed_from=_text(headers.get(DLQ_REPLAYED_FROM)),
    )


async def read(
    topology: Topology,
    bootstrap: str,
    topic: str,
    *,
    from_offset: int = 0,
    limit: int | None = None,
    request_timeout: float = 10.0,
) -> list[DeadLetter]:
    """The records of dead-letter topic `topic` (or of the source topic's DLQ), oldest first
    within each partition."""
    name = dlq_name(topology, topic)
    source = _source_of(topology, name)
    async with _reader(bootstrap, request_timeout) as consumer:
        bounds = await _bounds(consumer, name, topology.topic(name).partitions)
        return [
            _dead_letter(record, source)
            async for record in _records(consumer, bounds, from_offset, limit)
        ]


async def replay(
    topology: Topology,
    bootstrap: str,
    topic: str,
    *,
    from_offset: int = 0,
    limit: int | None = None,
    dry_run: bool = False,
    request_timeout: float = 10.0,
) -> ReplayResult:
    """Publish the records of a dead-letter topic to their source topic again."""
    name = dlq_name(topology, topic)
    source = _source_of(topology, name)
    # A dry run makes no producer: one never started nor stopped is reported "unclosed".
    producer = (
        None
        if dry_run
        else AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=int(request_timeout * 1000),
            client_id="coffeebus-dlq-replay",
        )
    )
    replayed = 0
    async with _reader(bootstrap, request_timeout) as consumer:
        bounds = await _bounds(consumer, name, topology.topic(name).partitions)
        next_offsets = {tp.partition: max(start, from_offset) for tp, (start, _) in bounds.items()}
        if producer is not None:
            await producer.start()
        try:
            pending = []
            async for record in _records(consumer, bounds, from_offset, limit):
                target = _text(_headers(record).get(DLQ_TOPIC)) or source
                # A record goes back only where this DLQ's records come from.
                if target != source:
                    raise ValueError(
                        f"{name}@{record.offset} names source {target!r}, not {source}"
                    )
                headers = [(k, v) for k, v in record.headers or () if not k.startswith(_DLQ_PREFIX)]
                headers.append(
                    (DLQ_REPLAYED_FROM, f"{name}:{record.partition}:{record.offset}".encode())
                )
                if producer is not None:
                    pending.append(
                        await producer.send(source, record.value, key=record.key, headers=headers)
                    )
                replayed += 1
                next_offsets[record.partition] = record.offset + 1
            for future in pending:
                await future  # durable (acks=all) before the command says it is done
        finally:
            if producer is not None:
                await producer.stop()
    return ReplayResult(
        topic=name, source=source, replayed=replayed, dry_run=dry_run, next_offsets=next_offsets
    )
