"""Routes and the live-gate registry: the `RouteStore` protocol and its in-memory twin.

A *route* says where one of a user's devices is connected: which gate, which connection on
it, the device's client type and when it logged in. A user has at most one route per client
type; whether a second login of the same type kicks the first is the gate's policy, so
`RouteStore.register` only replaces the route atomically and hands back the one it
replaced. The user's routes share one TTL that heartbeats refresh: when a gate dies, the
routes of its connections lapse by themselves.

`RouteStore.unregister` is a compare-and-delete: it removes a route only while it is still
the one the closing connection registered, so a connection that closes after a newer login
(on this gate or another) never removes the newer route.

The registry of live gates backs the gate list (iplist): each gate reports its addresses and
connection count with a TTL, and `RouteStore.live_gates` lists the gates whose report has not
lapsed, least loaded first.

Implementations: `MemoryRouteStore` (here) and `store.routes_redis.RedisRouteStore`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import msgspec

from store.clock import Clock, SystemClock
from store.ids import ConnId, GateId, UserId


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """Where one device of a user is connected."""

    gate_id: GateId
    conn_id: ConnId
    client_type: int
    """The protocol's ClientType value; a user has at most one route per client type."""
    login_ms: int

    def same_connection(self, other: Route) -> bool:
        """Whether both routes name the same connection."""
        return self.gate_id == other.gate_id and self.conn_id == other.conn_id


class GateInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A live gate as its last heartbeat described it."""

    gate_id: GateId
    tcp_addr: str
    """``host:port`` clients connect to over TCP."""
    ws_addr: str
    """WebSocket URL or ``host:port``, as the gate advertises it."""
    connections: int


class RouteStore(Protocol):
    """Where users' device routes and the live gates are kept.

    TTLs are in seconds (float); implementations keep millisecond precision.
    """

    async def register(self, user_id: UserId, route: Route, *, ttl: float) -> Route | None:
        """Set the route of `route.client_type` and (re)arm the user's route TTL.

        Returns the route it replaced, so the gate can kick that connection; None when there
        was none or it was this same connection.
        """
        ...

    async def unregister(self, user_id: UserId, route: Route) -> bool:
        """Remove `route` if it is still the user's route for its client type; tell whether
        it was removed."""
        ...

    async def get(self, user_id: UserId) -> list[Route]:
        """The user's routes, by client type."""
        ...

    async def get_many(self, user_ids: Iterable[UserId]) -> dict[UserId, list[Route]]:
        """Routes of many users in one round trip; users without routes are left out."""
        ...

    async def refresh(self, user_id: UserId, *, ttl: float) -> bool:
        """Re-arm the user's route TTL; tell whether the user still has routes."""
        ...

    async def gate_heartbeat(
        self,
        gate_id: GateId,
        *,
        tcp_addr: str,
        ws_addr: str,
        connections: int,
        ttl: float,
    ) -> None:
        """Record that the gate is alive with this load, for `ttl` seconds."""
        ...

    async def gate_down(self, gate_id: GateId) -> None:
        """Remove the gate from the registry at once (clean shutdown)."""
        ...

    async def live_gates(self) -> list[GateInfo]:
        """Gates whose heartbeat has not lapsed, least loaded first (ties by gate id)."""
        ...


def ttl_to_ms(ttl: float) -> int:
    """A positive TTL in seconds as whole milliseconds (at least 1)."""
    if ttl <= 0:
        raise ValueError(f"a TTL must be positive, not {ttl}")
    return max(1, round(ttl * 1000))


class _UserRoutes(msgspec.Struct):
    routes: dict[int, Route]
    expires_ms: int


class _GateEntry(msgspec.Struct):
    info: GateInfo
    expires_ms: int


class MemoryRouteStore:
    """The in-memory `RouteStore`; its clock decides TTLs, so tests can advance time."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._users: dict[UserId, _UserRoutes] = {}
        self._gates: dict[GateId, _GateEntry] = {}

    def _live(self, user_id: UserId) -> _UserRoutes | None:
        entry = self._users.get(user_id)
        if entry is not None and entry.expires_ms <= self._clock.now_ms():
            del self._users[user_id]
            return None
        return entry

    async def register(self, user_id: UserId, route: Route, *, ttl: float) -> Route | None:
        """Set the route of its client type; return the one it replaced."""
        expires_ms = self._clock.now_ms() + ttl_to_ms(ttl)
        entry = self._live(user_id)
        if entry is None:
            entry = self._users[user_id] = _UserRoutes(routes={}, expires_ms=expires_ms)
        previous = entry.routes.get(route.client_type)
        entry.routes[route.client_type] = route
        entry.expires_ms = expires_ms
        if previous is None or previous.same_connection(route):
            return None
        return previous

    async def unregister(self, user_id: UserId, route: Route) -> bool:
        """Remove `route` if it is still current."""
        entry = self._live(user_id)
        if entry is None or entry.routes.get(route.client_type) != route:
            return False
        del entry.routes[route.client_type]
        if not entry.routes:
            del self._users[user_id]
        return True

    async def get(self, user_id: UserId) -> list[Route]:
        """The user's routes, by client type."""
        entry = self._live(user_id)
        return [] if entry is None else [entry.routes[ct] for ct in sorted(entry.routes)]

    async def get_many(self, user_ids: Iterable[UserId]) -> dict[UserId, list[Route]]:
        """Routes of many users; users without routes are left out."""
        found: dict[UserId, list[Route]] = {}
        for user_id in user_ids:
            routes = await self.get(user_id)
            if routes:
                found[user_id] = routes
        return found

    async def refresh(self, user_id: UserId, *, ttl: float) -> bool:
        """Re-arm the user's route TTL."""
        expires_ms = self._clock.now_ms() + ttl_to_ms(ttl)
        entry = self._live(user_id)
        if entry is None:
            return False
        entry.expires_ms = expires_ms
        return True

    async def gate_heartbeat(
        self,
        gate_id: GateId,
        *,
        tcp_addr: str,
        ws_addr: str,
        connections: int,
        ttl: float,
    ) -> None:
        """Record the gate as alive with this load."""
        info = GateInfo(
            gate_id=gate_id, tcp_addr=tcp_addr, ws_addr=ws_addr, connections=connections
        )
        self._gates[gate_id] = _GateEntry(info, self._clock.now_ms() + ttl_to_ms(ttl))

    async def gate_down(self, gate_id: GateId) -> None:
        """Remove the gate from the registry."""
        self._gates.pop(gate_id, None)

    async def live_gates(self) -> list[GateInfo]:
        """Live gates, least loaded first; lapsed ones are pruned."""
        now = self._clock.now_ms()
        for gate_id in [g for g, e in self._gates.items() if e.expires_ms <= now]:
            del self._gates[gate_id]
        infos = [entry.info for entry in self._gates.values()]
        return sorted(infos, key=lambda info: (info.connections, info.gate_id))
