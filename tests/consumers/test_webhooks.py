"""The webhook sender against real local HTTP receivers: signatures, retries, dead letters,
filters and per-key order. Batches are handed to the handler directly (so their make-up is
known); dead letters go to the system's real bus and are read back from it."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import msgspec
import pytest

from bus.base import Record
from coffeebus.settings import WebhookSettings, WebhookSubscriber
from consumers.webhooks import WebhookSender
from schemas.bizevents import (
    BizEvent,
    BizTopic,
    MessageStored,
    UserOnline,
    encode_event,
    event_id,
)
from schemas.ids import c2c_conversation_id
from schemas.webhooks import WebhookDeadLetter, decode_dead_letter
from tests.consumers.biztap import Tap
from tests.consumers.conftest import System
from tests.consumers.webhook_receiver import STALL, Received, Receiver

SECRET = "s3cret"


def _user() -> int:
    return int.from_bytes(os.urandom(6), "big") | 1 << 40


def _stored(a: int, b: int, seq: int) -> MessageStored:
    conversation = c2c_conversation_id(a, b)  # type: ignore[arg-type]
    return MessageStored(
        id=event_id(MessageStored, conversation, seq),
        ts=1_700_000_000_000 + seq,
        conversation=conversation,
        seq=seq,
        from_user_id=a,
        to_session_id=b,
        session_type=1,
        msg_type=1,
        client_msg_id=f"c{seq}",
        msg_data=b"hello %d" % seq,
    )


def _records(events: Sequence[BizEvent]) -> list[Record]:
    return [
        Record(
            topic=e.topic,
            partition=0,
            offset=i,
            key=e.key(),
            value=encode_event(e),
            headers=(),
            timestamp_ms=0,
        )
        for i, e in enumerate(events)
    ]


def _sub(name: str, url: str, **options: Any) -> WebhookSubscriber:
    return WebhookSubscriber(name=name, url=url, secret=SECRET, **options)


def _sender(system: System, *subs: WebhookSubscriber) -> WebhookSender:
    settings = WebhookSettings(subscribers=subs, initial_backoff_s=0.01, max_backoff_s=0.05)
    return WebhookSender(bus=system.runtime.bus, topology=system.topology, settings=settings)


@pytest.fixture
async def dead_letters(system: System) -> AsyncIterator[Tap]:
    """Dead letters of this test's keys (conversations of users made by `_user`)."""
    tap = await Tap(
        system, [BizTopic.WEBHOOK_DEAD_LETTER], lambda key: key.startswith(b"s:")
    ).start()
    yield tap
    await tap.stop()


def _letters(tap: Tap, keys: set[bytes]) -> list[WebhookDeadLetter]:
    return [decode_dead_letter(r.value) for r in tap.records if r.key in keys]


async def test_failing_twice_then_ok_gets_each_event_once_signed_and_in_order(
    system: System,
) -> None:
    a, b = _user(), _user()
    events = [_stored(a, b, seq) for seq in range(1, 6)]
    attempts: Counter[str] = Counter()

    def flaky(request: Received) -> int:
        attempts[request.event_id] += 1
        return 500 if attempts[request.event_id] <= 2 else 200

    async with Receiver(SECRET, flaky) as receiver:
        sender = _sender(system, _sub("crm", receiver.url))
        await sender.handle(_records(events))
        await sender.close()

    ids = [e.id for e in events]
    assert [r.event_id for r in receiver.succeeded()] == ids
    # Every attempt of one event comes before the next event's first: per-key order.
    assert [(r.event_id, r.attempt, r.status) for r in receiver.requests] == [
        (i, n, 500 if n <= 2 else 200) for i in ids for n in (1, 2, 3)
    ]
    assert all(r.signed for r in receiver.requests)
    assert all(r.method == "POST" and r.path == "/hooks" for r in receiver.requests)
    first = receiver.succeeded()[0]
    assert first.body == encode_event(events[0])
    assert first.headers["content-type"] == "application/json"
    assert first.headers["x-coffeebus-event-type"] == "message.stored"


