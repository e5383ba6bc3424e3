"""Redis plumbing: client construction and readiness ping (redis.asyncio), one Redis or a
Redis Cluster.

The URL chooses: ``redis://``, ``rediss://`` or ``unix://`` is one server (`redis.asyncio.Redis`);
``redis+cluster://`` or ``rediss+cluster://`` followed by one or more ``host:port`` seed nodes,
comma-separated (``redis+cluster://user:pass@10.0.0.1:7000,10.0.0.2:7000``), is a Redis
Cluster (`redis.asyncio.cluster.RedisCluster`, which learns every node and slot from the
seeds). Every store takes either (`RedisClient`): the keys that a script or a transaction
touches together share a hash tag (`store.redis.keys`), and no path sends a command a
cluster refuses.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias, TypeVar, cast
from urllib.parse import unquote

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection

__all__ = [
    "CLUSTER_SCHEMES",
    "BoundedRedisCluster",
    "RedisClient",
    "connect_redis",
    "hiredis_packing",
    "is_cluster",
    "parse_cluster_url",
    "ping",
]

#: One Redis server or a Redis Cluster: every store works on both.
RedisClient: TypeAlias = Redis | RedisCluster

#: URL schemes of a Redis Cluster (the seeds follow, comma-separated), and whether TLS.
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}


def is_cluster(redis: RedisClient) -> bool:
    """Whether `redis` is a Redis Cluster client."""
    return isinstance(redis, RedisCluster)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None, bool]:
    """The seed nodes, username, password and TLS flag of a ``redis+cluster://`` URL.

    Raises `ValueError` for another scheme, no seed, a seed without a port, or a database
    number other than 0 (a cluster has only database 0)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"not a Redis Cluster URL (redis+cluster://host:port,...): {url!r}")
    netloc, _, path = rest.partition("/")
    path = path.partition("?")[0]
    if path not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, not {path!r}: {url!r}")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    seeds: list[tuple[str, int]] = []
    for seed in filter(None, netloc.split(",")):
        host, colon, port = seed.rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"a Redis Cluster seed is host:port, not {seed!r}: {url!r}")
        seeds.append((host.strip("[]"), int(port)))
    if not seeds:
        raise ValueError(f"a Redis Cluster URL names at least one seed node: {url!r}")
    return seeds, username, password, CLUSTER_SCHEMES[scheme]


class _BoundedPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = self.cluster_client
        assert isinstance(client, BoundedRedisCluster)
        await client.ready()
        async with client.pipelines_in_flight:
            return await super().execute(raise_on_error, allow_redirections)


class BoundedRedisCluster(RedisCluster):
    """A `RedisCluster` whose bursts wait for a connection instead of failing.

    redis-py's cluster nodes raise ``MaxConnectionsError`` once `max_connections` are busy,
    where the single-server client of `connect_redis` waits (its blocking pool: the gate's
    login burst). Here at most `max_connections` commands and pipelines are in flight at
    once — so no node ever needs more connections than that — and the rest wait. Commands
    and pipelines have a half each: a pipeline that meets a MOVED re-sends that command on
    its own, holding its pipeline's turn, and must never wait behind other pipelines.
    """

    def __init__(self, *, max_connections: int = 64, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        half = max(1, max_connections // 2)
        self.commands_in_flight = asyncio.Semaphore(half)
        self.pipelines_in_flight = asyncio.Semaphore(max(1, max_connections - half))

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await self.ready()
        async with self.commands_in_flight:
            return await super().execute_command(*args, **kwargs)

    async def ready(self) -> None:
        """Learn the cluster's nodes and slots before any command goes out.

        redis-py 8.1 initialises a fresh client inside the first commands; with several of
        them in flight at once, one in ~15 failed with ``AttributeError: 'NoneType' object
        has no attribute 'writelines'`` (its connection, made during the initialisation,
        was disconnected under it — measured here: 2-4 of 40 bursts of 10 first commands;
        0 of 60 once the client was initialised first). Every command and pipeline waits
        for the initialisation here, so none is in flight while it runs.
        """
        if self._initialize:
            await self.initialize()

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises, as redis-py does
        # ClusterPipeline declares an attribute abstract that its own constructor sets;
        # redis-py's `RedisCluster.pipeline` instantiates it the same way.
        return _BoundedPipeline(self, transaction)  # type: ignore[abstract]


def connect_redis(
    url: str,
    *,
    client_name: str = "coffeebus",
    max_connections: int = 64,
    pool_timeout: float = 5.0,
    socket_connect_timeout: float = 5.0,
    socket_timeout: float | None = 5.0,
    health_check_interval: float = 30.0,
) -> RedisClient:
    """A client for `url` (module docstring: one server or a cluster) returning bytes.

    One server: the pool is a *blocking* one of `max_connections`: a burst of more
    concurrent commands than that (400 logins arriving at a gate at once) waits up to
    `pool_timeout` for a free connection, where redis-py's default pool raises
    ``MaxConnectionsError`` past 100 and the logins fail. A cluster: `max_connections` per
    node, and bursts wait the same way (`BoundedRedisCluster`). Timeouts are in seconds and
    bounded, so a dead server fails calls instead of hanging them; `health_check_interval`
    makes a connection idle that long PING before reuse, so a connection the server or a
    proxy dropped is noticed before a command is lost on it.
    """
    if url.partition("://")[0] in CLUSTER_SCHEMES:
        seeds, username, password, tls = parse_cluster_url(url)
        return BoundedRedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],
            username=username,
            password=password,
            ssl=tls,
            max_connections=max_connections,
            client_name=client_name,
            socket_connect_timeout=socket_connect_timeout,
            socket_timeout=socket_timeout,
            health_check_interval=health_check_interval,
            decode_responses=False,
        )
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
    # The URL chose TCP, TLS or a unix socket; its connections pack commands in C.
    pool.connection_class = hiredis_packing(pool.connection_class)
    return Redis.from_pool(pool)


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {}
_Conn = TypeVar("_Conn", bound=AbstractConnection)


def hiredis_packing(base: type[_Conn]) -> type[_Conn]:
    """`base` packing its commands with `hiredis.pack_command`.

    redis.asyncio packs in Python, and rebuilds its buffer for every argument: the fan-out's
    inbox script (a few arguments per recipient, a thousand recipients in a group message)
    spent more of the server's CPU being packed than anywhere else. hiredis is already the
    reply parser. The output is the same RESP; an argument hiredis does not take (a bool,
    None: redis-py refuses them with its own `DataError`) goes the Python way.
    """
    packing = _PACKING.get(base)
    if packing is None:

        def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
            first = args[0]
            # As redis-py does: a command name given with its subcommand ("CONFIG GET")
            # is sent as separate arguments.
            if isinstance(first, str):
                if " " in first:
                    args = (*first.split(), *args[1:])
            elif isinstance(first, bytes) and b" " in first:
                args = (*first.split(), *args[1:])
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                return base.pack_command(self, *args)

        packing = type(f"HiredisPacking{base.__name__}", (base,), {"pack_command": pack_command})
        _PACKING[base] = packing
    return cast(type[_Conn], packing)


async def ping(redis: RedisClient) -> None:
    """Raise unless the server answers (readiness check; a cluster: every primary)."""
    await redis.ping()
