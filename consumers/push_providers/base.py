"""What every provider shares: the notification, the outcome, the interface, the retries.

A provider turns one (device, notification) into one HTTP exchange with its service and
classifies the answer:

- `Outcome.SENT`: the service accepted the push;
- `Outcome.INVALID_TOKEN`: the service says this device token will never work again (the
  push group removes it);
- `Outcome.FAILED`: refused for another reason, or every attempt failed;
- `Outcome.SKIPPED`: no provider is configured for the device.

Transient failures (5xx, 429, timeouts, connection errors) raise `TransientPushError` inside
an attempt; `send_with_retries` retries them with exponential backoff and jitter, a bounded
number of times, then gives up with `Outcome.FAILED`. Backoff sleeps go through
`bus.runner.hold`, so a stop or a rebalance ends them at once (the push is then recorded as
failed rather than holding the partition).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import httpx
import msgspec
import tenacity

from bus.runner import Aborted, hold
from schemas.codes import SessionType
from schemas.events import PushRequest
from store.push_tokens import PushDevice

__all__ = [
    "Notification",
    "Outcome",
    "Provider",
    "RetrySettings",
    "TransientPushError",
    "notification_for",
    "send_with_retries",
    "transient_status",
]

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    """How one push to one device ended."""

    SENT = "sent"
    INVALID_TOKEN = "invalid_token"
    FAILED = "failed"
    SKIPPED = "skipped"


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """One offline push: the visible alert and the data the app needs to open the chat."""

    user_id: int
    conversation: str
    seq: int
    from_user_id: int
    from_nick_name: str
    #: 1 single chat, 2 group
    session_type: int
    #: the group (0 for a single chat)
    group_id: int
    msg_type: int
    created_ms: int
    #: start of a text message ("" unless ``[push] preview_chars`` allows it)
    preview: str
    #: the alert's title and body
    title: str
    body: str
    trace_id: str


def notification_for(request: PushRequest) -> Notification:
    """The notification of a push request: titled by the sender, saying the preview if
    there is one."""
    notice = request.notice
    title = notice.from_nick_name or "New message"
    if notice.session_type == SessionType.GROUP:
        title = f"{title} (group)"
    body = notice.preview or "New message"
    return Notification(
        user_id=request.user_id,
        conversation=notice.conversation,
        seq=notice.seq,
        from_user_id=notice.from_user_id,
        from_nick_name=notice.from_nick_name,
        session_type=notice.session_type,
        group_id=notice.group_id,
        msg_type=notice.msg_type,
        created_ms=notice.created_ms,
        preview=notice.preview,
        title=title,
        body=body,
        trace_id=request.trace_id,
    )


class TransientPushError(Exception):
    """An attempt failed in a way worth retrying (5xx, 429, timeout, connection)."""


class Provider(Protocol):
    """One push service."""

    @property
    def name(self) -> str:
        """The provider's name (`store.push_tokens.PushProvider` value)."""
        ...

    async def send(self, device: PushDevice, notification: Notification) -> Outcome:
        """Push `notification` to `device`, retrying transient failures (never raises for
        an answer of the service or the network; `Aborted` passes through)."""
        ...

    async def aclose(self) -> None:
        """Close the provider's HTTP client."""
        ...


class RetrySettings(msgspec.Struct, frozen=True):
    """Attempts and backoff of one push (``[push]`` max_attempts, *_backoff_s)."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 10.0


def transient_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying."""
    return status == 429 or status >= 500


async def _backoff(seconds: float) -> None:
    await hold(seconds)


async def send_with_retries(
    provider: str,
    attempt: Callable[[], Awaitable[Outcome]],
    retry: RetrySettings,
    *,
    what: str,
) -> Outcome:
    """Run `attempt` until it returns, retrying `TransientPushError` and httpx transport
    errors (timeouts included) with backoff; `Outcome.FAILED` when attempts run out or the
    consumer is stopping (`what` names the push in logs)."""
    retrying = tenacity.AsyncRetrying(
        sleep=_backoff,
        stop=tenacity.stop_after_attempt(retry.max_attempts),
        wait=tenacity.wait_exponential_jitter(
            multiplier=retry.initial_backoff_s,
            max=retry.max_backoff_s,
            jitter=retry.initial_backoff_s,
        ),
        retry=tenacity.retry_if_exception_type((TransientPushError, httpx.TransportError)),
        reraise=True,
    )
    try:
        async for try_ in retrying:
            with try_:
                return await attempt()
    except (TransientPushError, httpx.TransportError) as exc:
        log.warning(
            "push %s: %s failed after %d attempts: %r", provider, what, retry.max_attempts, exc
        )
    except Aborted:
        log.warning("push %s: %s abandoned: the consumer is stopping", provider, what)
    return Outcome.FAILED
