"""Admission of new connections: a rate limit of new connections per source address.

A gate refuses a connection beyond ``max_connections`` in total; this bounds how fast one
address may open them (`GatewaySettings.conn_rate_per_ip`, ``conn_burst_per_ip``), so that
a single host reconnecting in a loop — a bug or an attack — cannot use up the gate's
accept loop, its login checks and its connection budget for everyone else.

Each address gets a token bucket (the same arithmetic as `gateway.ratelimit.TokenBucket`)
on an injected clock. Buckets of addresses that have been quiet long enough to be full
again carry no information and are dropped when the table grows, so memory is bounded by
the addresses active within ``burst / rate`` seconds, not by every address ever seen.

Networks in ``conn_rate_exempt`` are not limited: by default loopback, because a local
reverse proxy (and the host's own tools and tests) makes every client look like
127.0.0.1; a trusted load balancer's addresses belong there too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["ConnectionRateLimiter", "peer_address"]

#: Table size above which buckets that have refilled are dropped.
PRUNE_ABOVE = 10_000

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def peer_address(peer: str) -> str:
    """The address of a shell's ``host:port`` peer string (IPv6 hosts are written bare:
    ``::1:5000``; a peer without a port is returned as it is)."""
    host, sep, _ = peer.rpartition(":")
    return host.strip("[]") if sep else peer


class ConnectionRateLimiter:
    """`allow(address, now)`: whether one more connection from `address` fits its rate."""

    __slots__ = ("_buckets", "_burst", "_exempt", "_rate")

    def __init__(self, *, rate: float, burst: int, exempt: Iterable[str] = ()) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, not {burst}")
        self._rate = rate
        self._burst = float(burst)
        self._exempt: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in exempt
        )
        #: address -> (tokens, time of the last update)
        self._buckets: dict[str, tuple[float, float]] = {}

    @property
    def tracked(self) -> int:
        """Addresses with a bucket (for tests and metrics)."""
        return len(self._buckets)

    def exempt(self, address: str) -> bool:
        """Whether `address` is in an exempt network (an unparsable one is not)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._exempt)

    def allow(self, address: str, now: float) -> bool:
        """Take a token from `address`'s bucket if it has one."""
        if self._exempt and self.exempt(address):
            return True
        tokens, last = self._buckets.get(address, (self._burst, now))
        if now > last:
            tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= PRUNE_ABOVE and address not in self._buckets:
            self._prune(now)
        self._buckets[address] = (tokens, max(now, last))
        return allowed

    def _prune(self, now: float) -> None:
        full = [
            address
            for address, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self._rate >= self._burst
        ]
        for address in full:
            del self._buckets[address]
