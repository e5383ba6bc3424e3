"""Running Lua scripts on Redis many at a time: one pipelined round trip, NOSCRIPT healed.

Every hot-state write is a script over the keys of one timeline (one hash tag, so one Redis
Cluster slot), and a batch touches many timelines: `ScriptRunner.run_many` sends one
``EVALSHA`` per timeline in one pipeline of independent commands — never a multi-slot
command — and, when Redis has lost the script (a restart, ``SCRIPT FLUSH``), loads it and
sends again only the calls that failed with NOSCRIPT. Scripts are written to be idempotent,
so a call that Redis ran before the connection broke may safely run again.

Writes that the logs of record rely on (docs/architecture.md, "Hot state") are waited for on
the master's replicas before the caller goes on (`ReplicaWait`, ``[redis] wait_replicas``),
so a Redis failover does not take them back.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, Final

import msgspec
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError

from store.redis.client import RedisClient
from store.redis.errors import ReplicationShortfallError

__all__ = ["NO_WAIT", "WINDOW_CUT", "Call", "ReplicaWait", "ScriptRunner", "ttl_ms"]

#: (keys, args) of one script call
Call = tuple[Sequence[str], Sequence[Any]]

#: A Lua function for the trim scripts: `window_cut(key, upto, window)` — of a sorted set
#: scored by seq, the highest score that may go (beyond the newest `window` members, and only
#: what the document store has: at most `upto`), or nil when it is within its window.
WINDOW_CUT: Final = """
local function window_cut(key, upto, window)
  local n = redis.call('ZCARD', key)
  if n <= window then return nil end
  local cut = redis.call('ZRANGE', key, n - window - 1, n - window - 1, 'WITHSCORES')
  return math.min(tonumber(cut[2]), upto)
end
"""


def ttl_ms(ttl: datetime.timedelta) -> int:
    """A positive TTL in milliseconds, as ``PEXPIRE`` takes it."""
    if ttl <= datetime.timedelta(0):
        raise ValueError("a TTL must be positive")
    return max(1, round(ttl.total_seconds() * 1000))


class ReplicaWait(msgspec.Struct, frozen=True):
    """How a script's writes are made to survive the failover of their Redis node.

    Redis replicates asynchronously: a write its master acknowledged can be lost when that
    master dies before a replica has it and the replica takes over. With `replicas` > 0 a
    `ScriptRunner` made with this sends ``WAIT replicas timeout_ms`` after its scripts, on the
    connection that ran them, and raises `ReplicationShortfallError` (transient: the bus
    runner retries the batch, and the scripts are idempotent) unless that many replicas
    acknowledged them. ``replicas=0``, the default: no WAIT (a single Redis without replicas).
    """

    replicas: int = 0
    timeout_ms: int = 1000

    def __post_init__(self) -> None:
        if self.replicas < 0 or self.timeout_ms < 1:
            raise ValueError(f"replicas >= 0 and timeout_ms >= 1, not {self}")


#: Scripts whose writes need no replica's acknowledgement.
NO_WAIT: Final = ReplicaWait()


class ScriptRunner:
    """One Lua script, registered once, run in pipelines (and its writes waited for on
    `replicas` replicas, `ReplicaWait`)."""

    def __init__(self, redis: RedisClient, source: str, *, replicas: ReplicaWait = NO_WAIT) -> None:
        self._redis = redis
        self._source = source
        self._script = redis.register_script(source)
        self._wait = replicas

    @property
    def sha(self) -> str:
        """The script's SHA1 (as ``EVALSHA`` names it)."""
        return str(self._script.sha)

    async def run(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One call (redis-py loads the script on NOSCRIPT)."""
        if self._wait.replicas:
            return (await self.run_many([(keys, args)]))[0]
        return await self._script(keys=list(keys), args=list(args))

    async def run_many(self, calls: Sequence[Call]) -> list[Any]:
        """Every call in one pipeline; results in order. Raises the first error that is not
        a NOSCRIPT healed by loading the script once, and `ReplicationShortfallError` when
        the writes did not reach the replicas asked for."""
        if not calls:
            return []
        if len(calls) == 1 and not self._wait.replicas:
            keys, args = calls[0]
            return [await self.run(keys, args)]
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for attempt in range(2):
            answers = await self._pipelined([calls[i] for i in pending])
            failed: list[int] = []
            for i, answer in zip(pending, answers, strict=True):
                if isinstance(answer, Exception):
                    if attempt or not isinstance(answer, NoScriptError):
                        raise answer
                    failed.append(i)
                else:
                    results[i] = answer
            if not failed:
                return results
            pending = failed
            await self._redis.script_load(self._source)
        return results

    async def _pipelined(self, calls: Sequence[Call]) -> list[Any]:
        """The calls in one pipeline, then a WAIT on every node they ran on (`ReplicaWait`)."""
        wait = self._wait
        redis = self._redis
        nodes: list[ClusterNode] = []
        if wait.replicas and isinstance(redis, RedisCluster):
            await redis.initialize()  # a no-op unless the slot map is (being) refreshed
            nodes = _nodes_of(redis, calls)
        async with redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                # EVALSHA by name: redis-py blocks `evalsha` in cluster pipelines, though a
                # cluster routes it by its keys like any keyed command.
                pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
            if wait.replicas:
                if isinstance(redis, RedisCluster):
                    for node in nodes:
                        pipe.execute_command(
                            "WAIT", wait.replicas, wait.timeout_ms, target_nodes=node
                        )
                else:
                    pipe.execute_command("WAIT", wait.replicas, wait.timeout_ms)
            answers: list[Any] = await pipe.execute(raise_on_error=False)
        if not wait.replicas:
            return answers
        acks = answers[len(calls) :]
        written = any(not isinstance(a, Exception) for a in answers[: len(calls)])
        if written:
            # A WAIT counts only the writes of its own connection: one sent to a node the
            # scripts did not run on (the slot moved in between: a failover) proves nothing.
            if isinstance(redis, RedisCluster) and _nodes_of(redis, calls) != nodes:
                raise ReplicationShortfallError(
                    "the Redis Cluster slot map changed while scripts ran; not known replicated"
                )
            for ack in acks:
                if isinstance(ack, Exception) or int(ack) < wait.replicas:
                    raise ReplicationShortfallError(
                        f"WAIT {wait.replicas} {wait.timeout_ms}: {ack!r} replica(s) acknowledged"
                    )
        return answers[: len(calls)]


def _nodes_of(redis: RedisCluster, calls: Sequence[Call]) -> list[ClusterNode]:
    """The distinct primaries serving the calls' slots (by each call's first key: every
    call's keys share one slot), in first-seen order."""
    seen: dict[str, ClusterNode] = {}
    for keys, _ in calls:
        if keys:
            node = redis.get_node_from_key(keys[0])
            if node is not None:
                seen.setdefault(node.name, node)
    return list(seen.values())
