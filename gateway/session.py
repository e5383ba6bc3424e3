"""One live client connection on a gate: the sans-I/O core joined to a transport.

`GateConnection` sits between a shell (`gateway.tcp`, `gateway.ws`), which moves bytes, and
the `Gate` (`gateway.server`), which talks to stores and the bus. It feeds the core, writes
what the core wants written, keeps the core's deadline armed on the event loop, and hands
the events that need I/O to the gate *one at a time, in order* — a client's frames are
published in the order it sent them, which is what keeps a conversation's messages in
order on the bus.

No task exists for an idle connection: a worker task is started when an event needs the
gate and ends when the queue is empty. If events pile up faster than the gate handles them,
reading from the client is paused until the queue drains (back-pressure instead of memory).

A shell implements `Link`. Its `write` never blocks: it either hands the frames to the
transport or queues them, and returns False when the connection's send queue
(`send_queue_frames`) is full — a client that does not read is then disconnected instead
of being buffered without limit.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from gateway.core import (
    CloseReason,
    Connection,
    ConnectionClosed,
    ConnectionLimits,
    Event,
    HeartbeatReceived,
)
from schemas.codes import KickReason
from schemas.frame import SharedPush
from store.routes import Route
from telemetry import logcontext

__all__ = ["GateConnection", "Link", "Owner"]

log = logging.getLogger(__name__)

_ROUTINE_CLOSES = frozenset({CloseReason.PEER_CLOSED, CloseReason.LOGOUT, CloseReason.SHUTDOWN})

#: Pending gate events above which reading from the client pauses.
PAUSE_READING_AT = 8


class Link(Protocol):
    """What a shell gives a `GateConnection`: a way to write frames and to hang up."""

    @property
    def peer(self) -> str:
        """The client's address, for logs."""
        ...

    @property
    def transport(self) -> str:
        """``tcp`` or ``ws``: the metrics' label of the connection."""
        ...

    def write(self, frames: list[bytes]) -> bool:
        """Send encoded frames (one WebSocket message each); False if the send queue is full."""
        ...

    @property
    def backlog(self) -> int:
        """Frames written but still waiting in the link's own queue (a client not keeping up)."""
        ...

    def close(self, reason: CloseReason) -> None:
        """Close after what was written has been sent; `reason` says why (a WebSocket
        close code tells the client: 1002 for a protocol error, ...)."""
        ...

    def abort(self) -> None:
        """Close now, dropping whatever is not sent yet."""
        ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Owner(Protocol):
    """The gate, as a connection sees it."""

    async def handle(self, conn: GateConnection, event: Event) -> None:
        """Do what `event` asks (login, logout, publish); errors are the owner's to answer."""
        ...

    def connection_closed(self, conn: GateConnection, event: ConnectionClosed) -> None:
        """The connection is gone: forget it and remove its route."""
        ...


