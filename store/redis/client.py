"""Redis plumbing: client construction and readiness ping (redis.asyncio)."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

__all__ = ["connect_redis", "ping"]


def connect_redis(
    url: str,
    *,
    client_name: str = "coffeebus",
    max_connections: int = 64,
    pool_timeout: float = 5.0,
    socket_connect_timeout: float = 5.0,
    socket_timeout: float | None = 5.0,
    health_check_interval: float = 30.0,
) -> Redis:
    """A client for `url` (``redis://``, ``rediss://`` or ``unix://``) returning bytes.

    The pool is a *blocking* one of `max_connections`: a burst of more concurrent commands
    than that (400 logins arriving at a gate at once) waits up to `pool_timeout` for a free
    connection, where redis-py's default pool raises ``MaxConnectionsError`` past 100 and the
    logins fail. Timeouts are in seconds and bounded, so a dead server fails calls instead of
    hanging them; `health_check_interval` makes a connection idle that long PING before
    reuse, so a connection the server or a proxy dropped is noticed before a command is lost
    on it.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout,
        client_name=client_name,
        socket_connect_timeout=socket_connect_timeout,
        socket_timeout=socket_timeout,
        health_check_interval=health_check_interval,
        decode_responses=False,
    )
    return Redis.from_pool(pool)


async def ping(redis: Redis) -> None:
    """Raise unless the server answers (readiness check)."""
    await redis.ping()