async def test_permanent_failure_is_dead_lettered_after_max_attempts(
    system: System, dead_letters: Tap
) -> None:
    a, b = _user(), _user()
    events = [_stored(a, b, seq) for seq in (1, 2, 3)]
    key = events[0].key()

    async with (
        Receiver(SECRET, lambda _: 503) as down,
        Receiver(SECRET, lambda _: 204) as healthy,
    ):
        sender = _sender(system, _sub("down", down.url, max_attempts=3), _sub("ok", healthy.url))
        await sender.handle(_records(events))
        await sender.close()

    # The healthy subscriber is not held back by the other one.
    assert [r.event_id for r in healthy.succeeded()] == [e.id for e in events]
    # The failing one: max_attempts POSTs of the first event, then it is taken to be down for
    # the rest of the batch (not tried, dead-lettered in order).
    assert [(r.event_id, r.attempt) for r in down.requests] == [
        (events[0].id, n) for n in (1, 2, 3)
    ]
    await dead_letters.wait(lambda _: len(_letters(dead_letters, {key})) == 3)
    first, *rest = _letters(dead_letters, {key})
    assert (first.subscriber, first.url, first.event_id) == ("down", down.url, events[0].id)
    assert (first.attempts, first.status, first.event_type) == (3, 503, "message.stored")
    assert first.error.startswith("HTTP 503")
    assert first.body == encode_event(events[0]).decode()
    assert first.source_topic == BizTopic.MESSAGES
    assert [(r.event_id, r.attempts, r.status) for r in rest] == [
        (events[1].id, 0, None),
        (events[2].id, 0, None),
    ]


async def test_a_4xx_is_dead_lettered_without_retry_and_the_next_event_goes(
    system: System, dead_letters: Tap
) -> None:
    a, b = _user(), _user()
    events = [_stored(a, b, seq) for seq in (1, 2)]

    def refuse_first(request: Received) -> int:
        return 422 if request.event_id == events[0].id else 200

    async with Receiver(SECRET, refuse_first) as receiver:
        sender = _sender(system, _sub("strict", receiver.url, max_attempts=5))
        await sender.handle(_records(events))
        await sender.close()

    assert [(r.event_id, r.attempt, r.status) for r in receiver.requests] == [
        (events[0].id, 1, 422),
        (events[1].id, 1, 200),
    ]
    await dead_letters.wait(lambda _: len(_letters(dead_letters, {events[0].key()})) == 1)
    (letter,) = _letters(dead_letters, {events[0].key()})
    assert (letter.event_id, letter.attempts, letter.status) == (events[0].id, 1, 422)


async def test_timeouts_and_429_are_retried(system: System) -> None:
    a, b = _user(), _user()
    event = _stored(a, b, 1)
    answers: Iterator[int | tuple[int, dict[str, str]]] = iter(
        [STALL, (429, {"Retry-After": "0"}), 200]
    )

    async with Receiver(SECRET, lambda _: next(answers)) as receiver:
        sender = _sender(system, _sub("slow", receiver.url, timeout_s=0.3))
        await sender.handle(_records([event]))
        await sender.close()

    assert [(r.attempt, r.status) for r in receiver.requests] == [(1, STALL), (2, 429), (3, 200)]
    # A fresh timestamp and signature per attempt.
    assert all(r.signed for r in receiver.requests)


async def test_filters_by_event_type_and_topic(system: System) -> None:
    a, b = _user(), _user()
    stored = _stored(a, b, 1)
    online = UserOnline(
        id=event_id(UserOnline, "g1", 7), ts=1, user_id=a, client_type=1, gate_id="g1", conn_id=7
    )
    records = _records([stored, online])

    async with (
        Receiver(SECRET, lambda _: 200) as messages,
        Receiver(SECRET, lambda _: 200) as users,
        Receiver(SECRET, lambda _: 200) as everything,
    ):
        sender = _sender(
            system,
            _sub("messages", messages.url, events=("message.*",)),
            _sub("users", users.url, topics=(BizTopic.USERS.value,)),
            _sub("all", everything.url),
        )
        await sender.handle(records)
        await sender.close()

    assert [r.event_id for r in messages.requests] == [stored.id]
    assert [r.event_id for r in users.requests] == [online.id]
    assert [r.event_id for r in everything.requests] == [stored.id, online.id]


def test_settings_refuse_unknown_filters_and_unsigned_subscribers() -> None:
    with pytest.raises(ValueError, match="matches none"):
        WebhookSubscriber(name="x", url="http://h", secret="s", events=("mesage.stored",))
    with pytest.raises(ValueError, match="topic"):
        WebhookSubscriber(name="x", url="http://h", secret="s", topics=("im.up.msg",))
    with pytest.raises(ValueError, match="secret"):
        WebhookSubscriber(name="x", url="http://h", secret="")
    with pytest.raises(msgspec.ValidationError, match="unique"):
        msgspec.convert(
            {"subscribers": [{"name": "x", "url": "http://h", "secret": "s"}] * 2},
            WebhookSettings,
        )
