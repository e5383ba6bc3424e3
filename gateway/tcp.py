"""The TCP shell: an `asyncio.Protocol` per connection around a `GateConnection`.

A protocol object rather than streams and a task per connection: an idle connection then
costs its transport, this object and the core, with no coroutine frame — what lets one gate
hold tens of thousands of idle clients.

Writing never blocks. Frames go straight to the transport while it accepts them; once its
buffer passes the high-water mark (`pause_writing`), they wait in a queue of at most
`send_queue_frames` frames, flushed on `resume_writing`. A full queue means the client
stopped reading: `write` returns False and the connection is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from typing import Protocol, cast

from gateway.core import CloseReason
from gateway.session import GateConnection, Link

__all__ = ["Acceptor", "TcpLink", "serve_tcp"]

log = logging.getLogger(__name__)

#: Transport write buffer above which the client counts as not reading (then the queue).
WRITE_HIGH_WATER = 64 * 1024
#: How long a close waits for the peer to take the last frames before dropping them.
CLOSE_GRACE_S = 5.0
LISTEN_BACKLOG = 4096


class Acceptor(Protocol):
    """The gate, as a listener sees it."""

    def accept(self, link: Link) -> GateConnection | None:
        """A new connection for `link`, or None to refuse it (the shell then hangs up)."""
        ...


class TcpLink(asyncio.Protocol):
    """One TCP (or TLS) client connection; implements `gateway.session.Link`."""

    #: the metrics' label of its connections
    transport = "tcp"

    __slots__ = (
        "_acceptor",
        "_closing",
        "_conn",
        "_grace",
        "_limit",
        "_peer",
        "_queue",
        "_transport",
        "_write_paused",
    )

    def __init__(self, acceptor: Acceptor, *, send_queue_frames: int) -> None:
        self._acceptor = acceptor
        self._limit = send_queue_frames
        self._transport: asyncio.Transport | None = None
        self._conn: GateConnection | None = None
        # Only a client that does not keep up needs a queue: made then, not per connection.
        self._queue: collections.deque[bytes] | None = None
        self._write_paused = False
        self._closing = False
        self._grace: asyncio.TimerHandle | None = None
        self._peer = "?"

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer = f"{peer[0]}:{peer[1]}"
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._conn = self._acceptor.accept(self)
        if self._conn is None:
            transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._conn is not None:
            self._conn.data_received(data)

    def eof_received(self) -> bool:
        return False  # half-closed clients are closed: nothing more will come

    def connection_lost(self, exc: Exception | None) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self._queue = None
        if self._conn is not None:
            self._conn.connection_lost()
            self._conn = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._flush()

    # -- Link --------------------------------------------------------------------------------

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def backlog(self) -> int:
        queue = self._queue
        return len(queue) if queue is not None else 0

    def write(self, frames: list[bytes]) -> bool:
        transport = self._transport
        if transport is None or transport.is_closing():
            return True  # nothing to deliver to; connection_lost follows
        if not self._write_paused and not self._queue:
            transport.write(b"".join(frames) if len(frames) > 1 else frames[0])
            return True
        if self._queue is None:
            self._queue = collections.deque()
        self._queue.extend(frames)
        return len(self._queue) <= self._limit

    def close(self, reason: CloseReason) -> None:
        del reason  # a TCP stream has no close code: the KickNotify or ErrorRsp said it
        if self._transport is None or self._closing:
            return
        self._closing = True
        if not self._queue:
            self._transport.close()
        loop = asyncio.get_running_loop()
        self._grace = loop.call_later(CLOSE_GRACE_S, self.abort)

    def abort(self) -> None:
        self._queue = None
        if self._transport is not None:
            self._transport.abort()

    def pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        queue = self._queue
        while queue and not self._write_paused:
            transport.write(queue.popleft())
        if not queue:
            self._queue = None
        if self._closing and not queue and not transport.is_closing():
            transport.close()


async def serve_tcp(
    acceptor: Acceptor,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    send_queue_frames: int,
) -> asyncio.Server:
    """Listen for TCP (TLS with `ssl_context`) clients; each becomes `acceptor.accept`."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: TcpLink(acceptor, send_queue_frames=send_queue_frames),
        host,
        port,
        ssl=ssl_context,
        backlog=LISTEN_BACKLOG,
        reuse_address=True,
    )
