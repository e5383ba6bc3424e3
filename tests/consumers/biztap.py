"""A tap on ``biz.*`` topics for tests: records published from now on, filtered by key.

The ``biz.*`` topics are shared by every test running against the broker, so a tap keeps only
the records whose key the test owns (its users, conversations, groups) and waits for them
with a timeout — never a sleep.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable

from bus.base import Consumer, Record
from tests.consumers.conftest import WAIT_S, System, commit_ends


class Tap:
    """Records of `topics` published after `start()`, whose key `wanted` accepts."""

    def __init__(
        self, system: System, topics: Iterable[str], wanted: Callable[[bytes], bool]
    ) -> None:
        self._system = system
        self._topics = list(topics)
        self._wanted = wanted
        self.records: list[Record] = []
        self._changed = asyncio.Event()
        self._consumer: Consumer | None = None

    async def start(self) -> Tap:
        group = f"test.tap.{uuid.uuid4().hex[:12]}"
        if self._system.kafka_bootstrap is not None:
            await commit_ends(
                self._system.kafka_bootstrap, self._system.topology, [(group, self._topics)]
            )
        # (an embedded system's bus is the test's own: its new group reads from the start)
        self._consumer = self._system.runtime.bus.consumer(group, self._topics, self._handle)
        async with asyncio.timeout(60):
            await self._consumer.start()
        return self

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _handle(self, records: Iterable[Record]) -> None:
        for record in records:
            if record.key is not None and self._wanted(record.key):
                self.records.append(record)
        self._changed.set()

    async def wait(self, done: Callable[[list[Record]], bool], *, within: float = WAIT_S) -> None:
        """Wait until `done(records)` holds."""
        async with asyncio.timeout(within):
            while not done(self.records):
                self._changed.clear()
                await self._changed.wait()
