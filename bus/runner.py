"""The batch runner: maps a handler's outcome to commit, retry or dead-letter.

Both buses hand every batch of one partition to `BatchRunner.run`, which returns the offset
up to which the partition may be committed. The policy, in order:

1. The handler returns: the whole batch is done.
2. It raises a *transient* error (`bus.transient.is_transient`: `RetriableError`, a Kafka
   error flagged `retriable`, a network/timeout error, or an error a store adapter classes as
   transient — `store.mongo.errors`, `store.redis.errors`): the same batch is retried with
   exponential backoff and jitter (tenacity), forever or up to `RetryPolicy.max_attempts`.
   Nothing is committed, nothing is skipped.
3. It raises anything else (`Reject` included), or retries ran out: the runner cannot tell
   which record of the batch is the poison one, so it re-runs the batch record by record
   (committing nothing before) and dead-letters only the records that still fail; the
   others are processed — some a second time, which handlers tolerate because they are
   idempotent (DESIGN invariant 3). A batch of one record is dead-lettered directly.
4. A dead-lettered record is published to `<topic>.dlq` with its key, value and headers, plus
   headers naming the error, the original topic/partition/offset and the group; the
   partition then moves on. Publishing to the DLQ is retried forever: a record is never
   dropped because its dead-letter topic is unavailable.

Every batch is measured (`telemetry.metrics`: handler latency by group; records consumed,
retries and dead letters by group and topic) and handled inside a log context naming the
group, topic, partition and first offset — and the record's trace id when the batch is one
record — so every line the handler logs says what it was working on. At DEBUG, one line per
handled record gives its offset and trace id (`schemas.trace`), which is how a trace is
followed from the gate through every consumer.

Backoff sleeps watch an abort event: when the consumer stops or its partitions are revoked,
retrying ends at once and `run` returns the progress made so far, so a stuck batch never
blocks a rebalance or a shutdown (the rest is redelivered to the next owner).

A handler may wait on purpose with `hold` (the delivery timer holds its partition until the
head record is due): the same abort event cuts that wait short, and the batch is then left
uncommitted for the next owner, like an aborted retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import tenacity

from bus.base import (
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_GROUP,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_TOPIC,
    Handler,
    Outgoing,
    Record,
    RecordMeta,
    RetryPolicy,
    dlq_topic,
)
from bus.transient import is_transient
from schemas.trace import trace_id_of
from telemetry import logcontext
from telemetry.metrics import DLQ_RECORDS, HANDLER_SECONDS, RECORDS_CONSUMED, RETRIES

log = logging.getLogger(__name__)

# Longest error text put in a DLQ header; the record itself stays whole.
_MAX_ERROR_LEN = 2000

PublishMany = Callable[[Sequence[Outgoing]], Awaitable[list[RecordMeta]]]


class _TopicMetrics:
    """The metric children of one (group, topic)."""

    __slots__ = ("consumed", "dlq", "retries")

    def __init__(self, group: str, topic: str) -> None:
        self.consumed = RECORDS_CONSUMED.labels(group=group, topic=topic)
        self.retries = RETRIES.labels(group=group, topic=topic)
        self.dlq = DLQ_RECORDS.labels(group=group, topic=topic)


class Aborted(Exception):
    """Raised inside the runner when the abort event is set during a backoff or a `hold`."""


# The abort event of the runner whose handler call is in progress (None outside a runner).
_current_abort: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar(
    "bus_runner_abort", default=None
)


async def hold(seconds: float) -> None:
    """Wait `seconds` inside a handler, holding its partition — unless the consumer stops or
    loses the partition first: then `Aborted` is raised, which the handler lets through, and
    the runner returns without committing the batch (the next owner gets all of it again).

    This is how a handler waits for a record to come due without blocking a rebalance or a
    shutdown for the length of the wait. Outside a runner (a handler called directly) it is
    a plain sleep.
    """
    abort = _current_abort.get()
    if abort is None:
        await asyncio.sleep(seconds)
        return
    if abort.is_set():
        raise Aborted
    try:
        async with asyncio.timeout(seconds):
            await abort.wait()
    except TimeoutError:
        return
    raise Aborted


class BatchRunner:
    """Runs a handler over per-partition batches under the ack policy of this module."""

    def __init__(
        self,
        handler: Handler,
        *,
        group: str,
        publish_many: PublishMany,
        policy: RetryPolicy,
        abort: asyncio.Event,
    ) -> None:
        self._handler = handler
        self._group = group
        self._publish_many = publish_many
        self._policy = policy
        self._abort = abort
        # Metric children bound once (per topic on first sight), not per batch.
        self._latency = HANDLER_SECONDS.labels(group=group)
        self._topic_metrics: dict[str, _TopicMetrics] = {}

    async def run(self, records: Sequence[Record]) -> int:
        """Handle one partition's batch; returns the offset after the last record dealt with.

        That is `records[-1].offset + 1` normally, less if the abort event cut the work short
        (then only a prefix was handled or dead-lettered; it is `records[0].offset` if
        nothing was).
        """
        first = records[0]
        token = _current_abort.set(self._abort)
        try:
            with self._log_context(first, single=len(records) == 1):
                try:
                    await self._attempt(records)
                except Aborted:
                    done = first.offset
                except Exception as exc:  # every failure has a policy
                    done = await self._one_by_one(records, exc)
                else:
                    done = records[-1].offset + 1
        finally:
            _current_abort.reset(token)
        self._account(records, done)
        return done

    def _metrics(self, topic: str) -> _TopicMetrics:
        metrics = self._topic_metrics.get(topic)
        if metrics is None:
            metrics = self._topic_metrics[topic] = _TopicMetrics(self._group, topic)
        return metrics

    def _log_context(
        self, record: Record, *, single: bool
    ) -> contextlib.AbstractContextManager[None]:
        """Log fields while `record` (and the batch it starts) is handled."""
        if single:
            return logcontext.bind(
                group=self._group,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                trace_id=trace_id_of(record.value),
            )
        return logcontext.bind(
            group=self._group, topic=record.topic, partition=record.partition, offset=record.offset
        )

    def _account(self, records: Sequence[Record], done: int) -> None:
        """Count the records dealt with (offsets below `done`); at DEBUG, log each."""
        handled = (
            len(records)
            if done > records[-1].offset
            else sum(1 for r in records if r.offset < done)
        )
        if handled:
            self._metrics(records[0].topic).consumed.inc(handled)
        if log.isEnabledFor(logging.DEBUG):
            for record in records[:handled]:
                log.debug(
                    "group %s: handled %s[%d]@%d",
                    self._group,
                    record.topic,
                    record.partition,
                    record.offset,
                    extra={
                        "group": self._group,
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                        "trace_id": trace_id_of(record.value),
                    },
                )

    async def _one_by_one(self, records: Sequence[Record], exc: Exception) -> int:
        if len(records) > 1:
            log.info(
                "group %s: %s[%d] offsets %d..%d failed (%r); re-running them one by one",
                self._group,
                records[0].topic,
                records[0].partition,
                records[0].offset,
                records[-1].offset,
                exc,
            )
        for record in records:
            try:
                if len(records) == 1:
                    await self._dead_letter(record, exc)
                else:
                    with self._log_context(record, single=True):
                        await self._handle_single(record)
            except Aborted:
                return record.offset
        return records[-1].offset + 1

    async def _handle_single(self, record: Record) -> None:
        try:
            await self._attempt((record,))
        except Aborted:
            raise
        except Exception as exc:  # poison, or retries exhausted
            await self._dead_letter(record, exc)

    async def _attempt(self, records: Sequence[Record]) -> None:
        """Call the handler; retry transient failures; raise what is left."""
        try:
            await self._call(records)
        except Exception as exc:
            if not is_transient(exc):
                raise
            first_error = exc
        else:
            return
        # The slow path only: retries run under tenacity. The first attempt (above) already
        # failed, so the retries get one attempt less and the first backoff happens here.
        policy = self._policy
        if policy.max_attempts is not None and policy.max_attempts <= 1:
            raise first_error
        log.warning(
            "group %s: %s[%d] offsets %d..%d failed transiently (%r); retrying",
            self._group,
            records[0].topic,
            records[0].partition,
            records[0].offset,
            records[-1].offset,
            first_error,
        )
        await self._sleep(policy.initial_backoff_s)
        retries = None if policy.max_attempts is None else policy.max_attempts - 1
        counter = self._metrics(records[0].topic).retries
        async for attempt in self._retrying(retries, retry_all=False):
            with attempt:
                counter.inc()
                await self._call(records)

    async def _call(self, records: Sequence[Record]) -> None:
        """One handler call, timed."""
        start = time.perf_counter()
        try:
            await self._handler(records)
        finally:
            self._latency.observe(time.perf_counter() - start)

    def _retrying(self, attempts: int | None, *, retry_all: bool) -> tenacity.AsyncRetrying:
        policy = self._policy
        stop: tenacity.stop.stop_base = (
            tenacity.stop_never if attempts is None else tenacity.stop_after_attempt(attempts)
        )

        def should_retry(exc: BaseException) -> bool:
            return not isinstance(exc, Aborted) and (retry_all or is_transient(exc))

        return tenacity.AsyncRetrying(
            sleep=self._sleep,
            stop=stop,
            wait=tenacity.wait_exponential_jitter(
                multiplier=policy.initial_backoff_s * 2,
                max=policy.max_backoff_s,
                jitter=policy.jitter_s,
            ),
            retry=tenacity.retry_if_exception(should_retry),
            reraise=True,
        )

    async def _dead_letter(self, record: Record, exc: BaseException) -> None:
        error = str(exc) or repr(exc)
        headers = (
            *record.headers,
            (DLQ_ERROR, error[:_MAX_ERROR_LEN].encode("utf-8", "replace")),
            (DLQ_ERROR_TYPE, f"{type(exc).__module__}.{type(exc).__qualname__}".encode()),
            (DLQ_TOPIC, record.topic.encode()),
            (DLQ_PARTITION, str(record.partition).encode()),
            (DLQ_OFFSET, str(record.offset).encode()),
            (DLQ_GROUP, self._group.encode()),
        )
        item = Outgoing(dlq_topic(record.topic), record.value, key=record.key, headers=headers)
        self._metrics(record.topic).dlq.inc()
        log.warning(
            "group %s: dead-lettering %s[%d]@%d: %s: %s",
            self._group,
            record.topic,
            record.partition,
            record.offset,
            type(exc).__name__,
            error,
            extra={"offset": record.offset, "trace_id": trace_id_of(record.value)},
        )
        async for attempt in self._retrying(None, retry_all=True):
            with attempt:
                try:
                    await self._publish_many((item,))
                except Exception:
                    log.exception(
                        "group %s: cannot publish to %s; retrying", self._group, item.topic
                    )
                    raise

    async def _sleep(self, seconds: float) -> None:
        """Backoff that ends early, with `Aborted`, when the consumer stops or loses the batch."""
        if self._abort.is_set():
            raise Aborted
        try:
            async with asyncio.timeout(seconds):
                await self._abort.wait()
        except TimeoutError:
            return
        raise Aborted
