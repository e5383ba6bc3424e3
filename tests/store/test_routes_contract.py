"""The `RouteStore` contract, run against the in-memory twin and Redis.

TTLs: the memory twin's clock is advanced past a TTL; on Redis the TTL is short (a few
hundred milliseconds, set with PEXPIRE) and the test waits — polling the key, with a
deadline — until Redis has expired it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from store.clock import ManualClock
from store.ids import ConnId, GateId, UserId
from store.memory.routes import MemoryRouteStore
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.redis.routes import RedisRouteStore
from store.routes import GateInfo, Route, RouteStore

ALICE = UserId(1001)
BOB = UserId(1002)
ANDROID, IOS, WEB = 1, 2, 3
TTL = 60.0
SHORT_TTL = 0.3
POLL_INTERVAL = 0.01
POLL_LIMIT = 500
"""A test waits at most POLL_LIMIT * POLL_INTERVAL (5 s) for Redis to expire a key."""


async def wait_until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll `condition` (a Redis key check) until it holds, failing after `POLL_LIMIT` tries.

    Redis offers no event for an expiry without changing the server's configuration
    (keyspace notifications), so this is a bounded poll of the condition itself.
    """
    for _ in range(POLL_LIMIT):
        if await condition():
            return
        await asyncio.sleep(POLL_INTERVAL)
    pytest.fail(f"condition not met within {POLL_LIMIT * POLL_INTERVAL:.0f} s")


def route(gate: str, conn: int, client_type: int = ANDROID, login_ms: int = 1) -> Route:
    return Route(
        gate_id=GateId(gate), conn_id=ConnId(conn), client_type=client_type, login_ms=login_ms
    )


class Harness:
    """A `RouteStore` with the means to let its TTLs lapse and read what is left of them."""

    def __init__(
        self,
        store: RouteStore,
        *,
        clock: ManualClock | None = None,
        redis: RedisClient | None = None,
        keys: RedisKeys | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self._redis = redis
        self._keys = keys or RedisKeys()

    async def lapse_routes(self, user_id: UserId, ttl: float) -> None:
        """Return once the user's routes, armed with `ttl`, have expired."""
        if self._clock is not None:
            self._clock.advance(ttl)
            return
        assert self._redis is not None
        redis, key = self._redis, self._keys.route(user_id)
        await wait_until(lambda: _gone(redis, key))

    async def lapse_gate(self, gate_id: GateId, ttl: float) -> None:
        """Return once the gate's registry entry, armed with `ttl`, has expired."""
        if self._clock is not None:
            self._clock.advance(ttl)
            return
        assert self._redis is not None
        redis, key = self._redis, self._keys.gate(gate_id)
        await wait_until(lambda: _gone(redis, key))

    async def routes_ttl_left(self, user_id: UserId) -> float:
        """Seconds left before the user's routes expire."""
        if self._clock is not None:
            assert isinstance(self.store, MemoryRouteStore)
            return self.store._users[user_id].expires_ms / 1000 - self._clock.now_ms() / 1000
        assert self._redis is not None
        left_ms = await self._redis.pttl(self._keys.route(user_id))
        assert left_ms > 0
        return float(left_ms) / 1000


async def _gone(redis: RedisClient, key: str) -> bool:
    return not await redis.exists(key)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster-mode", marks=pytest.mark.redis),
    ]
)
def routes(request: pytest.FixtureRequest, clock: ManualClock) -> Harness:
    """Each `RouteStore` implementation, empty (Redis also in its cluster-safe mode)."""
    if request.param == "memory":
        return Harness(MemoryRouteStore(clock=clock), clock=clock)
    redis: RedisClient = request.getfixturevalue("redis")
    keys: RedisKeys = request.getfixturevalue("redis_keys")
    store = RedisRouteStore(redis, keys=keys, cluster=request.param == "redis-cluster-mode")
    return Harness(store, redis=redis, keys=keys)


async def test_register_and_get(routes: Harness) -> None:
    store = routes.store
    assert await store.get(ALICE) == []
    phone = route("g1", 7, ANDROID)
    assert await store.register(ALICE, phone, ttl=TTL) is None
    assert await store.get(ALICE) == [phone]
    assert await store.get(BOB) == []


async def test_one_route_per_client_type_and_the_replaced_one_is_returned(
    routes: Harness,
) -> None:
    store = routes.store
    web = route("g1", 1, WEB)
    old_phone = route("g1", 2, ANDROID, login_ms=10)
    new_phone = route("g2", 9, ANDROID, login_ms=20)
    await store.register(ALICE, web, ttl=TTL)
    await store.register(ALICE, old_phone, ttl=TTL)

    assert await store.register(ALICE, new_phone, ttl=TTL) == old_phone

    assert await store.get(ALICE) == [new_phone, web]  # by client type


async def test_registering_the_same_connection_again_replaces_nothing(routes: Harness) -> None:
    store = routes.store
    await store.register(ALICE, route("g1", 7, login_ms=1), ttl=TTL)
    assert await store.register(ALICE, route("g1", 7, login_ms=2), ttl=TTL) is None
    assert await store.get(ALICE) == [route("g1", 7, login_ms=2)]


async def test_unregister_removes_only_the_current_route(routes: Harness) -> None:
    store = routes.store
    old = route("g1", 1, IOS, login_ms=1)
    # Same connection number on another gate: only the gate tells them apart.
    new = route("g2", 1, IOS, login_ms=2)
    await store.register(ALICE, old, ttl=TTL)
    await store.register(ALICE, new, ttl=TTL)

    # The kicked connection closes after the new login: the new route must stay.
    assert await store.unregister(ALICE, old) is False
    assert await store.get(ALICE) == [new]

    assert await store.unregister(ALICE, new) is True
    assert await store.get(ALICE) == []
    assert await store.unregister(ALICE, new) is False
    assert await store.unregister(BOB, new) is False


