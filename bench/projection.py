"""What the projection did during a scenario on the real services (the driver's side).

The projection group runs in a process of its own (`bench._projection`); a scenario wraps
its load in a `ProjectionWatch`, which

- samples the group's lag every `SAMPLE_S` seconds from the cluster (`bus.admin.lag`: the
  log end offsets of ``im.log.msg`` and ``im.log.user`` minus the group's committed
  offsets, summed over their partitions — the figure `coffeebus topology lag` shows). Lag
  is counted in log records, each holding one handler batch of messages or inbox entries;
- after the load, waits until the lag is 0 and the projection has written what the
  scenario logged ("caught up"), within a limit;
- asks the projection process what it wrote (`ProjectionHandler.stats`) before and after.

`bench.stats.projection_figures` turns that into the scenario's ``projection`` section.
A lag sample takes about 0.2 s (the admin client connects each time), so the highest lag and
the catch-up time are known to within about `SAMPLE_S` + 0.2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Self

from aiokafka.errors import KafkaError

from bench._projection import GROUP
from bench.rig import Rig
from bench.stats import projection_figures
from bus.admin import AdminError, lag

log = logging.getLogger(__name__)

SAMPLE_S = 0.25


async def projection_lag(rig: Rig) -> int:
    """The projection group's lag in records, from the cluster."""
    (row,) = await lag(rig.topology, rig.bootstrap, [GROUP])
    return row.total


async def settle(rig: Rig, limit_s: float) -> bool:
    """Wait until the projection has caught up with what came before (a warm-up): the
    scenario's figures are then its own. Two samples of 0 in a row: a log append still in
    flight when the first was read shows in the second. False if not within `limit_s`."""
    deadline = time.perf_counter() + limit_s
    zeros = 0
    while zeros < 2:
        if time.perf_counter() > deadline:
            return False
        zeros = zeros + 1 if await projection_lag(rig) == 0 else 0
        await asyncio.sleep(SAMPLE_S)  # polling the broker: there is no event for "lag is 0"
    return True


@contextlib.asynccontextmanager
async def watching(rig: Rig, *, settle_s: float = 0.0) -> AsyncIterator[ProjectionWatch | None]:
    """`ProjectionWatch.begin`, stopped on the way out whatever happened; None on the
    embedded wiring."""
    watch = await ProjectionWatch.begin(rig, settle_s=settle_s)
    try:
        yield watch
    finally:
        if watch is not None:
            await watch.stop()


class ProjectionWatch:
    """The projection's lag and writes over one scenario (see the module docstring)."""

    def __init__(self, rig: Rig) -> None:
        self._rig = rig
        self.lags: list[tuple[float, int]] = []
        self._window_max: int | None = None
        self._sampled = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._before: dict[str, Any] = {}
        self._started = 0.0

    @classmethod
    async def begin(cls, rig: Rig, *, settle_s: float = 0.0) -> Self | None:
        """A started watch, or None without a projection process (the embedded wiring).

        With `settle_s`, first wait up to that long for the projection to catch up with
        what came before."""
        if not rig.has_projection:
            return None
        if settle_s > 0 and not await settle(rig, settle_s):
            log.warning("projection: not caught up within %g s before the scenario", settle_s)
        watch = cls(rig)
        watch._before = await rig.projection("stats")
        watch._started = time.perf_counter()
        watch._task = asyncio.create_task(watch._sample(), name="bench-projection-lag")
        return watch

    async def _sample(self) -> None:
        while True:
            try:
                behind = await projection_lag(self._rig)
            except (AdminError, KafkaError, OSError) as exc:
                log.warning("projection lag: %r", exc)
            else:
                self.lags.append((time.perf_counter(), behind))
                self._window_max = max(behind, self._window_max or 0)
                async with self._sampled:
                    self._sampled.notify_all()
            await asyncio.sleep(SAMPLE_S)

    def take_max(self) -> int | None:
        """The highest lag sampled since the last call (a c2c step's)."""
        taken, self._window_max = self._window_max, None
        return taken

    async def caught_up(
        self, limit_s: float, *, messages: int = 0, inbox_entries: int = 0
    ) -> float | None:
        """The time of the first lag sample of 0 at which the projection had written at
        least `messages` messages and `inbox_entries` inbox entries since the watch began
        (what the scenario logged: a lag of 0 read before the last log append landed must
        not count); None after `limit_s`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                while True:
                    async with self._sampled:
                        await self._sampled.wait()
                    at, behind = self.lags[-1]
                    if behind > 0:
                        continue
                    now = await self._rig.projection("stats")
                    if (
                        now["messages"] - self._before["messages"] >= messages
                        and now["inbox_entries"] - self._before["inbox_entries"] >= inbox_entries
                    ):
                        return at
        return None

    async def finish(
        self, load_ended: float, limit_s: float, *, messages: int = 0, inbox_entries: int = 0
    ) -> dict[str, Any]:
        """Wait for the catch-up (`caught_up`), stop sampling, and give the scenario's
        ``projection`` section (`bench.stats.projection_figures`)."""
        try:
            caught_up = await self.caught_up(
                limit_s, messages=messages, inbox_entries=inbox_entries
            )
        finally:
            await self.stop()
        after = await self._rig.projection("stats")
        return {
            **projection_figures(
                self._before,
                after,
                self.lags,
                started=self._started,
                load_ended=load_ended,
                caught_up=caught_up,
            ),
            "catch_up_limit_s": limit_s,
        }

    async def stop(self) -> None:
        """Stop sampling (also when the scenario failed)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
