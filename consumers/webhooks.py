"""The ``webhook`` group: business events (``biz.*``) POSTed to the configured subscribers.

For business servers that do not consume Kafka: every event of ``biz.c2s`` and
``biz.events.*`` is POSTed to each ``[[webhooks.subscribers]]`` entry whose filter matches,
signed with the subscriber's secret (the contract: `schemas.webhooks`; an operator's guide:
docs/events.md, "Webhooks"). Per batch — one partition, in offset order:

- the subscribers are served **in parallel**, each one **sequentially**: a subscriber gets
  the events of a key in the order they are on the topic, and the next event only after the
  previous one succeeded or was given up on;
- an event is POSTed until a 2xx answer; 5xx, 429 (honouring ``Retry-After`` up to the
  maximum backoff), timeouts and connection errors are retried with exponential backoff and
  jitter (tenacity) up to the subscriber's ``max_attempts``; any other answer (a 4xx, a
  redirect: the signature is never sent elsewhere) is not retried;
- an event given up on becomes a `schemas.webhooks.WebhookDeadLetter` on
  ``biz.webhooks.dead-letter`` (key: the event's key), and the subscriber moves on to the
  next event. After an event *exhausted its attempts* the subscriber is taken to be down for
  the rest of the batch: its remaining events are dead-lettered without being tried
  (``attempts`` 0). That bounds a batch to one retry schedule per subscriber — a dead
  receiver must not hold a partition for hours (nor past Kafka's poll interval) — and the
  next batch tries again from scratch;
- the dead letters are published, durably, before the handler returns; only then is the
  batch committed.

Delivery is at-least-once: a batch replayed after a crash or a rebalance is POSTed again, so
receivers dedupe on ``X-CoffeeBus-Event-Id`` (the event's ``id``). One slow subscriber holds
its partitions for every subscriber — the price of per-key order without per-subscriber
offsets; give a slow receiver its own CoffeeBus consumer deployment (a copy of the group
with its own group id and only that subscriber) if that matters. A graceful stop waits for
the in-flight retry schedules to end (at most ``max_attempts`` * (``timeout_s`` +
``max_backoff_s``)).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import httpx
import msgspec
import tenacity

from bus.base import Bus, Outgoing, Record, Reject, TopicPartition
from bus.topology import Topology
from consumers.registry import consumer_group
from consumers.settings import WebhookSettings, WebhookSubscriber
from schemas.bizevents import BizTopic
from schemas.envelope import now_ms
from schemas.webhooks import (
    ATTEMPT_HEADER,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookDeadLetter,
    encode_dead_letter,
    signature_header,
)
from telemetry.metrics import WEBHOOKS

if TYPE_CHECKING:
    from consumers.runtime import Runtime

__all__ = ["WebhookSender", "build"]

log = logging.getLogger(__name__)

USER_AGENT: Final = "CoffeeBus-Webhooks/1"
#: characters of a receiver's answer kept in a dead letter's error
_MAX_BODY_IN_ERROR: Final = 300


class _Head(msgspec.Struct, frozen=True):
    """What the sender reads of an event: its type and id (the rest is passed on as is)."""

    type: str
    id: str


@dataclass(frozen=True, slots=True)
class _Item:
    record: Record
    type: str
    id: str


class _Failed(Exception):
    """One POST failed; `retriable` says whether another attempt may succeed."""

    def __init__(
        self, error: str, *, status: int | None, retriable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.retriable = retriable
        self.retry_after = retry_after


class _Subscriber:
    """A configured subscriber and its filter."""

    def __init__(self, config: WebhookSubscriber) -> None:
        self.config = config
        self._types = {e for e in config.events if not e.endswith("*")}
        self._prefixes = tuple(e[:-1] for e in config.events if e.endswith("*"))
        self._topics = set(config.topics)

    def wants(self, item: _Item) -> bool:
        if not (self._types or self._prefixes or self._topics):
            return True
        return (
            item.type in self._types
            or item.type.startswith(self._prefixes)
            or item.record.topic in self._topics
        )


class WebhookSender:
    """Handles batches of ``biz.*`` records for the webhook subscribers (module docstring)."""

    def __init__(
        self,
        *,
        bus: Bus,
        topology: Topology,
        settings: WebhookSettings,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bus = bus
        self.settings = settings
        self._subscribers = [_Subscriber(s) for s in settings.subscribers]
        self._dead_topic = topology.topic(BizTopic.WEBHOOK_DEAD_LETTER).name
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
        )
        self._client = client or httpx.AsyncClient(
            limits=limits, follow_redirects=False, headers={"User-Agent": USER_AGENT}
        )
        self._clock = clock
        # initial, 2x, 4x ... up to the maximum, plus up to `initial` of jitter
        self._backoff = tenacity.wait_exponential_jitter(
            multiplier=settings.initial_backoff_s,
            max=settings.max_backoff_s,
            jitter=settings.initial_backoff_s,
        )

    async def handle(self, records: Sequence[Record]) -> None:
        """POST the batch's events to every subscriber that wants them; dead-letter failures."""
        if not self._subscribers:
            return
        # Decode every head before POSTing anything: a poison record rejects the batch while
        # nothing has been sent, and the runner's one-by-one pass sends each good one once.
        items = [_item(record) for record in records]
        results = await asyncio.gather(*(self._serve(sub, items) for sub in self._subscribers))
        dead = [letter for letters in results for letter in letters]
        if dead:
            await self._bus.publish_batch(dead)

    async def _serve(self, sub: _Subscriber, items: Sequence[_Item]) -> list[Outgoing]:
        """One subscriber's share of a batch, in order; returns its dead letters."""
        dead: list[Outgoing] = []
        down: str | None = None
        for item in items:
            if not sub.wants(item):
                continue
            if down is not None:
                dead.append(
                    self._dead_letter(sub, item, _Failed(down, status=None, retriable=True), 0)
                )
                continue
            attempts, failure = await self._deliver(sub, item)
            if failure is None:
                continue
            log.warning(
                "webhook %s: gave up on %s (%s[%d]@%d) after %d attempt(s): %s",
                sub.config.name,
                item.id,
                item.record.topic,
                item.record.partition,
                item.record.offset,
                attempts,
                failure.error,
            )
            dead.append(self._dead_letter(sub, item, failure, attempts))
            if failure.retriable:
                down = f"not attempted: {item.id} exhausted its attempts earlier in the batch"
        return dead

    async def _deliver(self, sub: _Subscriber, item: _Item) -> tuple[int, _Failed | None]:
        """POST `item` until it succeeds or is given up on: (attempts made, final failure)."""
        attempts = 0
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(sub.config.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, _Failed) and e.retriable),
            before_sleep=lambda state: _log_retry(sub, item, state),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    await self._post(sub, item, attempts)
        except _Failed as failure:
            return attempts, failure
        WEBHOOKS.labels(subscriber=sub.config.name, result="delivered").inc()
        return attempts, None

    def _wait(self, state: tenacity.RetryCallState) -> float:
        s = self.settings
        backoff = self._backoff(state)
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, _Failed) and failure.retry_after is not None:
            return min(max(backoff, failure.retry_after), s.max_backoff_s)
        return backoff

    async def _post(self, sub: _Subscriber, item: _Item, attempt: int) -> None:
        body = item.record.value
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: item.id,
            EVENT_TYPE_HEADER: item.type,
            ATTEMPT_HEADER: str(attempt),
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature_header(sub.config.secret, timestamp, body),
        }
        timeout = sub.config.timeout_s
        try:
            async with asyncio.timeout(timeout):  # the whole exchange, not each phase
                rsp = await self._client.post(
                    sub.config.url, content=body, headers=headers, timeout=timeout
                )
        except (TimeoutError, httpx.TimeoutException):
            raise _Failed(f"no answer within {timeout:g} s", status=None, retriable=True) from None
        except httpx.TransportError as exc:
            raise _Failed(f"{type(exc).__name__}: {exc}", status=None, retriable=True) from None
        status = rsp.status_code
        if 200 <= status < 300:
            return
        text = f"HTTP {status}: {rsp.text[:_MAX_BODY_IN_ERROR]}"
        if status >= 500 or status == 429:
            retry_after = _retry_after(rsp.headers.get("Retry-After"), self._clock())
            raise _Failed(text, status=status, retriable=True, retry_after=retry_after)
        raise _Failed(text, status=status, retriable=False)

    def _dead_letter(
        self, sub: _Subscriber, item: _Item, failure: _Failed, attempts: int
    ) -> Outgoing:
        WEBHOOKS.labels(subscriber=sub.config.name, result="dead_lettered").inc()
        record = item.record
        letter = WebhookDeadLetter(
            subscriber=sub.config.name,
            url=sub.config.url,
            event_id=item.id,
            event_type=item.type,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            attempts=attempts,
            status=failure.status,
            error=failure.error,
            ts=now_ms(),
            body=record.value.decode("utf-8", "replace"),
        )
        return Outgoing(self._dead_topic, encode_dead_letter(letter), key=record.key)

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()


_head_decoder: Final = msgspec.json.Decoder(_Head)


def _item(record: Record) -> _Item:
    try:
        head = _head_decoder.decode(record.value)
    except msgspec.DecodeError as exc:
        raise Reject(f"not a business event (no type and id): {exc}") from exc
    return _Item(record, head.type, head.id)


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _log_retry(sub: _Subscriber, item: _Item, state: tenacity.RetryCallState) -> None:
    WEBHOOKS.labels(subscriber=sub.config.name, result="retried").inc()
    failure = state.outcome.exception() if state.outcome is not None else None
    log.info(
        "webhook %s: attempt %d of %s failed (%s); retrying in %.2f s",
        sub.config.name,
        state.attempt_number,
        item.id,
        failure,
        state.upcoming_sleep,
    )


@consumer_group("webhook")
def build(runtime: Runtime) -> WebhookSender:
    """The webhook sender for ``[webhooks]`` subscribers (none configured: it skips all)."""
    return WebhookSender(
        bus=runtime.bus, topology=runtime.topology, settings=runtime.settings.webhooks
    )
