"""Which redis-py errors the runner retries (`store.redis.errors`, registered with the bus)."""

from __future__ import annotations

import pytest
import redis.exceptions

from bus.transient import is_transient
from store.redis.errors import ReplicationShortfallError, is_transient_redis
from tests.fresh import fresh_python


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ConnectionError("x"),
        redis.exceptions.TimeoutError("x"),
        redis.exceptions.BusyLoadingError("x"),
        redis.exceptions.MaxConnectionsError("x"),
        # a Redis Cluster failing over
        redis.exceptions.ClusterDownError("CLUSTERDOWN"),
        redis.exceptions.MasterDownError("MASTERDOWN"),
        redis.exceptions.TryAgainError("TRYAGAIN"),
        redis.exceptions.SlotNotCoveredError("x"),
        redis.exceptions.ReadOnlyError("READONLY"),
        ReplicationShortfallError("WAIT 1 1000: 0"),
    ],
)
def test_transient_errors(error: Exception) -> None:
    assert is_transient_redis(error)
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ResponseError("WRONGTYPE"),
        redis.exceptions.NoScriptError("x"),
        redis.exceptions.DataError("x"),
        ValueError("x"),
    ],
)
def test_permanent_errors(error: Exception) -> None:
    assert not is_transient_redis(error)
    assert not is_transient(error)


def test_importing_an_adapter_registers_the_classifier() -> None:
    code = (
        "from redis.exceptions import ConnectionError\n"
        "from bus.transient import is_transient\n"
        "print(is_transient(ConnectionError('x')))\n"
        "import store.redis.routes\n"
        "print(is_transient(ConnectionError('x')))\n"
    )
    out = fresh_python(code)
    assert out.split() == ["False", "True"]
