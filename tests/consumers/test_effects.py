"""`Effects.flush`: one batch; a retired gate's records are dropped, nothing else is."""

from __future__ import annotations

import pytest

from bus.base import TopicPartition, UnknownTopicError
from bus.memory import MemoryBus
from bus.topology import load_topology
from coffeebus.wiring import memory_bus_for
from consumers.effects import Effects
from schemas.commands import Cmd
from schemas.envelope import Origin
from schemas.ids import ConnId, GateId, TraceId, UserId
from schemas.pb.coffeechat import message_pb2
from store.routes import Route

TRACE = TraceId("t1")


def _records(bus: MemoryBus, topic: str, partitions: int) -> int:
    return sum(bus.end_offset(TopicPartition(topic, p)) for p in range(partitions))


async def test_records_for_a_gate_whose_topic_is_gone_are_dropped_and_the_rest_published() -> None:
    topology = load_topology()
    bus = memory_bus_for(topology)
    alive = topology.gate_topic("alive")
    bus.create_topic(alive.name, alive.partitions)  # gate "gone" has no topic any more
    await bus.start()
    try:
        effects = Effects(topology)
        effects.reply(
            Origin(GateId("gone"), ConnId(1), UserId(7), 1, 5),
            Cmd.MSG_DATA_ACK,
            message_pb2.MsgDataAck(),
            TRACE,
        )
        route = Route(gate_id=GateId("alive"), conn_id=ConnId(2), client_type=1, login_ms=0)
        effects.push(UserId(8), [route], Cmd.MSG_DATA, b"body", TRACE)
        fanout = topology.topic("im.fanout")
        effects.publish(fanout.name, b"fan-out of a stored message", key=b"k")

        await effects.flush(bus)

        assert _records(bus, fanout.name, fanout.partitions) == 1
        assert _records(bus, alive.name, alive.partitions) == 1
    finally:
        await bus.stop()


async def test_an_unknown_topic_that_is_not_a_gate_topic_raises() -> None:
    topology = load_topology()
    bus = MemoryBus()  # a deployment whose topology was never applied: no im.fanout
    await bus.start()
    try:
        effects = Effects(topology)
        effects.publish(topology.topic("im.fanout").name, b"x", key=b"k")
        with pytest.raises(UnknownTopicError):
            await effects.flush(bus)
    finally:
        await bus.stop()
