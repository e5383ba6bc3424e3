"""Redis plumbing: client construction and readiness ping (redis.asyncio)."""

from __future__ import annotations

from redis.asyncio import Redis


def connect_redis(
    url: str,
    *,
    client_name: str = "coffeebus",
    socket_connect_timeout: float = 5.0,
    socket_timeout: float | None = 5.0,
    health_check_interval: float = 30.0,
) -> Redis:
    """A client for `url` (``redis://``, ``rediss://`` or ``unix://``) returning bytes.

    Timeouts are in seconds and bounded, so a dead server fails calls instead of hanging
    them; `health_check_interval` makes a connection idle that long PING before reuse, so a
    connection the server or a proxy dropped is noticed before a command is lost on it.
    """
    return Redis.from_url(
        url,
        client_name=client_name,
        socket_connect_timeout=socket_connect_timeout,
        socket_timeout=socket_timeout,
        health_check_interval=health_check_interval,
        decode_responses=False,
    )


async def ping(redis: Redis) -> None:
    """Raise unless the server answers (readiness check)."""
    await redis.ping()
