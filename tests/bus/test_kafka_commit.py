"""`KafkaConsumer`'s commits: one per interval at most, and a commit that outlasts its wait
(a broker paused or unreachable).

A broker that stalls one member's commit cannot be had on demand from the shared test
broker, so the member's aiokafka consumer is replaced by one whose commits behave as
aiokafka's do — under a commit lock, sent from a shielded task that outlives a cancelled
caller — and take as long as the test says. (`make chaos` pauses real brokers and groups.)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka.errors import CommitFailedError

from bus.base import Record, RetryPolicy, TopicPartition
from bus.kafka import KafkaBus, KafkaConsumer

TP = TopicPartition("im.up.msg", 0)


class StalledCommits:
    """aiokafka's commit path (`GroupCoordinator.commit_offsets`): a lock, then a shielded
    send; each send takes the next of `delays` and then fails with `error`, if given."""

    def __init__(self, delays: list[float], error: Exception | None = None) -> None:
        self._delays = delays
        self._error = error
        self._lock = asyncio.Lock()
        #: offsets in the order they reached the "broker"
        self.landed: list[dict[Any, int]] = []
        #: the sends started and not yet collected (weakly held, so that an exception nobody
        #: retrieved is still reported when its task is collected)
        self.sends: weakref.WeakSet[asyncio.Task[None]] = weakref.WeakSet()
        self._landing = asyncio.Condition()

    async def commit(self, offsets: dict[Any, int]) -> None:
        async with self._lock:
            send = asyncio.ensure_future(self._send(offsets, self._delays.pop(0)))
            self.sends.add(send)
            await asyncio.shield(send)

    async def _send(self, offsets: dict[Any, int], delay: float) -> None:
        await asyncio.sleep(delay)
        if self._error is not None:
            raise self._error
        async with self._landing:
            self.landed.append(offsets)
            self._landing.notify_all()

    async def until_landed(self, count: int) -> None:
        """Wait until `count` commits have reached the "broker"."""
        async with asyncio.timeout(5), self._landing:
            await self._landing.wait_for(lambda: len(self.landed) >= count)


async def _handler(records: Sequence[Record]) -> None:
    pass


def member(commits: StalledCommits, timeout_s: float, interval_ms: int = 100) -> KafkaConsumer:
    bus = KafkaBus(
        "127.0.0.1:9", request_timeout_ms=int(timeout_s * 1000), commit_interval_ms=interval_ms
    )
    consumer = KafkaConsumer(
        bus,
        "cbtest",
        ("im.up.msg",),
        _handler,
        batch_max=10,
        static_member_id=None,
        retry=RetryPolicy(),
    )
    consumer._consumer = commits
    return consumer


def offsets(stalled: StalledCommits) -> list[int]:
    return [next(iter(o.values())) for o in stalled.landed]


async def all_ended(stalled: StalledCommits, consumer: KafkaConsumer) -> None:
    """Wait until every send started has ended and every commit left running has ended and
    been reported (its done callback runs before `asyncio.wait`'s, added after it)."""
    await asyncio.wait([*stalled.sends, *consumer._late_commits])


async def test_a_late_commit_is_left_to_finish_and_its_failure_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unhandled: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda loop, context: unhandled.append(context)
    )
    stalled = StalledCommits([0.3], CommitFailedError("the member's session expired"))
    consumer = member(stalled, timeout_s=0.05)
    with caplog.at_level(logging.INFO, logger="bus.kafka"):
        await consumer._commit({TP: 10})
        assert "not done within" in caplog.text
        await all_ended(stalled, consumer)
    gc.collect()  # an exception nobody retrieved is reported when its task is collected
    assert unhandled == []
    assert "the late commit of" in caplog.text
    assert "session expired" in caplog.text
    assert not consumer._late_commits


async def test_a_newer_commit_never_lands_before_a_late_one() -> None:
    stalled = StalledCommits([0.3, 0.0])
    consumer = member(stalled, timeout_s=0.05)
    await consumer._commit({TP: 10})  # outlasts its wait
    await consumer._commit({TP: 20})  # waits behind it, and outlasts its wait too
    await all_ended(stalled, consumer)
    assert offsets(stalled) == [10, 20]
    assert not consumer._late_commits


async def test_a_commit_within_its_wait_moves_the_position() -> None:
    stalled = StalledCommits([0.0])
    consumer = member(stalled, timeout_s=1.0)
    await consumer._commit({TP: 7})
    assert offsets(stalled) == [7]
    assert consumer._positions == {TP: 7}
    assert not consumer._late_commits


async def test_batches_handled_within_an_interval_go_out_in_one_commit() -> None:
    stalled = StalledCommits([0.0] * 3)
    consumer = member(stalled, timeout_s=1.0, interval_ms=600_000)
    await consumer._commit_behind({TP: 1})  # the first commit goes at once
    await stalled.until_landed(1)
    for offset in (2, 3, 4):
        await consumer._commit_behind({TP: offset})
    assert consumer._uncommitted == {TP: 4}  # held for the interval
    assert offsets(stalled) == [1]
    await consumer._committed()  # a stop or a revocation: what is left goes now
    assert offsets(stalled) == [1, 4]
    assert consumer._positions == {TP: 4}


async def test_with_no_interval_each_batch_is_committed_in_order() -> None:
    stalled = StalledCommits([0.01] * 3)
    consumer = member(stalled, timeout_s=1.0, interval_ms=0)
    for offset in (1, 2):
        await consumer._commit_behind({TP: offset})
        await stalled.until_landed(offset)  # no wait between two commits
    await consumer._commit_behind({TP: 3})
    await consumer._committed()
    assert offsets(stalled) == [1, 2, 3]


async def test_a_commit_that_fails_ends_the_consumer_at_its_next_batch() -> None:
    stalled = StalledCommits([0.0], RuntimeError("coordinator on fire"))
    consumer = member(stalled, timeout_s=1.0)
    await consumer._commit_behind({TP: 1})
    assert consumer._committing is not None
    await asyncio.wait({consumer._committing})
    with pytest.raises(RuntimeError, match="coordinator on fire"):
        await consumer._commit_behind({TP: 2})