class GateConnection:
    """A client connection held by a gate (see the module docstring)."""

    __slots__ = (
        "_link",
        "_loop",
        "_owner",
        "_paused",
        "_timer",
        "_work",
        "_worker",
        "core",
        "publishing",
        "route",
        "token_digest",
    )

    def __init__(
        self,
        owner: Owner,
        link: Link,
        conn_id: int,
        *,
        limits: ConnectionLimits,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._owner = owner
        self._link = link
        self._loop = loop
        self.core = Connection(conn_id, limits=limits, now=loop.time())
        #: The route this connection registered, once logged in.
        self.route: Route | None = None
        #: `schemas.envelope.token_digest` of the token it logged in with (b"": by password,
        #: or not logged in): what a token rotation's `KickUser` compares.
        self.token_digest = b""
        # Made on the first event and dropped when the worker empties it: an idle
        # connection holds no queue (an empty deque is ~760 bytes).
        self._work: collections.deque[Event] | None = None
        #: The gate's uplink records of this connection not yet durable, oldest first
        #: (`gateway.server.Gate._publish`); None while there are none.
        self.publishing: collections.deque[asyncio.Future[Any]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._arm_timer()

    @property
    def conn_id(self) -> int:
        return self.core.conn_id

    @property
    def user_id(self) -> int:
        """The logged-in user (0 before login)."""
        return self.core.user_id

    @property
    def backlog(self) -> int:
        """Frames waiting in the link's queue (`Link.backlog`)."""
        return self._link.backlog

    @property
    def peer(self) -> str:
        return self._link.peer

    @property
    def transport(self) -> str:
        return self._link.transport

    @property
    def worker(self) -> asyncio.Task[None] | None:
        """The task handling this connection's events, while there is one."""
        return self._worker

    # -- from the shell ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Bytes from a TCP stream."""
        self.core.receive_data(data, self._loop.time())
        self.pump()

    def message_received(self, data: bytes) -> None:
        """One binary WebSocket message."""
        self.core.receive_message(data, self._loop.time())
        self.pump()

    def connection_lost(self) -> None:
        """The transport is gone (peer closed, reset, or our own close completed)."""
        self.core.receive_eof()
        self.pump()

    # -- from the gate -----------------------------------------------------------------------

    def send(self, command_id: int, body: bytes, seq: int | None = None) -> None:
        """Write a frame: a response echoing `seq`, or a push with the next push seq."""
        self.core.send_frame(command_id, body, seq)
        self.pump()

    def queue(self, command_id: int, body: bytes, seq: int | None = None) -> None:
        """`send` without writing yet: the caller pumps once it queued all it has."""
        self.core.send_frame(command_id, body, seq)

    def push(self, command_id: int, pushes: Sequence[SharedPush]) -> None:
        """Write a push per body now, in one write with anything queued before (the room
        fan-out: `gateway.rooms`). Pushes change no deadline and raise no event, so this is
        `pump` without their costs — unless the write finds the send queue full, when the
        connection closes as in `pump`."""
        core = self.core
        frames = core.push_shared(command_id, pushes)
        if frames and not self._link.write(frames):
            core.close(CloseReason.SLOW_CONSUMER, "send queue full")
            core.data_to_send()
            self._link.abort()
            self.pump()  # the close's event

    def kick(self, reason: KickReason, *, new_client_type: int = 0, text: str = "") -> None:
        """KickNotify, then close."""
        self.core.kick(reason, new_client_type=new_client_type, text=text)
        self.pump()

    def close(self, reason: CloseReason, detail: str = "") -> None:
        self.core.close(reason, detail)
        self.pump()

    def pump(self) -> None:
        """Move the core's output to the transport and its events to the gate."""
        core = self.core
        frames = core.data_to_send()
        if frames and not self._link.write(frames):
            # Only a client that stopped reading fills its queue: nothing more will get
            # through, so drop the connection instead of flushing into a full buffer.
            core.close(CloseReason.SLOW_CONSUMER, "send queue full")
            core.data_to_send()
            self._link.abort()
        for event in core.events_received():
            if isinstance(event, ConnectionClosed):
                self._closed(event)
            elif not isinstance(event, HeartbeatReceived):
                if self._work is None:
                    self._work = collections.deque()
                self._work.append(event)
        work = self._work
        if work and not core.closed:
            if self._worker is None:
                self._worker = self._loop.create_task(
                    self._run_worker(work), name=f"gate-conn-{core.conn_id}"
                )
            if len(work) >= PAUSE_READING_AT and not self._paused:
                self._paused = True
                self._link.pause_reading()
        self._arm_timer()

    # -- internals ---------------------------------------------------------------------------

    def _closed(self, event: ConnectionClosed) -> None:
        if self._work is not None:
            self._work.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if event.reason is CloseReason.PEER_CLOSED:
            self._link.abort()  # nothing to flush to a peer that is gone
        elif event.reason is not CloseReason.SLOW_CONSUMER:
            self._link.close(event.reason)
        # A client leaving, logging out or a gate shutting down is routine; every other close
        # (timeouts, limits, kicks, protocol errors) is something an operator may look for.
        level = logging.DEBUG if event.reason in _ROUTINE_CLOSES else logging.INFO
        log.log(
            level,
            "conn %d (%s, user %d) closed: %s %s",
            self.core.conn_id,
            self._link.peer,
            self.core.user_id,
            event.reason.value,
            event.detail,
            extra={"conn_id": self.core.conn_id, "user_id": self.core.user_id},
        )
        self._owner.connection_closed(self, event)

    async def _run_worker(self, work: collections.deque[Event]) -> None:
        try:
            while work and not self.core.closed:
                event = work.popleft()
                core = self.core
                try:
                    # Whatever the gate logs for this event names the connection and user.
                    with logcontext.bind(conn_id=core.conn_id, user_id=core.user_id):
                        await self._owner.handle(self, event)
                except Exception:
                    log.exception("conn %d: handling %r failed", self.core.conn_id, event)
                    self.core.close(CloseReason.INTERNAL_ERROR, "internal error")
                self.pump()
                if self._paused and len(work) < PAUSE_READING_AT // 2:
                    self._paused = False
                    self._link.resume_reading()
        finally:
            self._worker = None
            if not work:
                self._work = None

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline is None:
            return
        # Lazy timer: deadlines only move later with activity, so a timer that fires early
        # re-arms itself; it is re-created only when the deadline moved earlier.
        if self._timer is None or self._timer.when() > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.core.on_timer(self._loop.time())
        self.pump()
