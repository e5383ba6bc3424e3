"""`RouteStore` on Redis (redis.asyncio).

Keys (`store.redis.keys`):

- ``route:<user_id>``: a hash, field = client type, value = the route as a compact JSON array
  ``[gate_id, conn_id, client_type, login_ms]``; the hash's TTL is the user's route TTL.
  Replace-and-return and compare-and-delete run as Lua scripts, so each is atomic. Encoding
  is deterministic, so "still the same route" is a byte comparison inside the script.
- ``{gates}:load``: a sorted set, gate id scored by connection count; ``{gates}:gate:<id>``:
  the gate's `GateInfo` as JSON with the heartbeat TTL. A heartbeat writes both in one
  MULTI; `RedisRouteStore.live_gates` prunes set members whose key has lapsed, with a script
  that re-checks each key so a gate that heartbeats meanwhile is never dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final, cast

import msgspec

from store.ids import ConnId, GateId, UserId
from store.redis.client import RedisClient, is_cluster
from store.redis.keys import RedisKeys
from store.routes import GateInfo, Route, ttl_to_ms

logger = logging.getLogger(__name__)

# KEYS[1] route hash; ARGV[1] client type; ARGV[2] encoded route; ARGV[3] TTL ms
_REGISTER: Final = """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return previous
"""

# KEYS[1] route hash; ARGV[1] client type; ARGV[2] encoded route expected to be current
_UNREGISTER: Final = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

# KEYS[1] load zset; KEYS[2..n] gate keys; ARGV[1..n-1] the matching gate ids
_PRUNE_GATES: Final = """
local removed = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i - 1])
  end
end
return removed
"""

# KEYS: route hashes; returns the values of each, in order
_GET_MANY: Final = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HVALS', key)
end
return out
"""

# get_many is cut in chunks so one call for a huge group does not build one giant request
# and reply in memory, nor hold Redis in one script for long.
_GET_MANY_CHUNK: Final = 1000

_RouteTuple = tuple[str, int, int, int]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def encode_route(route: Route) -> bytes:
    """The stored form of a route (deterministic: equal routes give equal bytes)."""
    return msgspec.json.encode((route.gate_id, route.conn_id, route.client_type, route.login_ms))


def decode_route(data: bytes | str) -> Route:
    """Parse a stored route; raises `msgspec.DecodeError` or `msgspec.ValidationError`."""
    gate_id, conn_id, client_type, login_ms = msgspec.json.decode(data, type=_RouteTuple)
    return Route(
        gate_id=GateId(gate_id),
        conn_id=ConnId(conn_id),
        client_type=client_type,
        login_ms=login_ms,
    )


