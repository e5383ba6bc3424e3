"""Gate processes killed with SIGKILL under load: their clients reconnect to the other gate,
catch up by sync, and nothing acked is lost or duplicated (DESIGN invariant 6, issue 8's
second fault).

Two `coffeebus gateway` processes serve the clients, half on each; every client knows both
gates (`Client.connect(..., alternates=...)`) and reconnects with the SDK's backoff. The
consumer groups run in one `coffeebus consume` process. While c2c and group messages flow
(resent with the same client_msg_id when a send times out or its connection drops), the
first gate is killed, started again, and later the second gate is killed: every client ends
up on a live gate, the checker finds every acked message stored once and in every inbox
once, in order, and every client's sync from seq 0 (0x0803, through its new gate) lists
exactly those messages.
"""

from __future__ import annotations

import asyncio
import logging
import time

from schemas.ids import UserId
from tests.chaos.checker import check_sync, record_fault_result, settle
from tests.chaos.conftest import ChaosSystem
from tests.chaos.gates import GateProcess, connect_across
from tests.chaos.harness import Load, c2c, group
from tests.chaos.processes import GIVE_UP_S, ROLE_TEST_MARKS, WAIT_S, wait_serving
from tests.waiting import wait_for

log = logging.getLogger(__name__)

pytestmark = ROLE_TEST_MARKS

GROUPS = ("msg", "fanout", "ack", "query", "group")
PER_STREAM = 200
RATE = 100.0


async def test_killed_gates_clients_reconnect_elsewhere_and_lose_nothing(
    chaos_system: ChaosSystem,
) -> None:
    system = chaos_system
    consumers = system.process("consumers", ["consume", *GROUPS, "--static-member-id", "k1"])
    consumers.start()
    first, second = GateProcess(system, "g1"), GateProcess(system, "g2")
    await asyncio.gather(first.start(), second.start())
    await wait_serving(system.topology, system.bootstrap, GROUPS, within=WAIT_S)

    users = [await system.user() for _ in range(6)]
    clients, reconnects = await connect_across(system, users, [first, second])
    a, b, c, d, e, f = users
    created = await clients[a].create_group("gates", users)
    group_id = created.group_info.group_id
    members = [UserId(u) for u in created.member_id_list]

    load = Load(rate=RATE, window=6, give_up_after=GIVE_UP_S)
    load.add(clients[a], a, c2c(a, b), count=PER_STREAM)  # g1 -> g2
    load.add(clients[c], c, c2c(c, d), count=PER_STREAM)  # g1 -> g2
    load.add(clients[d], d, c2c(d, e), count=PER_STREAM)  # g2 -> g1
    load.add(clients[f], f, group(group_id, members), count=PER_STREAM)  # g2 -> everyone
    t0 = time.monotonic()
    load.start()
    try:
        await load.ledger.wait_acked(load.total // 3, within=WAIT_S)
        log.warning(
            "SIGKILL gate g1 after %d acks at %.1fs", len(load.ledger.acked), time.monotonic() - t0
        )
        first.process.kill()
        await first.start()
        await load.ledger.wait_acked(2 * load.total // 3, within=WAIT_S)
        log.warning(
            "SIGKILL gate g2 after %d acks at %.1fs", len(load.ledger.acked), time.monotonic() - t0
        )
        second.process.kill()
        await load.finish(within=WAIT_S)
    finally:
        await load.cancel()
    log.warning("all %d acked at %.1fs", len(load.ledger.acked), time.monotonic() - t0)

    ledger = load.ledger
    ledger.assert_every_send_answered(load.total)
    # Every client of a killed gate comes back, on the gate that is alive. (The load may
    # be done before the clients of the second gate have even seen it die: wait for them.)
    alive = ("127.0.0.1", first.port)
    await wait_for(
        lambda: all(reconnects[u] >= 1 and clients[u].endpoint == alive for u in users),
        within=WAIT_S,
    )

    report = await settle(ledger, inbox=system.runtime.inbox, messages=system.runtime.messages)
    record_fault_result(report, faults=2)
    assert report.clean, report.summary()
    synced = await check_sync(ledger, clients)
    record_fault_result(synced, faults=0)
    assert synced.clean, synced.summary()
    assert not system.tracebacks(), "\n".join(system.tracebacks())
    log.warning("%s; reconnects %s", report.summary(), reconnects)
