"""`store.redis.scripts`: pipelined scripts with NOSCRIPT healed, and WAIT for replicas, on
the real Redis of the run — one server (`make test`) or a cluster (`make test-redis-cluster`)."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio.cluster import RedisCluster

from bus.transient import is_transient
from store.redis.client import RedisClient
from store.redis.errors import ReplicationShortfallError
from store.redis.keys import RedisKeys
from store.redis.scripts import ReplicaWait, ScriptRunner

pytestmark = pytest.mark.redis

_INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def _replicas_of_every_master(redis: RedisClient) -> int:
    """The fewest connected replicas of any master the client writes to."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()
        infos = await redis.info("replication", target_nodes=RedisCluster.PRIMARIES)
        return min(int(info["connected_slaves"]) for info in infos.values())
    return int((await redis.info("replication"))["connected_slaves"])


def _keys(redis_keys: RedisKeys, n: int) -> list[str]:
    # Keys of many slots (each its own hash): on a cluster, several nodes.
    return [redis_keys.rate_limit("script", i) for i in range(n)]


async def test_calls_of_many_slots_run_in_one_pipeline_and_load_a_new_script(
    redis: RedisClient, redis_keys: RedisKeys
) -> None:
    # A script no node has seen (its text is new: a new SHA1): every call of the first
    # pipeline meets NOSCRIPT, the script is loaded on every master, the calls sent again.
    # (Not SCRIPT FLUSH: the server may be the team's shared one.)
    runner = ScriptRunner(redis, f"-- {uuid.uuid4()}\n{_INCR}")
    keys = _keys(redis_keys, 20)
    assert await runner.run_many([([k], [i]) for i, k in enumerate(keys)]) == list(range(20))
    assert await runner.run_many([([k], [1]) for k in keys]) == list(range(1, 21))


async def test_writes_wait_for_a_replica_or_fail_transiently(
    redis: RedisClient, redis_keys: RedisKeys
) -> None:
    runner = ScriptRunner(redis, _INCR, replicas=ReplicaWait(replicas=1, timeout_ms=300))
    keys = _keys(redis_keys, 10)
    calls = [([k], [1]) for k in keys]
    if await _replicas_of_every_master(redis) >= 1:
        # Every master has a replica (the cluster profile): WAIT 1 is met.
        assert await runner.run_many(calls) == [1] * len(keys)
        assert await runner.run([keys[0]], [1]) == 2
    else:
        # One server without replicas: the writes are done, but not known to survive a
        # failover, so the caller hears a transient error and will send them again.
        with pytest.raises(ReplicationShortfallError) as raised:
            await runner.run_many(calls)
        assert is_transient(raised.value)
    more = ScriptRunner(redis, _INCR, replicas=ReplicaWait(replicas=5, timeout_ms=100))
    with pytest.raises(ReplicationShortfallError):  # nobody runs five replicas here
        await more.run_many(calls)


def test_replica_wait_is_validated() -> None:
    with pytest.raises(ValueError, match="replicas"):
        ReplicaWait(replicas=-1)
    with pytest.raises(ValueError, match="replicas"):
        ReplicaWait(replicas=1, timeout_ms=0)
