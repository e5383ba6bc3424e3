"""Clocks for the stores: wall-clock milliseconds, and a manual clock for tests.

The in-memory twins take a clock so that tests can move time forward to see TTLs lapse
instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Source of the current time in milliseconds since the Unix epoch."""

    def now_ms(self) -> int:
        """Return the current time in milliseconds."""
        ...


class SystemClock:
    """The machine's wall clock."""

    def now_ms(self) -> int:
        """Return the current wall-clock time in milliseconds."""
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to; for tests of TTL behaviour."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        """Return the clock's current time in milliseconds."""
        return self._now_ms

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds` (rounded to milliseconds)."""
        if seconds < 0:
            raise ValueError("a clock never goes backwards")
        self._now_ms += round(seconds * 1000)
