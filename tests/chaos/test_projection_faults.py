"""The projection group killed, and paused for a minute, under load: nothing acked is lost,
duplicated or reordered — not in what clients read while it is down (Redis's hot state
answers), and not in the document store once it caught up (docs/architecture.md,
"Storage"; issue 13's two new faults).

The projection runs as its own `coffeebus consume projection` process; the groups of the
message path (msg, fanout, ack, query, group) run in the test's process. While SDK clients
send c2c and group messages through a gate (resending what times out), two readers sync
every few seconds and read their session lists, and receivers send read acks:

- *killed*: the projection process gets SIGKILL several times at random points of the load
  (no drain, no commit) and is started again at once: it replays what it had not committed,
  and its writes are idempotent;
- *paused*: SIGSTOP for `PAUSE_S` while the load goes on — Redis holds everything it has not
  written, whatever the lag — then SIGCONT.

Afterwards: the delivery checker over the hot state (what the query group answers) and over
every reader's sync, then — once the projection's lag is 0 — over the document store itself
(MongoDB's ``messages`` and ``inbox``), each once, in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable

from bus.admin import lag
from schemas.ids import UserId
from sdk.client import Client
from tests.chaos.checker import check_sync, record_fault_result, settle
from tests.chaos.conftest import ChaosSystem
from tests.chaos.harness import Load, c2c, group
from tests.chaos.processes import (
    GIVE_UP_S,
    LOAD_GATE,
    ROLE_TEST_MARKS,
    WAIT_S,
    RoleProcess,
    wait_serving,
)
from tests.waiting import wait_for

log = logging.getLogger(__name__)

pytestmark = ROLE_TEST_MARKS

IN_PROCESS = ("msg", "fanout", "ack", "query", "group")
PER_STREAM = 200
RATE = 100.0  # messages/s over all streams
KILLS = 4
ACKS_BETWEEN_KILLS = (30, 90)
PAUSE_S = 60.0

Fault = Callable[[ChaosSystem, RoleProcess, Load], Awaitable[int]]


class _Readers:
    """Two users syncing like devices and listing their sessions while the fault lasts."""

    def __init__(self, clients: list[Client]) -> None:
        self.clients = clients
        self.answered = 0
        self._stop = asyncio.Event()

    async def _one(self, client: Client) -> None:
        after = 0
        while not self._stop.is_set():
            page = await client.sync(after, limit=50)
            if page.entries:
                after = page.entries[-1].seq
            await client.recent_sessions()
            self.answered += 1
            try:
                async with asyncio.timeout(2.0):
                    await self._stop.wait()
            except TimeoutError:
                pass

    async def run(self) -> None:
        await asyncio.gather(*(self._one(c) for c in self.clients))

    def stop(self) -> None:
        self._stop.set()


async def _projection_lag(system: ChaosSystem) -> int:
    [row] = await lag(system.topology, system.bootstrap, ["projection"])
    return row.total


async def _run(system: ChaosSystem, fault: Fault) -> None:
    await system.start_consumers(IN_PROCESS)
    projection = system.consumer("projection")
    projection.start()
    await wait_serving(system.topology, system.bootstrap, ["projection"], within=WAIT_S)

    gate = await system.gate(**LOAD_GATE)
    alice, bob, carol, dave = [await system.user() for _ in range(4)]
    clients = {
        u: await system.login(u, gate, request_timeout=5.0) for u in (alice, bob, carol, dave)
    }
    created = await clients[carol].create_group("projection", [alice, bob, dave])
    group_id = created.group_info.group_id
    members = [UserId(u) for u in created.member_id_list]

    load = Load(rate=RATE, window=8, give_up_after=GIVE_UP_S)
    load.add(clients[alice], alice, c2c(alice, bob), count=PER_STREAM)
    load.add(clients[bob], bob, c2c(bob, alice), count=PER_STREAM)
    load.add(clients[carol], carol, group(group_id, members), count=PER_STREAM)
    load.add(clients[dave], dave, group(group_id, members), count=PER_STREAM)
    readers = _Readers([clients[bob], clients[dave]])

    t0 = time.monotonic()
    load.start()
    beside = asyncio.create_task(readers.run())
    try:
        faults = await fault(system, projection, load)
        await load.finish(within=WAIT_S)
        log.warning("all %d acked at %.1fs", len(load.ledger.acked), time.monotonic() - t0)
    finally:
        readers.stop()
        await load.cancel()
        await asyncio.gather(beside, return_exceptions=True)
    assert beside.exception() is None, beside.exception()
    assert readers.answered > 0

    ledger = load.ledger
    ledger.assert_every_send_answered(load.total)
    runtime = system.runtime
    report = await settle(ledger, inbox=runtime.inbox, messages=runtime.messages)
    record_fault_result(report, faults=faults)
    assert report.clean, report.summary()
    synced = await check_sync(ledger, clients)
    record_fault_result(synced, faults=0)
    assert synced.clean, synced.summary()

    async def caught_up() -> bool:
        return await _projection_lag(system) == 0

    await wait_for(caught_up, within=WAIT_S)
    stored = await settle(
        ledger, inbox=runtime.projection.inbox, messages=runtime.projection.messages
    )
    record_fault_result(stored, faults=0)
    assert stored.clean, f"in the document store: {stored.summary()}"
    assert not system.tracebacks(), "\n".join(system.tracebacks())
    log.warning(
        "%s; store: %s; readers answered %d; %.1fs",
        report.summary(),
        stored.summary(),
        readers.answered,
        time.monotonic() - t0,
    )


async def test_projection_killed_at_random_loses_and_duplicates_nothing(
    chaos_system: ChaosSystem,
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1 << 32)))
    log.warning("CHAOS_SEED=%d reproduces this run's kill schedule", seed)
    rng = random.Random(seed)

    async def kills(system: ChaosSystem, projection: RoleProcess, load: Load) -> int:
        for _ in range(KILLS):
            await load.ledger.wait_acked(
                len(load.ledger.acked) + rng.randint(*ACKS_BETWEEN_KILLS), within=WAIT_S
            )
            log.warning("SIGKILL projection after %d acks", len(load.ledger.acked))
            projection.kill()
            projection.start()
        return KILLS

    await _run(chaos_system, kills)


async def test_projection_paused_for_a_minute_loses_and_duplicates_nothing(
    chaos_system: ChaosSystem,
) -> None:
    async def pause(system: ChaosSystem, projection: RoleProcess, load: Load) -> int:
        await load.ledger.wait_acked(50, within=WAIT_S)
        pid = projection.pid
        assert pid is not None
        log.warning("SIGSTOP projection after %d acks", len(load.ledger.acked))
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(PAUSE_S)  # the fault is the time itself: nothing to await
            behind = await _projection_lag(system)
        finally:
            os.kill(pid, signal.SIGCONT)
        log.warning(
            "SIGCONT projection after %d acks, %d records behind", len(load.ledger.acked), behind
        )
        assert behind > 0  # it did fall behind: the reads above were answered without it
        return 1

    await _run(chaos_system, pause)
