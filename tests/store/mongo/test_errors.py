"""Which PyMongo errors the runner retries (`store.mongo.errors`, registered with the bus)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DuplicateKeyError,
    NetworkTimeout,
    OperationFailure,
)

from bus.base import Record, RetryPolicy, dlq_topic
from bus.memory import MemoryBus
from bus.runner import BatchRunner
from bus.transient import is_transient
from store.mongo.errors import is_transient_mongo
from tests.fresh import fresh_python

SQLITE_BUSY = (
    "[collection.go:135 sqlite.(*collection).UpdateAll] database is locked (5) (SQLITE_BUSY)"
)
FAST = RetryPolicy(initial_backoff_s=0.001, max_backoff_s=0.002, jitter_s=0)


@pytest.mark.parametrize(
    "error",
    [
        AutoReconnect("x"),
        NetworkTimeout("x"),
        # What FerretDB v1 on SQLite answers when a write waited out SQLite's busy timeout.
        OperationFailure(SQLITE_BUSY, code=1),
        OperationFailure("not primary", code=10107),
        OperationFailure("x", code=2, details={"errorLabels": ["RetryableWriteError"]}),
        BulkWriteError({"writeErrors": [{"index": 0, "code": 1, "errmsg": SQLITE_BUSY}]}),
    ],
)
def test_transient_errors(error: Exception) -> None:
    assert is_transient_mongo(error)
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        DuplicateKeyError("x"),
        OperationFailure("unknown operator: $bad", code=2),
        OperationFailure("some other internal error", code=1),
        # One poison document makes the bulk permanent, even beside a busy one.
        BulkWriteError(
            {
                "writeErrors": [
                    {"index": 0, "code": 1, "errmsg": SQLITE_BUSY},
                    {"index": 1, "code": 52, "errmsg": "bad field name"},
                ]
            }
        ),
        ValueError("x"),
    ],
)
def test_permanent_errors(error: Exception) -> None:
    assert not is_transient_mongo(error)
    assert not is_transient(error)


def test_importing_an_adapter_registers_the_classifier() -> None:
    # A fresh interpreter: the bus alone does not know PyMongo's errors; any Mongo adapter
    # brings its classifier along.
    code = (
        "from pymongo.errors import AutoReconnect\n"
        "from bus.transient import is_transient\n"
        "print(is_transient(AutoReconnect('x')))\n"
        "import store.mongo.messages\n"
        "print(is_transient(AutoReconnect('x')))\n"
    )
    out = fresh_python(code)
    assert out.split() == ["False", "True"]


async def test_the_runner_retries_a_transient_bulk_error_and_dead_letters_a_poison_one() -> None:
    bus = MemoryBus()
    bus.create_topic("t", 1)
    bus.create_topic(dlq_topic("t"), 1)
    records = [Record("t", 0, n, b"k", v, (), 0) for n, v in enumerate([b"busy", b"poison"])]
    busy = BulkWriteError({"writeErrors": [{"index": 0, "code": 1, "errmsg": SQLITE_BUSY}]})
    poison = BulkWriteError({"writeErrors": [{"index": 0, "code": 52, "errmsg": "bad name"}]})
    attempts: list[bytes] = []

    async def handler(batch: Sequence[Record]) -> None:
        for record in batch:
            attempts.append(record.value)
            if record.value == b"busy" and attempts.count(b"busy") <= 2:
                raise busy
            if record.value == b"poison":
                raise poison

    runner = BatchRunner(
        handler, group="g", publish_many=bus.publish_batch, policy=FAST, abort=asyncio.Event()
    )
    assert await runner.run(records) == 2
    # Retried twice as a batch, then the poison one isolated and dead-lettered.
    assert attempts[:3] == [b"busy", b"busy", b"busy"]
    assert [r.value for r in bus._topic(dlq_topic("t")).logs[0]] == [b"poison"]
