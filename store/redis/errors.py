"""Which redis-py errors are transient, registered with `bus.transient` on import.

Connection and timeout errors (redis-py's own classes, not Python's) and `BusyLoadingError`
(a restarted server still loading its data), a Redis Cluster's failover errors (the slot's
master down, a slot that no node serves for a moment, a former master that is a replica
now) and `ReplicationShortfallError` (writes not acknowledged by enough replicas): the
command may succeed if sent again. Every
other error — a script error, a wrong type — is a bug or poison, not a busy server.
"""

from __future__ import annotations

import redis.exceptions

from bus.transient import register_transient

__all__ = ["ReplicationShortfallError", "is_transient_redis"]


class ReplicationShortfallError(redis.exceptions.RedisError):
    """Writes that must survive a failover were not acknowledged by enough replicas in time
    (``WAIT``, `store.redis.scripts.ReplicaWait`): sent again, they may be."""


_TRANSIENT = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    # A Redis Cluster failing over: the slot's master is down or being replaced, a
    # multi-key command met a slot in migration, a node now a replica refused a write.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.ReadOnlyError,
    ReplicationShortfallError,
)


def is_transient_redis(exc: BaseException) -> bool:
    """Whether `exc` is a redis-py error worth retrying (module docstring)."""
    return isinstance(exc, _TRANSIENT)


register_transient(is_transient_redis)
