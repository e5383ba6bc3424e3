"""Load for fault tests: SDK clients send through real gates at a controlled rate, and every
message the server acks is recorded in a `Ledger` for `tests.chaos.checker`.

A send that gets no ack in time — the request timed out, the connection dropped, the
client is reconnecting — is sent again with the **same client_msg_id**, as a CoffeeChat
client does; the server must answer a resend with the original server_msg_id and deliver
nothing twice. A send refused for good (a non-retriable `ServerError`) is recorded as
refused, never retried.

Usage::

    from tests.chaos.checker import check_delivery, record_fault_result, settle
    from tests.chaos.harness import Load, c2c, group

    load = Load(rate=200.0)                     # messages/s over all streams
    load.add(alice_client, c2c(alice, bob), count=300)
    load.add(carol_client, group(gid, members, sender=carol), count=100)
    running = load.start()                      # an asyncio.Task
    await load.ledger.wait_acked(100)           # e.g. inject the fault here
    ...
    await load.finish(within=120)               # every send acked (or refused / given up)
    # open-ended: add(..., count=10**6), then load.stop() once enough happened, then finish()
    report = await settle(load.ledger, inbox=runtime.inbox, messages=runtime.messages)
    record_fault_result(report, faults=1)       # summed in `make chaos`'s last line
    assert report.clean, report.summary()

The clients are the caller's (logged in, on any gates, with or without the SDK's
reconnect); the harness only sends on them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable

import msgspec

from schemas.codes import SessionType
from schemas.ids import ConversationId, GroupId, UserId, c2c_conversation_id, group_conversation_id
from sdk.client import Client
from sdk.errors import (
    ConnectionLostError,
    NotConnectedError,
    RequestTimeoutError,
    ServerError,
)

__all__ = ["Acked", "Ledger", "Load", "Target", "c2c", "group"]

log = logging.getLogger(__name__)


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """A conversation a sender writes to, and every user whose inbox must get its messages
    (c2c: the peer and the sender — the sender's other devices sync from it; group: every
    member, the sender included)."""

    session_type: SessionType
    session_id: int
    """The peer's user id or the group id, as in MsgData.to_session_id."""
    conversation: ConversationId
    recipients: tuple[UserId, ...]


def c2c(sender: UserId, peer: UserId) -> Target:
    """`sender` writing to `peer`."""
    return Target(
        session_type=SessionType.SINGLE,
        session_id=peer,
        conversation=c2c_conversation_id(sender, peer),
        recipients=(peer, sender),
    )


def group(group_id: int, members: Iterable[UserId]) -> Target:
    """A member writing to group `group_id` whose members (sender included) are `members`."""
    return Target(
        session_type=SessionType.GROUP,
        session_id=group_id,
        conversation=group_conversation_id(GroupId(group_id)),
        recipients=tuple(dict.fromkeys(members)),
    )


class Acked(msgspec.Struct, frozen=True, kw_only=True):
    """One message the server acked (its MsgDataAck came back)."""

    sender: UserId
    conversation: ConversationId
    session_type: SessionType
    recipients: tuple[UserId, ...]
    client_msg_id: str
    server_msg_id: int
    attempts: int
    """How many times it was sent (1 + resends)."""


class Ledger:
    """Everything a load run observed: acked messages, resends, refusals, give-ups."""

    def __init__(self) -> None:
        self.acked: list[Acked] = []
        #: Sends repeated with the same client_msg_id (timeouts, dropped connections).
        self.resends = 0
        #: Sends the server refused for good: (client_msg_id, error text).
        self.refused: list[tuple[str, str]] = []
        #: Sends still unacked after `Load.give_up_after` seconds of retrying.
        self.given_up: list[str] = []
        self._changed = asyncio.Event()

    def assert_every_send_answered(self, total: int | None = None) -> None:
        """No send refused or given up; with `total`, exactly that many messages acked."""
        assert not self.refused, f"refused: {self.refused[:5]}"
        assert not self.given_up, f"given up: {self.given_up[:5]}"
        if total is not None:
            assert len(self.acked) == total, f"{len(self.acked)} acked of {total}"

    def record(self, acked: Acked) -> None:
        """Record an ack (the harness calls this; tests may too, for sends of their own)."""
        self.acked.append(acked)
        self._changed.set()

    async def wait_acked(self, n: int, *, within: float = 60.0) -> None:
        """Return once at least `n` messages are acked (TimeoutError after `within` s)."""
        async with asyncio.timeout(within):
            while len(self.acked) < n:
                self._changed.clear()
                await self._changed.wait()


class _Stream(msgspec.Struct, kw_only=True):
    client: Client
    sender: UserId
    target: Target
    count: int