class RedisRouteStore:
    """`RouteStore` on a Redis client created with ``decode_responses=False``.

    `get_many` reads many users' hashes in one script call: the fan-out consumer asks for
    a whole group's routes at once, and one script is 2-3x faster than a pipeline of as many
    commands through redis-py (measured: 1,000 users in ~16 ms against ~36 ms). A script
    must not touch keys of several cluster slots (each user's routes are a slot of their own),
    so against a Redis Cluster it uses a pipeline of ``HVALS``, which the cluster client
    splits per node and sends to the nodes at once; ``cluster=True`` forces that mode on
    one server (tests).
    """

    def __init__(
        self, redis: RedisClient, *, keys: RedisKeys | None = None, cluster: bool = False
    ) -> None:
        self._redis = redis
        self._keys = keys or RedisKeys()
        self._cluster = cluster or is_cluster(redis)
        self._get_many = redis.register_script(_GET_MANY)
        self._register = redis.register_script(_REGISTER)
        self._unregister = redis.register_script(_UNREGISTER)
        self._prune_gates = redis.register_script(_PRUNE_GATES)
        self._gate_decoder = msgspec.json.Decoder(GateInfo)

    async def register(self, user_id: UserId, route: Route, *, ttl: float) -> Route | None:
        """Set the route of its client type atomically; return the one it replaced."""
        previous = await self._register(
            keys=[self._keys.route(user_id)],
            args=[route.client_type, encode_route(route), ttl_to_ms(ttl)],
        )
        if previous is None:
            return None
        try:
            replaced = decode_route(previous)
        except (msgspec.DecodeError, msgspec.ValidationError):
            logger.warning("user %d had an unreadable route %r; replaced it", user_id, previous)
            return None
        return None if replaced.same_connection(route) else replaced

    async def unregister(self, user_id: UserId, route: Route) -> bool:
        """Remove `route` if it is still current (compare-and-delete)."""
        removed = await self._unregister(
            keys=[self._keys.route(user_id)], args=[route.client_type, encode_route(route)]
        )
        return bool(removed)

    async def get(self, user_id: UserId) -> list[Route]:
        """The user's routes, by client type."""
        fields = await self._redis.hgetall(self._keys.route(user_id))
        return self._parse(user_id, fields.values())

    async def get_many(self, user_ids: Iterable[UserId]) -> dict[UserId, list[Route]]:
        """Routes of many users in one round trip per 1,000; users without routes are left
        out."""
        ids = list(dict.fromkeys(user_ids))
        found: dict[UserId, list[Route]] = {}
        for start in range(0, len(ids), _GET_MANY_CHUNK):
            chunk = ids[start : start + _GET_MANY_CHUNK]
            keys = [self._keys.route(user_id) for user_id in chunk]
            replies: list[list[bytes]]
            if self._cluster:
                pipe = self._redis.pipeline(transaction=False)
                for key in keys:
                    pipe.hvals(key)
                replies = await pipe.execute()
            else:
                replies = await self._get_many(keys=keys)
            for user_id, values in zip(chunk, replies, strict=True):
                if routes := self._parse(user_id, values):
                    found[user_id] = routes
        return found

    @staticmethod
    def _parse(user_id: UserId, values: Iterable[bytes | str]) -> list[Route]:
        routes: list[Route] = []
        for value in values:
            try:
                routes.append(decode_route(value))
            except (msgspec.DecodeError, msgspec.ValidationError):
                # One corrupt entry must not hide the user's other devices.
                logger.warning("user %d has an unreadable route %r; skipped", user_id, value)
        routes.sort(key=lambda route: route.client_type)
        return routes

    async def refresh(self, user_id: UserId, *, ttl: float) -> bool:
        """Re-arm the user's route TTL."""
        return bool(await self._redis.pexpire(self._keys.route(user_id), ttl_to_ms(ttl)))

    async def gate_heartbeat(
        self,
        gate_id: GateId,
        *,
        tcp_addr: str,
        ws_addr: str,
        connections: int,
        ttl: float,
    ) -> None:
        """Record the gate as alive with this load (key with TTL + score, in one MULTI)."""
        info = GateInfo(
            gate_id=gate_id, tcp_addr=tcp_addr, ws_addr=ws_addr, connections=connections
        )
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.gate(gate_id), msgspec.json.encode(info), px=ttl_to_ms(ttl))
            pipe.zadd(self._keys.gate_load(), {gate_id: connections})
            await pipe.execute()

    async def gate_down(self, gate_id: GateId) -> None:
        """Remove the gate from the registry."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._keys.gate(gate_id))
            pipe.zrem(self._keys.gate_load(), gate_id)
            await pipe.execute()

    async def live_gates(self) -> list[GateInfo]:
        """Live gates, least loaded first; members whose key lapsed are pruned."""
        # Without WITHSCORES the reply is a flat list of members.
        members = cast("list[bytes | str]", await self._redis.zrange(self._keys.gate_load(), 0, -1))
        if not members:
            return []
        gate_ids = [_text(member) for member in members]
        gate_keys = [self._keys.gate(gate_id) for gate_id in gate_ids]
        values = await self._redis.mget(gate_keys)
        live: list[GateInfo] = []
        lapsed: list[str] = []
        for gate_id, value in zip(gate_ids, values, strict=True):
            if value is None:
                lapsed.append(gate_id)
                continue
            try:
                live.append(self._gate_decoder.decode(value))
            except (msgspec.DecodeError, msgspec.ValidationError):
                logger.warning("gate %s has an unreadable record %r; skipped", gate_id, value)
        if lapsed:
            pruned = await self._prune_gates(
                keys=[self._keys.gate_load(), *(self._keys.gate(g) for g in lapsed)],
                args=lapsed,
            )
            logger.info("pruned %d lapsed gate(s) from the registry: %s", pruned, lapsed)
        # The set's order is the load at the time of each heartbeat, and every record was
        # written with its score in one MULTI, so sorting the records agrees with it.
        live.sort(key=lambda info: (info.connections, info.gate_id))
        return live
