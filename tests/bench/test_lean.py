"""The benchmark's bare client (`bench._lean`) against a whole system: it must do what a
real client does — log in, send, match the server's ack, ack every push — or the message
scenarios would measure a server doing less than it does for real clients."""

from __future__ import annotations

import asyncio

import pytest

from bench._lean import LeanClient, Sink
from schemas.codes import SessionType
from schemas.ids import c2c_conversation_id
from schemas.pb.coffeechat import message_pb2
from tests.consumers import conftest as consumer_fixtures
from tests.consumers.conftest import System
from tests.waiting import wait_for

embedded_system = consumer_fixtures.embedded_system


def text(sender: int, to: int, client_msg_id: str, kind: SessionType) -> message_pb2.MsgData:
    return message_pb2.MsgData(
        from_user_id=sender,
        to_session_id=to,
        client_msg_id=client_msg_id,
        session_type=kind,  # type: ignore[arg-type]
        msg_type=1,  # type: ignore[arg-type]
        msg_data=b"hello",
    )


async def test_a_lean_pair_sends_is_acked_receives_and_acks(embedded_system: System) -> None:
    system = embedded_system
    await system.start_consumers(["msg", "fanout", "ack"])
    gate = await system.gate()
    alice, bob = await system.user(), await system.user()
    pushed: list[tuple[int, message_pb2.MsgData]] = []
    sink = Sink(lambda user, message, now: pushed.append((user, message)))
    sender, receiver = LeanClient(alice, sink), LeanClient(bob, sink)
    for client, user in ((sender, alice), (receiver, bob)):
        await client.connect("127.0.0.1", gate.tcp_port, system.tokens[user], source="127.0.0.1")
    loop = asyncio.get_running_loop()
    for n in range(3):
        sender.send(text(alice, bob, f"lean-{n}", SessionType.SINGLE), loop.time())
    async with asyncio.timeout(10):
        await sink.settled.wait()
    assert (len(sink.ack_latencies), sink.failed, sink.outstanding) == (3, 0, 0)
    await wait_for(lambda: len(pushed) == 3)
    assert [(user, m.client_msg_id, m.server_msg_id) for user, m in pushed] == [
        (bob, f"lean-{n}", n + 1) for n in range(3)
    ]
    # The receiver's acks reached the ack group: bob's delivery mark is the last message.
    conversation = c2c_conversation_id(alice, bob)

    async def delivered() -> bool:
        return await system.runtime.deliveries.delivered_seq(bob, conversation) == 3

    await wait_for(delivered)
    sender.close()
    receiver.close()


async def test_a_refused_send_and_a_lost_connection_count_as_failed(
    embedded_system: System,
) -> None:
    system = embedded_system
    await system.start_consumers(["msg", "fanout"])
    gate = await system.gate()
    alice = await system.user()
    sink = Sink(lambda user, message, now: None)
    client = LeanClient(alice, sink)
    await client.connect("127.0.0.1", gate.tcp_port, system.tokens[alice], source="127.0.0.1")
    # Another user's id as the sender: the msg group refuses it with an ErrorRsp.
    client.send(text(alice + 1, alice, "forged", SessionType.SINGLE), 0.0)
    async with asyncio.timeout(10):
        await sink.settled.wait()
    assert (sink.ack_latencies, sink.failed) == ([], 1)
    await system.stop_consumers()  # from here a valid send stays unanswered
    client.send(text(alice, alice + 1, "unanswered", SessionType.SINGLE), 0.0)
    assert sink.outstanding == 1
    await gate.stop()
    await wait_for(lambda: sink.outstanding == 0)
    assert sink.failed == 2
    client.send(text(alice, alice + 1, "after-close", SessionType.SINGLE), 0.0)
    assert (sink.failed, sink.outstanding) == (3, 0)


async def test_a_wrong_token_is_refused(embedded_system: System) -> None:
    system = embedded_system
    gate = await system.gate()
    alice = await system.user()
    client = LeanClient(alice, Sink(lambda user, message, now: None))
    with pytest.raises(RuntimeError, match="login refused"):
        await client.connect("127.0.0.1", gate.tcp_port, "wrong", source="127.0.0.1")