class Load:
    """Sends from several clients at a shared, controlled rate.

    Args:
        rate: messages per second over all streams (None: as fast as the windows allow).
        window: sends in flight per stream (a client pipelines this many requests).
        give_up_after: seconds a single message may keep being resent before it is
            recorded in `Ledger.given_up` (a fault test asserts there are none).
        retry_delay / max_backoff: a failed send (timed out, connection lost, client
            reconnecting) is sent again after retry_delay * 2**(attempt-1) seconds, at most
            max_backoff — a real client's backoff.
    """

    def __init__(
        self,
        *,
        rate: float | None = 200.0,
        window: int = 10,
        give_up_after: float = 90.0,
        retry_delay: float = 0.05,
        max_backoff: float = 8.0,
        ledger: Ledger | None = None,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive or None")
        if window < 1:
            raise ValueError("window must be at least 1")
        self.rate = rate
        self.window = window
        self.give_up_after = give_up_after
        self.retry_delay = retry_delay
        self.max_backoff = max_backoff
        self.ledger = ledger or Ledger()
        self._streams: list[_Stream] = []
        self._task: asyncio.Task[None] | None = None
        self._next_slot = 0.0
        self._stopping = False

    @property
    def total(self) -> int:
        """How many distinct messages the streams will send (unless stopped early)."""
        return sum(s.count for s in self._streams)

    def add(self, client: Client, sender: UserId, target: Target, *, count: int) -> None:
        """Have `client` (logged in as `sender`) send `count` text messages to `target`."""
        if self._task is not None:
            raise RuntimeError("add streams before start()")
        self._streams.append(_Stream(client=client, sender=sender, target=target, count=count))

    def start(self) -> asyncio.Task[None]:
        """Start sending; the task ends when every message is acked, refused or given up."""
        if self._task is not None:
            raise RuntimeError("already started")
        self._next_slot = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="chaos-load")
        return self._task

    async def finish(self, *, within: float) -> Ledger:
        """Wait for the load to end (TimeoutError after `within` s) and return the ledger."""
        if self._task is None:
            raise RuntimeError("not started")
        async with asyncio.timeout(within):
            await asyncio.shield(self._task)
        return self.ledger

    def stop(self) -> None:
        """Send nothing new; sends already started go on until acked (then `finish`)."""
        self._stopping = True

    async def cancel(self) -> None:
        """Stop sending (teardown after a failure)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        await asyncio.gather(*(self._stream(s) for s in self._streams))

    async def _stream(self, stream: _Stream) -> None:
        # `window` senders share one sequence of message numbers: at most `window` sends of
        # the stream are in flight, and a stream of any length costs `window` coroutines.
        numbers = iter(range(stream.count))

        async def sender() -> None:
            for n in numbers:
                if self._stopping:
                    return
                await self._pace()
                await self._send(stream, n)

        await asyncio.gather(*(sender() for _ in range(self.window)))

    async def _pace(self) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        slot = max(self._next_slot, now)
        self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)  # load shaping, not waiting for a condition

    async def _send(self, stream: _Stream, n: int) -> None:
        target = stream.target
        client_msg_id = str(uuid.uuid4())
        text = f"{stream.sender}:{target.conversation}:{n}"
        deadline = time.monotonic() + self.give_up_after
        attempts = 0
        while True:
            attempts += 1
            if attempts > 1:
                self.ledger.resends += 1
            try:
                ack = await stream.client.send_text(
                    target.session_id,
                    text,
                    session_type=target.session_type,
                    client_msg_id=client_msg_id,
                )
            except (RequestTimeoutError, ConnectionLostError, NotConnectedError):
                if time.monotonic() >= deadline:
                    self.ledger.given_up.append(client_msg_id)
                    log.warning("gave up on %s after %d attempts", client_msg_id, attempts)
                    return
                # Back off as a mobile client does: resending every request timeout would
                # pile a restarting consumer's backlog up faster than it drains.
                await asyncio.sleep(min(self.max_backoff, self.retry_delay * 2 ** (attempts - 1)))
                continue
            except ServerError as exc:
                if exc.retriable and time.monotonic() < deadline:
                    await asyncio.sleep(self.retry_delay)
                    continue
                self.ledger.refused.append((client_msg_id, str(exc)))
                return
            self.ledger.record(
                Acked(
                    sender=stream.sender,
                    conversation=target.conversation,
                    session_type=target.session_type,
                    recipients=target.recipients,
                    client_msg_id=client_msg_id,
                    server_msg_id=ack.server_msg_id,
                    attempts=attempts,
                )
            )
            return
