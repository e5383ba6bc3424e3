"""Scaling the msg and fanout groups out and back in under load loses and duplicates nothing
(issue 6: "start one, then three, then one member"; DESIGN invariants 2, 3).

Members are `coffeebus consume msg fanout` processes with dynamic membership, so a stopped
member leaves its groups at once (a static member would keep its partitions until its
session timed out). One member serves while SDK clients send c2c and group messages; two more
join — each join is a rebalance that moves partitions, and with them the ownership of
conversation and inbox timelines — and once the three share the partitions, two of them stop
(SIGTERM: drain, commit, leave), moving everything back to the first. The checker then finds
every acked message stored once with its acked id and in every recipient's inbox once, in
order: a new owner continued each timeline above its previous owner's seqs.
"""

from __future__ import annotations

import logging
import time

from schemas.ids import UserId
from tests.chaos.checker import record_fault_result, settle
from tests.chaos.conftest import ChaosSystem
from tests.chaos.harness import Load, c2c, group
from tests.chaos.processes import GIVE_UP_S, LOAD_GATE, ROLE_TEST_MARKS, WAIT_S, wait_serving

log = logging.getLogger(__name__)

pytestmark = ROLE_TEST_MARKS

SCALED = ("msg", "fanout")
MAX_PER_STREAM = 100_000
PER_PHASE = 120  # acks handled in each membership state
RATE = 60.0


async def test_scaling_msg_and_fanout_from_one_to_three_to_one_member(
    chaos_system: ChaosSystem,
) -> None:
    system = chaos_system
    others = system.process("others", ["consume", "ack", "query", "group"])
    members = [system.process(f"member{n}", ["consume", *SCALED]) for n in (1, 2, 3)]
    others.start()
    members[0].start()
    await wait_serving(system.topology, system.bootstrap, [*SCALED, "group"], within=WAIT_S)

    gate = await system.gate(**LOAD_GATE)
    users = [await system.user() for _ in range(5)]
    clients = {u: await system.login(u, gate, request_timeout=5.0) for u in users}
    a, b, c, d, e = users
    created = await clients[a].create_group("scaling", users)
    in_group = [UserId(u) for u in created.member_id_list]

    # As many messages as it takes: the load stops once the group is back to one member
    # and that member has handled some.
    load = Load(rate=RATE, window=8, give_up_after=GIVE_UP_S)
    load.add(clients[a], a, c2c(a, b), count=MAX_PER_STREAM)
    load.add(clients[c], c, c2c(c, b), count=MAX_PER_STREAM)
    load.add(clients[b], b, c2c(b, d), count=MAX_PER_STREAM)
    load.add(clients[e], e, group(created.group_info.group_id, in_group), count=MAX_PER_STREAM)
    t0 = time.monotonic()
    load.start()
    phases: list[int] = []
    try:
        for phase in ("one member", "three members", "back to one"):
            if phase == "three members":
                members[1].start()
                members[2].start()
                await wait_serving(
                    system.topology, system.bootstrap, SCALED, members=3, within=WAIT_S
                )
            elif phase == "back to one":
                members[1].stop()
                members[2].stop()
                await wait_serving(
                    system.topology, system.bootstrap, SCALED, members=1, within=WAIT_S
                )
            start = len(load.ledger.acked)
            await load.ledger.wait_acked(start + PER_PHASE, within=WAIT_S)
            phases.append(len(load.ledger.acked) - start)
            log.warning(
                "%s: %d acks by %.1fs", phase, len(load.ledger.acked), time.monotonic() - t0
            )
        load.stop()
        await load.finish(within=WAIT_S)
    finally:
        await load.cancel()
    log.warning("all %d acked at %.1fs", len(load.ledger.acked), time.monotonic() - t0)

    ledger = load.ledger
    ledger.assert_every_send_answered()
    assert all(n >= PER_PHASE for n in phases), phases

    report = await settle(ledger, inbox=system.runtime.inbox, messages=system.runtime.messages)
    record_fault_result(report, faults=4)  # two members joined, two left: four rebalances
    assert report.clean, report.summary()
    assert members[1].stop() == 0  # exited cleanly on SIGTERM
    assert members[2].stop() == 0
    assert not system.tracebacks(), "\n".join(system.tracebacks())
    log.warning("%s; %.1fs", report.summary(), time.monotonic() - t0)
