"""Routes and the live-gate registry: the models and the `RouteStore` protocol.

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

Implementations: `store.memory.routes.MemoryRouteStore` and `store.redis.routes.RedisRouteStore`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import msgspec

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
