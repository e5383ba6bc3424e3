"""Delivery timers and offline pushes end to end, on embedded and real services: a client
sends, fanout schedules the check, the timer group fires it when due, the push group sends
through the webhook provider to a real local HTTP server.

The timing is measured, not assumed: the test reads the ``im.timer`` records themselves
(their ``due_ms``) and compares with the moment the push reached the server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import pytest

from bus.base import Consumer, Outgoing, Record
from coffeebus.settings import PushSettings
from consumers.push import PushHandler
from consumers.timer import TimerHandler
from schemas.events import decode_delivery_timer
from schemas.ids import ConversationId, UserId, c2c_conversation_id
from store.push_tokens import PushDevice, PushProvider
from tests.consumers.conftest import System, commit_ends
from tests.consumers.push_servers import Answer, Http1Server, Seen
from tests.waiting import wait_for

GROUPS = ("msg", "fanout", "ack", "timer", "push")
#: how late a push may reach the provider after its check came due (fetch, store reads,
#: publish, fetch, HTTP) on a loaded two-core machine
LATE_BOUND_MS = 3_000


class Observer:
    """Every record of `topic` from now on, read by a group of its own."""

    def __init__(self, system: System, topic: str) -> None:
        self.system = system
        self.topic = topic
        self.records: list[Record] = []
        self.consumer: Consumer | None = None

    async def start(self) -> None:
        group = f"observer-{uuid.uuid4().hex[:12]}"
        if self.system.kafka_bootstrap is not None:
            await commit_ends(
                self.system.kafka_bootstrap, self.system.topology, [(group, [self.topic])]
            )

        async def handle(records: Sequence[Record]) -> None:
            self.records.extend(records)

        self.consumer = self.system.runtime.bus.consumer(group, [self.topic], handle)
        async with asyncio.timeout(60):
            await self.consumer.start()

    def of(self, user: UserId) -> list[Record]:
        return [r for r in self.records if r.key == b"%d" % user]


@pytest.fixture
async def webhook() -> AsyncIterator[Http1Server]:
    def respond(seen: Seen) -> Answer:
        token = json.loads(seen.body)["device"]["token"]
        return Answer(410 if token.startswith("dead") else 200)

    async with Http1Server(respond) as server:
        yield server


async def start(
    system: System, webhook: Http1Server, *, delay_s: float
) -> tuple[Observer, Observer]:
    push = PushSettings(
        timer_delay_s=delay_s,
        webhook_url=f"{webhook.url}/push",
        webhook_secret="s3cret",
        max_attempts=2,
        initial_backoff_s=0.01,
    )
    settings = msgspec.structs.replace(system.runtime.settings, push=push)
    timers, pushes = Observer(system, "im.timer"), Observer(system, "im.push")
    await timers.start()
    await pushes.start()
    await system.start_consumers(
        GROUPS, runtime=dataclasses.replace(system.runtime, settings=settings)
    )
    return timers, pushes


async def register(system: System, user: UserId, *tokens: str) -> None:
    for token in tokens:
        await system.runtime.push_tokens.register(
            PushDevice(user_id=user, provider=PushProvider.WEBHOOK, token=token, client_type=1)
        )


def pushed(server: Http1Server, user: UserId) -> list[dict[str, Any]]:
    payloads = [json.loads(r.body) for r in server.requests]
    return [p for p in payloads if p["device"]["user_id"] == user]


async def test_an_undelivered_message_is_pushed_once_per_device_when_due_never_before(
    system: System, webhook: Http1Server
) -> None:
    timers, _ = await start(system, webhook, delay_s=0.3)
    alice, bob = await system.user(nick="alice"), await system.user(nick="bob")
    await register(system, bob, "bob-phone", "bob-tablet")
    sender = await system.login(alice)

    ack = await sender.send_text(bob, "are you there?")
    await webhook.wait_for(2)

    # (one check; a fanout batch replayed after a rebalance would publish it again)
    checks = [decode_delivery_timer(r.value) for r in timers.of(bob)]
    assert {c.notice.seq for c in checks} == {ack.server_msg_id}
    assert not timers.of(alice)  # no check for the sender's own devices
    due_ms = min(c.due_ms for c in checks)
    assert due_ms - checks[0].notice.created_ms >= 300
    lateness = [r.at_ms - due_ms for r in webhook.requests]
    assert all(0 <= late < LATE_BOUND_MS for late in lateness), lateness

    payloads = pushed(webhook, bob)
    assert sorted(p["device"]["token"] for p in payloads) == ["bob-phone", "bob-tablet"]
    notification = payloads[0]["notification"]
    assert notification == {
        **notification,
        "user_id": bob,
        "conversation": c2c_conversation_id(alice, bob),
        "seq": ack.server_msg_id,
        "from_user_id": alice,
        "from_nick_name": "alice",
        "title": "alice",
        "body": "New message",  # no preview unless [push] preview_chars allows one
    }


async def test_an_acked_message_is_not_pushed(system: System, webhook: Http1Server) -> None:
    # Long enough for carol's device to ack and the ack group to record it on a loaded box.
    _, pushes = await start(system, webhook, delay_s=3.0)
    alice, bob, carol = [await system.user() for _ in range(3)]
    await register(system, bob, "bob-phone")
    await register(system, carol, "carol-phone")
    sender = await system.login(alice)
    await system.login(carol)  # online: the SDK acks what is pushed to it

    to_carol = await sender.send_text(carol, "hi carol")
    conversation = c2c_conversation_id(alice, carol)
    await wait_for(lambda: _delivered(system, carol, conversation, to_carol.server_msg_id))
    to_bob = await sender.send_text(bob, "hi bob")
    timer, push = system.handler("timer"), system.handler("push")
    assert isinstance(timer, TimerHandler)
    assert isinstance(push, PushHandler)
    # both checks fired, and the push group handled every request they made
    await wait_for(
        lambda: (
            timer.stats.fired >= 2
            and timer.stats.acked >= 1
            and push.stats.requests >= len(pushes.records) >= 1
        )
    )

    assert pushes.of(carol) == []
    (payload,) = [json.loads(r.body) for r in webhook.requests]
    assert payload["device"]["token"] == "bob-phone"
    assert payload["notification"]["seq"] == to_bob.server_msg_id


async def _delivered(system: System, user: UserId, conversation: ConversationId, seq: int) -> bool:
    return await system.runtime.deliveries.delivered_seq(user, ConversationId(conversation)) >= seq


async def test_replayed_timer_and_push_records_push_nothing_twice_and_dead_tokens_go(
    system: System, webhook: Http1Server
) -> None:
    timers, pushes = await start(system, webhook, delay_s=0.3)
    alice, bob = await system.user(), await system.user()
    await register(system, bob, "bob-phone", "dead-tablet")
    sender = await system.login(alice)
    await sender.send_text(bob, "one")
    await sender.send_text(bob, "two")

    push = system.handler("push")
    timer = system.handler("timer")
    assert isinstance(push, PushHandler)
    assert isinstance(timer, TimerHandler)
    # both checks fired, their requests are on im.push and the push group handled them all
    await wait_for(
        lambda: (
            timer.stats.fired >= 2
            and len(pushes.of(bob)) == timer.stats.requested == 2
            and push.stats.requests >= 2
        )
    )
    first = list(webhook.requests)
    tokens = [json.loads(r.body)["device"]["token"] for r in first]
    # one push per message to the live device; the dead one got the first push at least
    # (it is removed at once, so a later batch may not see it any more)
    assert tokens.count("bob-phone") == 2
    assert 1 <= tokens.count("dead-tablet") <= 2
    sent = len(first)
    assert [d.token for d in await system.runtime.push_tokens.devices(bob)] == ["bob-phone"]

    # Replay everything the groups consumed: the timers fire again, the push requests come again.
    await register(system, bob, "dead-tablet")  # and the dead token is registered again
    replay = [Outgoing(r.topic, r.value, key=r.key) for r in (*timers.of(bob), *pushes.of(bob))]
    n_timers, n_pushes = len(timers.of(bob)), len(pushes.of(bob))
    requests_before, fired_before = push.stats.requests, timer.stats.fired
    await system.runtime.bus.publish_batch(replay)
    # the replayed push requests, and one new request per refired (still unacked) check
    await wait_for(lambda: timer.stats.fired >= fired_before + n_timers)
    await wait_for(lambda: push.stats.requests >= requests_before + n_pushes + n_timers)

    assert len(webhook.requests) == sent  # nothing pushed twice
    assert push.stats.duplicates >= n_pushes + n_timers  # (more if a batch was retried)
    devices = await system.runtime.push_tokens.devices(bob)
    assert sorted(d.token for d in devices) == ["bob-phone", "dead-tablet"]
