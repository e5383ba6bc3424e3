"""The call group's sweep (consumers/call.py) on the memory twins and a manual clock: it
ends every overdue call however many there are, and leaves the others be. And what the
offline push of a call's record says (consumers/timer.py, `call_summary`)."""

from __future__ import annotations

import json

from bus.base import TopicPartition
from bus.topology import load_topology
from coffeebus.wiring import memory_bus_for
from consumers.call import SWEEP_BATCH, CallHandler
from consumers.settings import CallSettings
from consumers.timer import call_summary
from schemas.commands import UplinkTopic
from store.calls import Call, CallState
from store.clock import ManualClock
from store.ids import UserId
from store.memory.calls import MemoryCallStore
from store.memory.routes import MemoryRouteStore
from store.memory.users import MemoryUserStore


def ringing(n: int, created_ms: int) -> Call:
    return Call(
        channel=f"call-{n}",
        caller=UserId(1_000_000 + 2 * n),
        callee=UserId(1_000_001 + 2 * n),
        call_type=1,
        caller_client_type=1,
        state=CallState.RINGING,
        created_ms=created_ms,
    )


async def test_the_sweep_ends_every_overdue_call_in_batches() -> None:
    clock = ManualClock()
    topology = load_topology()
    bus = memory_bus_for(topology)
    calls = MemoryCallStore(clock=clock)
    settings = CallSettings(invite_timeout_s=60.0)
    handler = CallHandler(
        bus=bus,
        topology=topology,
        calls=calls,
        routes=MemoryRouteStore(clock=clock),
        users=MemoryUserStore(clock=clock),
        settings=settings,
        clock=clock,
    )
    overdue = 2 * SWEEP_BATCH + 50
    t0 = clock.now_ms()
    for n in range(overdue):
        await calls.create(ringing(n, t0), deadline_ms=t0 + 60_000, ttl_s=3600)
    clock.advance(30)
    later = ringing(overdue, clock.now_ms())  # rang 30 s ago at the sweep below
    await calls.create(later, deadline_ms=clock.now_ms() + 60_000, ttl_s=3600)

    assert await handler.sweep() == 0  # nothing is due yet
    clock.advance(30)
    assert await handler.sweep() == overdue
    for n in range(overdue):
        ended = await calls.get(f"call-{n}")
        assert ended is not None
        assert (ended.state, ended.cause, ended.hangup_user) == (CallState.ENDED, "no_answer", 0)
    still = await calls.get(later.channel)
    assert still is not None
    assert still.state is CallState.RINGING
    # one AVCHAT record per ended call went to im.up.msg
    msg = topology.topic(UplinkTopic.MSG)
    published = sum(bus.end_offset(TopicPartition(msg.name, p)) for p in range(msg.partitions))
    assert published == overdue
    assert await handler.sweep() == 0  # and nothing twice


def test_a_call_record_in_a_push_says_what_became_of_the_call() -> None:
    def summary(time_len: int, reason: int, call_type: int = 1) -> str:
        record = {"hangupUserId": 7, "hangupReason": reason, "timeLen": time_len}
        return call_summary(json.dumps({**record, "callType": call_type}).encode())

    assert summary(65, 3) == "Voice call 1:05"
    assert summary(0, 3, 2) == "Video call 0:00"  # answered, hung up at once
    assert summary(0, 1) == "Missed voice call"  # cancelled, unanswered, callee offline
    assert summary(0, 4, 2) == "Missed video call"  # busy
    assert summary(0, 2) == "Declined voice call"
    assert call_summary(b"not json") == "Call"
    assert call_summary(b"[1, 2]") == "Call"
