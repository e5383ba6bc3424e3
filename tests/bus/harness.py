"""What the bus contract tests share: the `BusHarness` and a fast retry policy."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bus.base import Bus, RetryPolicy, dlq_topic

# Fast retries for tests; production backs off from 100 ms to 30 s.
FAST_RETRY = RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.05, jitter_s=0.01)


@dataclass
class BusHarness:
    """A started bus plus a way to declare throw-away topics on it."""

    kind: str
    bus: Bus
    _create: Callable[[str, int], Awaitable[None]]
    created: list[str] = field(default_factory=list)

    async def topic(self, partitions: int = 1) -> str:
        """A new topic with `partitions` partitions, and its dead-letter topic."""
        name = f"test.{uuid.uuid4().hex[:12]}"
        await self._create(name, partitions)
        await self._create(dlq_topic(name), partitions)
        self.created += [name, dlq_topic(name)]
        return name

    @staticmethod
    def group() -> str:
        return f"test-group-{uuid.uuid4().hex[:12]}"
