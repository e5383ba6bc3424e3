"""One scenario for every service fault: c2c load through a gate, a fault mid-load, the check.

`run_under_load` logs in `pairs` pairs of users on one gate of `system`; each user of a pair
writes to the other (so every conversation has two writers and every inbox two sources) at
`rate` messages/s over all streams. Once a third of the messages are acked, `fault` runs
(while the load goes on); then the load must finish — every message acked, resends with the
same client_msg_id allowed — and `tests.chaos.checker.settle` must find every acked message
once in its timeline and in both inboxes, in order. The report goes to the `make chaos` tally
before anything is asserted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import msgspec

from bus.admin import lag
from gateway.server import Gate
from schemas.ids import UserId
from sdk.client import Client
from telemetry.taskdump import format_tasks
from tests.chaos.checker import DeliveryReport, record_fault_result, settle
from tests.chaos.harness import Ledger, Load, c2c
from tests.consumers.conftest import System

__all__ = ["FaultRun", "assert_clean", "projection_behind", "run_under_load"]

log = logging.getLogger(__name__)

#: Consumer groups a c2c message needs to reach inboxes (and the receivers' acks, handled).
GROUPS = ("msg", "fanout", "ack")


class FaultRun(msgspec.Struct, kw_only=True):
    """What a fault test measured."""

    report: DeliveryReport
    ledger: Ledger
    users: list[UserId]
    clients: list[Client]
    gate: Gate
    fault_s: float
    """How long `fault` took (the outage as the test caused it)."""
    load_s: float
    """From the first send to the last ack."""

    def describe(self) -> str:
        return (
            f"{self.report.summary()}\nfault {self.fault_s:.1f}s, load {self.load_s:.1f}s, "
            f"resends {self.ledger.resends}, refused {len(self.ledger.refused)}, "
            f"given up {len(self.ledger.given_up)}"
        )


async def run_under_load(
    system: System,
    fault: Callable[[], Awaitable[None]],
    *,
    pairs: int = 3,
    per_stream: int = 80,
    rate: float = 40.0,
    request_timeout: float = 5.0,
    gate_options: Mapping[str, object] | None = None,
    finish_within: float = 150.0,
    settle_within: float = 60.0,
    groups: Sequence[str] = GROUPS,
    ledger: Ledger | None = None,
    before_check: Callable[[], Awaitable[None]] | None = None,
) -> FaultRun:
    """Run the scenario of the module docstring; returns what it measured (asserts nothing
    but what the tally needs: the caller checks `report.clean` and the ledger). `groups` are
    the consumer groups run in the test's process; `ledger` lets `fault` watch the acks;
    `before_check` is awaited between the load's end and the check (e.g. until the projection
    has caught up, for a guarantee that holds from then on)."""
    await system.start_consumers(groups)
    gate = await system.gate(**(gate_options or {}))
    users = [await system.user() for _ in range(2 * pairs)]
    clients = [await system.login(u, gate, request_timeout=request_timeout) for u in users]
    load = Load(rate=rate, window=5, give_up_after=finish_within, ledger=ledger)
    for i in range(0, len(users), 2):
        a, b = users[i], users[i + 1]
        load.add(clients[i], a, c2c(a, b), count=per_stream)
        load.add(clients[i + 1], b, c2c(b, a), count=per_stream)
    t0 = time.monotonic()
    load.start()
    try:
        await load.ledger.wait_acked(load.total // 3, within=60.0)
        log.info("fault after %d acks at %.1fs", len(load.ledger.acked), time.monotonic() - t0)
        f0 = time.monotonic()
        await fault()
        fault_s = time.monotonic() - f0
        try:
            await load.finish(within=finish_within)
        except TimeoutError:
            log.error("the load did not finish; where the tasks wait:\n%s", format_tasks())
            raise
    finally:
        await load.cancel()
    load_s = time.monotonic() - t0
    if before_check is not None:
        await before_check()
    runtime = system.runtime
    report = await settle(
        load.ledger, inbox=runtime.inbox, messages=runtime.messages, within=settle_within
    )
    record_fault_result(report, faults=1)
    run = FaultRun(
        report=report,
        ledger=load.ledger,
        users=users,
        clients=clients,
        gate=gate,
        fault_s=fault_s,
        load_s=load_s,
    )
    log.info("fault run: %s", run.describe())
    return run


def assert_clean(run: FaultRun, *, expected: int) -> None:
    """Every message acked (none refused or given up) and the checker found nothing."""
    assert run.report.clean, run.describe()
    run.ledger.assert_every_send_answered()
    assert run.report.acked == expected, run.describe()


async def projection_behind(system: System) -> int:
    """The projection group's lag: log records it has not written into the store yet."""
    assert system.kafka_bootstrap is not None
    [row] = await lag(system.topology, system.kafka_bootstrap, ["projection"])
    return row.total
