"""The ack policy of `bus.runner`, driven directly (the contract tests cover it end to end)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, UnsupportedVersionError

from bus.base import DLQ_ERROR, Record, Reject, RetriableError, RetryPolicy, dlq_topic
from bus.memory import MemoryBus
from bus.runner import BatchRunner
from bus.transient import is_transient, register_transient

FAST = RetryPolicy(initial_backoff_s=0.001, max_backoff_s=0.002, jitter_s=0)


@pytest.mark.parametrize(
    "error",
    [
        RetriableError("x"),
        ConnectionResetError(),
        TimeoutError(),
        KafkaConnectionError("x"),
        KafkaTimeoutError("x"),
    ],
)
def test_transient_errors(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error", [Reject("x"), ValueError("x"), UnsupportedVersionError("x"), KeyError("x")]
)
def test_permanent_errors(error: Exception) -> None:
    assert not is_transient(error)


class _DriverError(Exception):
    """What a store adapter's driver raises."""


def _is_driver_error(exc: BaseException) -> bool:
    return isinstance(exc, _DriverError) and "busy" in str(exc)


def test_a_registered_classifier_decides_for_the_errors_it_knows() -> None:
    assert not is_transient(_DriverError("busy"))
    register_transient(_is_driver_error)
    register_transient(_is_driver_error)  # once is enough
    assert is_transient(_DriverError("busy"))
    assert not is_transient(_DriverError("bad document"))
    assert not is_transient(ValueError("busy"))


class Fixture:
    def __init__(self, *values: bytes, policy: RetryPolicy = FAST) -> None:
        self.bus = MemoryBus()
        self.bus.create_topic("t", 1)
        self.bus.create_topic(dlq_topic("t"), 1)
        self.records = [Record("t", 0, n, b"k", v, (), 0) for n, v in enumerate(values)]
        self.calls: list[list[bytes]] = []
        self.abort = asyncio.Event()
        self.policy = policy
        self.called = asyncio.Event()

    async def wait_for_call(self, values: list[bytes]) -> None:
        async with asyncio.timeout(5):
            while values not in self.calls:
                self.called.clear()
                await self.called.wait()

    def runner(self, fail: dict[bytes, Exception]) -> BatchRunner:
        async def handler(records: Sequence[Record]) -> None:
            self.calls.append([r.value for r in records])
            self.called.set()
            for record in records:
                if record.value in fail:
                    raise fail[record.value]

        return BatchRunner(
            handler,
            group="g",
            publish_many=self.bus.publish_batch,
            policy=self.policy,
            abort=self.abort,
        )

    def dead(self) -> list[bytes]:
        return [r.value for r in self.bus._topic(dlq_topic("t")).logs[0]]


async def test_a_failing_batch_is_rerun_record_by_record() -> None:
    f = Fixture(b"a", b"poison", b"b")
    assert await f.runner({b"poison": ValueError("bad")}).run(f.records) == 3
    assert f.calls == [[b"a", b"poison", b"b"], [b"a"], [b"poison"], [b"b"]]
    assert f.dead() == [b"poison"]
    assert f.bus._topic("t.dlq").logs[0][0].header(DLQ_ERROR) == b"bad"


async def test_a_single_record_batch_is_dead_lettered_without_a_rerun() -> None:
    f = Fixture(b"poison")
    assert await f.runner({b"poison": Reject("nope")}).run(f.records) == 1
    assert f.calls == [[b"poison"]]
    assert f.dead() == [b"poison"]


async def test_one_attempt_means_no_retry() -> None:
    f = Fixture(b"x", policy=RetryPolicy(max_attempts=1))
    assert await f.runner({b"x": RetriableError("down")}).run(f.records) == 1
    assert f.calls == [[b"x"]]
    assert f.dead() == [b"x"]


async def test_abort_during_backoff_returns_without_progress() -> None:
    f = Fixture(b"a", b"b", policy=RetryPolicy(initial_backoff_s=60, jitter_s=0))
    runner = f.runner({b"b": RetriableError("down")})
    task = asyncio.create_task(runner.run(f.records))
    await f.wait_for_call([b"a", b"b"])
    f.abort.set()
    async with asyncio.timeout(5):
        assert await task == 0
    assert f.dead() == []


async def test_abort_while_rerunning_keeps_the_prefix_already_dealt_with() -> None:
    f = Fixture(b"poison", b"ok", b"stuck", b"later")
    f.policy = RetryPolicy(initial_backoff_s=60, jitter_s=0)
    runner = f.runner({b"poison": ValueError("bad"), b"stuck": RetriableError("down")})
    task = asyncio.create_task(runner.run(f.records))
    await f.wait_for_call([b"stuck"])
    f.abort.set()
    async with asyncio.timeout(5):
        # poison (dead-lettered) and ok are done; the partition resumes at "stuck".
        assert await task == 2
    assert f.dead() == [b"poison"]
