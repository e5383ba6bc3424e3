"""The per-address connection rate limit, on a hand-moved clock."""

from __future__ import annotations

import pytest

from gateway.admission import PRUNE_ABOVE, ConnectionRateLimiter, peer_address


@pytest.mark.parametrize(
    ("peer", "address"),
    [("10.0.0.1:5000", "10.0.0.1"), ("::1:5000", "::1"), ("[::1]:5000", "::1"), ("?", "?")],
)
def test_peer_address(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_burst_then_rate_per_address() -> None:
    limiter = ConnectionRateLimiter(rate=2.0, burst=3)
    assert [limiter.allow("10.0.0.1", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("10.0.0.2", 0.0)  # another address has its own bucket
    assert not limiter.allow("10.0.0.1", 0.4)
    assert limiter.allow("10.0.0.1", 0.5)  # one token back after 1/rate
    assert not limiter.allow("10.0.0.1", 0.5)


def test_exempt_networks_are_not_limited() -> None:
    limiter = ConnectionRateLimiter(rate=1.0, burst=1, exempt=("127.0.0.0/8", "::1/128"))
    assert all(limiter.allow("127.0.0.9", 0.0) for _ in range(100))
    assert all(limiter.allow("::1", 0.0) for _ in range(100))
    assert limiter.tracked == 0
    assert limiter.allow("192.0.2.1", 0.0)
    assert not limiter.allow("192.0.2.1", 0.0)
    assert not limiter.exempt("not an address")


def test_refilled_buckets_are_forgotten_when_the_table_grows() -> None:
    limiter = ConnectionRateLimiter(rate=10.0, burst=5)
    for i in range(PRUNE_ABOVE):
        limiter.allow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 0.0)
    assert limiter.tracked == PRUNE_ABOVE
    limiter.allow("192.0.2.1", 0.0)  # nobody has refilled yet: nothing to drop
    assert limiter.tracked == PRUNE_ABOVE + 1
    limiter.allow("192.0.2.2", 1.0)  # 1 s at 10/s refills a bucket of 5
    assert limiter.tracked == 1
