"""`RouteStore` in memory: the embedded mode's, and the twin in the contract tests."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from store.clock import Clock, SystemClock
from store.ids import GateId, UserId
from store.routes import GateInfo, Route, ttl_to_ms


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
