"""`PushLog` in memory (embedded mode and tests)."""

from __future__ import annotations

from collections.abc import Sequence


class MemoryPushLog:
    """In-memory `PushLog` (embedded mode and tests)."""

    def __init__(self) -> None:
        self._claims: dict[str, int] = {}

    async def claim(self, keys: Sequence[str], at_ms: int) -> list[bool]:
        """Claim the keys not claimed yet."""
        claimed: list[bool] = []
        for key in keys:
            new = key not in self._claims
            if new:
                self._claims[key] = at_ms
            claimed.append(new)
        return claimed

    async def prune(self, before_ms: int) -> int:
        """Forget old claims."""
        old = [key for key, ms in self._claims.items() if ms < before_ms]
        for key in old:
            del self._claims[key]
        return len(old)
