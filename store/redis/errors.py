"""Which redis-py errors are transient, registered with `bus.transient` on import.

Connection and timeout errors (redis-py's own classes, not Python's) and `BusyLoadingError`
(a restarted server still loading its data): the command may succeed if sent again. Every
other error — a script error, a wrong type — is a bug or poison, not a busy server.
"""

from __future__ import annotations

import redis.exceptions

from bus.transient import register_transient

__all__ = ["is_transient_redis"]

_TRANSIENT = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)


def is_transient_redis(exc: BaseException) -> bool:
    """Whether `exc` is a redis-py error worth retrying (module docstring)."""
    return isinstance(exc, _TRANSIENT)


register_transient(is_transient_redis)