async def test_unregister_one_device_keeps_the_others(routes: Harness) -> None:
    store = routes.store
    phone, web = route("g1", 1, ANDROID), route("g2", 2, WEB)
    await store.register(ALICE, phone, ttl=TTL)
    await store.register(ALICE, web, ttl=TTL)
    assert await store.unregister(ALICE, phone)
    assert await store.get(ALICE) == [web]


async def test_get_many_for_a_large_group(routes: Harness) -> None:
    store = routes.store
    members = [UserId(10_000 + i) for i in range(1_200)]
    online = members[::2]
    for i, uid in enumerate(online):
        await store.register(uid, route(f"g{i % 3}", i), ttl=TTL)
    await store.register(online[0], route("g9", 99_999, WEB), ttl=TTL)

    found = await store.get_many(members)

    assert set(found) == set(online)
    assert found[online[1]] == [route("g1", 1)]
    assert found[online[0]] == [route("g0", 0), route("g9", 99_999, WEB)]
    assert await store.get_many([]) == {}
    assert await store.get_many([BOB, BOB]) == {}


async def test_routes_expire_without_heartbeats(routes: Harness) -> None:
    store = routes.store
    await store.register(ALICE, route("g1", 1), ttl=SHORT_TTL)
    await store.register(BOB, route("g1", 2), ttl=TTL)

    await routes.lapse_routes(ALICE, SHORT_TTL)

    assert await store.get(ALICE) == []
    assert await store.get_many([ALICE, BOB]) == {BOB: [route("g1", 2)]}
    assert await store.refresh(ALICE, ttl=TTL) is False
    assert await store.unregister(ALICE, route("g1", 1)) is False
    # A new login after expiry starts afresh and replaces nothing.
    assert await store.register(ALICE, route("g2", 3), ttl=TTL) is None


async def test_heartbeat_refresh_rearms_the_ttl(routes: Harness) -> None:
    store = routes.store
    await store.register(ALICE, route("g1", 1), ttl=1.0)
    assert await routes.routes_ttl_left(ALICE) <= 1.0

    assert await store.refresh(ALICE, ttl=TTL) is True

    assert 1.0 < await routes.routes_ttl_left(ALICE) <= TTL
    assert await store.get(ALICE) == [route("g1", 1)]
    assert await store.refresh(BOB, ttl=TTL) is False


async def test_a_new_device_rearms_the_ttl_of_all_routes(routes: Harness) -> None:
    store = routes.store
    await store.register(ALICE, route("g1", 1, ANDROID), ttl=SHORT_TTL)
    await store.register(ALICE, route("g1", 2, WEB), ttl=TTL)
    assert await routes.routes_ttl_left(ALICE) > SHORT_TTL


async def test_invalid_ttl_is_refused(routes: Harness) -> None:
    with pytest.raises(ValueError, match="TTL"):
        await routes.store.register(ALICE, route("g1", 1), ttl=0)
    with pytest.raises(ValueError, match="TTL"):
        await routes.store.refresh(ALICE, ttl=-1)


def gate(gate_id: str, connections: int) -> GateInfo:
    return GateInfo(
        gate_id=GateId(gate_id),
        tcp_addr=f"10.0.0.1:{8000 + connections}",
        ws_addr=f"ws://10.0.0.1:{9000 + connections}/",
        connections=connections,
    )


async def heartbeat(store: RouteStore, info: GateInfo, ttl: float = TTL) -> None:
    await store.gate_heartbeat(
        info.gate_id,
        tcp_addr=info.tcp_addr,
        ws_addr=info.ws_addr,
        connections=info.connections,
        ttl=ttl,
    )


async def test_live_gates_least_loaded_first(routes: Harness) -> None:
    store = routes.store
    assert await store.live_gates() == []
    for info in (gate("g-a", 50), gate("g-b", 3), gate("g-c", 20), gate("g-d", 3)):
        await heartbeat(store, info)

    assert await store.live_gates() == [
        gate("g-b", 3),
        gate("g-d", 3),
        gate("g-c", 20),
        gate("g-a", 50),
    ]

    # Load changes reorder the list.
    await heartbeat(store, gate("g-a", 0))
    await heartbeat(store, gate("g-b", 100))
    assert [g.gate_id for g in await store.live_gates()] == ["g-a", "g-d", "g-c", "g-b"]


async def test_gates_that_stop_heartbeating_lapse(routes: Harness) -> None:
    store = routes.store
    await heartbeat(store, gate("g-dying", 1), ttl=SHORT_TTL)
    await heartbeat(store, gate("g-alive", 5), ttl=TTL)

    await routes.lapse_gate(GateId("g-dying"), SHORT_TTL)

    assert await store.live_gates() == [gate("g-alive", 5)]
    # Back after a restart: listed again.
    await heartbeat(store, gate("g-dying", 0))
    assert [g.gate_id for g in await store.live_gates()] == ["g-dying", "g-alive"]


async def test_gate_down_removes_it_at_once(routes: Harness) -> None:
    store = routes.store
    await heartbeat(store, gate("g1", 1))
    await heartbeat(store, gate("g2", 2))
    await store.gate_down(GateId("g1"))
    await store.gate_down(GateId("never-registered"))
    assert await store.live_gates() == [gate("g2", 2)]
