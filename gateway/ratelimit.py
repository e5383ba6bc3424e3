"""A token bucket on an injected clock, for per-connection rate limits.

The bucket holds up to `burst` tokens and gains `rate` tokens per second; each accepted
frame takes one. Time is passed in (`now`, seconds on any monotonic scale) rather than read,
so the sans-I/O connection core stays deterministic and its tests need no sleeps.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """`take(now)` tells whether one more event fits in the rate; O(1), no allocation."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, not {burst}")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    @property
    def tokens(self) -> float:
        """Tokens left as of the last `take` (for tests and metrics)."""
        return self._tokens

    def take(self, now: float) -> bool:
        """Take one token if there is one; a clock that steps back refills nothing."""
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
