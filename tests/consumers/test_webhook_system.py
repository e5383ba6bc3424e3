"""Webhooks end to end: client sends → msg → biz.events.message → the webhook group consuming
the topic → a real local HTTP receiver that fails twice per event before accepting it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Sequence

from bus.base import Record
from coffeebus.settings import WebhookSettings, WebhookSubscriber
from consumers.webhooks import WebhookSender
from schemas.bizevents import CallEnded, CallStarted, MessageStored, decode_event, event_id
from schemas.commands import Cmd
from schemas.ids import c2c_conversation_id
from tests.consumers.conftest import System, commit_ends
from tests.consumers.webhook_receiver import Received, Receiver

SECRET = "end-to-end"


async def test_a_conversations_messages_reach_the_webhook_once_each_in_order_signed(
    system: System,
) -> None:
    await system.start_consumers(["msg"])
    alice, bob = await system.user(), await system.user()
    conversation = c2c_conversation_id(alice, bob)
    attempts: Counter[str] = Counter()

    def flaky(request: Received) -> int:
        attempts[request.event_id] += 1
        return 500 if attempts[request.event_id] <= 2 else 200

    async with Receiver(SECRET, flaky) as receiver:
        subscriber = WebhookSubscriber(
            name="crm", url=receiver.url, secret=SECRET, events=("message.stored",)
        )
        settings = WebhookSettings(
            subscribers=(subscriber,), initial_backoff_s=0.01, max_backoff_s=0.05
        )
        sender = WebhookSender(bus=system.runtime.bus, topology=system.topology, settings=settings)
        spec = system.topology.group("webhook")
        group_id = f"{spec.group_id}.test-{uuid.uuid4().hex[:10]}"
        if system.kafka_bootstrap is not None:
            await commit_ends(system.kafka_bootstrap, system.topology, [(group_id, spec.topics)])

        async def ours(records: Sequence[Record]) -> None:
            # The biz topics are shared with concurrent test runs: this conversation only.
            await sender.handle([r for r in records if r.key == conversation.encode()])

        consumer = system.runtime.bus.consumer(group_id, spec.topics, ours)
        async with asyncio.timeout(60):
            await consumer.start()
        try:
            sdk = await system.login(alice)
            acks = [await sdk.send_text(bob, f"hello {i}") for i in range(5)]
            await receiver.wait(lambda _: len(receiver.succeeded()) == len(acks))
        finally:
            await consumer.stop()
            await sender.close()

    expected = [event_id(MessageStored, conversation, a.server_msg_id) for a in acks]
    assert [r.event_id for r in receiver.succeeded()] == expected
    assert Counter(r.event_id for r in receiver.requests) == dict.fromkeys(expected, 3)
    assert all(r.signed for r in receiver.requests)


async def test_a_calls_events_reach_a_subscriber_of_call_events(system: System) -> None:
    await system.start_consumers(["msg", "call"])
    alice, bob = await system.user(), await system.user()
    async with Receiver(SECRET, lambda _: 200) as receiver:
        subscriber = WebhookSubscriber(
            name="billing", url=receiver.url, secret=SECRET, events=("call.*",)
        )
        sender = WebhookSender(
            bus=system.runtime.bus,
            topology=system.topology,
            settings=WebhookSettings(subscribers=(subscriber,)),
        )
        spec = system.topology.group("webhook")
        group_id = f"{spec.group_id}.test-{uuid.uuid4().hex[:10]}"
        if system.kafka_bootstrap is not None:
            await commit_ends(system.kafka_bootstrap, system.topology, [(group_id, spec.topics)])

        def of_this_call(record: Record) -> bool:
            if record.topic != "biz.events.call":
                return False
            event = decode_event(record.value)
            return isinstance(event, CallStarted | CallEnded) and event.caller_id == alice

        async def ours(records: Sequence[Record]) -> None:
            # biz.events.call is shared with concurrent test runs: this caller's calls only.
            await sender.handle([r for r in records if of_this_call(r)])

        consumer = system.runtime.bus.consumer(group_id, spec.topics, ours)
        async with asyncio.timeout(60):
            await consumer.start()
        try:
            caller = await system.login(alice)
            callee = await system.login(bob)
            channel = (await caller.call(bob)).channel_info.channel_name
            await system.wait_pushes(callee, Cmd.VOIP_INVITE_REQ)
            await callee.hangup(channel)  # declined
            await receiver.wait(lambda _: len(receiver.succeeded()) == 2)
        finally:
            await consumer.stop()
            await sender.close()

    got = receiver.succeeded()
    assert [r.event_id for r in got] == [
        event_id(CallStarted, channel),
        event_id(CallEnded, channel),
    ]
    ended = json.loads(got[1].body)
    assert (ended["type"], ended["cause"], ended["answered"]) == ("call.ended", "bye", False)
    assert (ended["hangup_user_id"], ended["reason"]) == (bob, 2)  # reject
    assert all(r.signed for r in got)
