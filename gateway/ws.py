"""The WebSocket shell, on the `websockets` library's asyncio server.

One binary message is one frame. A text message is not our protocol: the connection is
closed with 1003 (unsupported data). A message above `max_frame_size` is refused by
websockets itself (close 1009), before it is buffered. The core's own closes carry a code
that says why (`CLOSE_CODES`): 1002 for a protocol error (a frame whose length field is not
the message's size, a header too short), 1008 for a rate limit or a frame timeout, 1001 for
a gate shutting down, 1011 for an internal error, 1000 for the rest (logout, kicks — their
KickNotify says why —, idle and login timeouts). WebSocket keepalive pings are off:
the protocol's own heartbeat and the core's idle timer do that job, once.

websockets' `send` waits while the transport's buffer is above its high-water mark, so
frames for the client queue in a deque drained by a sender task; when the client does not
read, the deque reaches `send_queue_frames` and the connection is dropped.

An idle connection keeps only what websockets itself needs (its handler task): the sender
task runs only while frames are queued or a close is under way, the queue and the
read-pause waiter are made when first needed, and the handshake's response (headers the
gate never reads again) is dropped once the connection is accepted.
`bench._conn_profile --transport ws` (tracemalloc, 3,000 connections) has the figures.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

from gateway.core import CloseReason
from gateway.tcp import Acceptor

__all__ = ["CLOSE_CODES", "WsLink", "serve_ws"]

log = logging.getLogger(__name__)

WRITE_HIGH_WATER = 64 * 1024
CLOSE_GRACE_S = 5.0

#: The WebSocket close code of each close of the core (1000 for those not listed).
CLOSE_CODES: dict[CloseReason, CloseCode] = {
    CloseReason.PROTOCOL_ERROR: CloseCode.PROTOCOL_ERROR,
    CloseReason.RATE_LIMITED: CloseCode.POLICY_VIOLATION,
    CloseReason.FRAME_TIMEOUT: CloseCode.POLICY_VIOLATION,
    CloseReason.SHUTDOWN: CloseCode.GOING_AWAY,
    CloseReason.INTERNAL_ERROR: CloseCode.INTERNAL_ERROR,
}


class WsLink:
    """One WebSocket client; implements `gateway.session.Link`. Lives in its handler task."""

    #: the metrics' label of its connections
    transport = "ws"

    __slots__ = (
        "_aborted",
        "_close_code",
        "_closing",
        "_limit",
        "_paused",
        "_peer",
        "_queue",
        "_resume",
        "_sender",
        "_ws",
    )

    def __init__(self, ws: ServerConnection, *, send_queue_frames: int) -> None:
        self._ws = ws
        self._limit = send_queue_frames
        self._queue: collections.deque[bytes] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._paused = False
        self._resume: asyncio.Future[None] | None = None
        self._closing = False
        self._close_code = CloseCode.NORMAL_CLOSURE
        self._aborted = False
        peer = ws.remote_address
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def backlog(self) -> int:
        queue = self._queue
        return len(queue) if queue is not None else 0

    def write(self, frames: list[bytes]) -> bool:
        if self._closing:
            return True
        if self._queue is None:
            self._queue = collections.deque()
        self._queue.extend(frames)
        self._start_sender()
        return len(self._queue) <= self._limit

    def close(self, reason: CloseReason) -> None:
        if not self._closing:
            self._close_code = CLOSE_CODES.get(reason, CloseCode.NORMAL_CLOSURE)
        self._closing = True
        self._start_sender()
        self._wake_reader()  # a paused reader must see the close

    def abort(self) -> None:
        self._closing = self._aborted = True
        if self._queue is not None:
            self._queue.clear()
        self._wake_reader()
        self._ws.transport.abort()

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._wake_reader()

    def _wake_reader(self) -> None:
        self._paused = False
        if self._resume is not None and not self._resume.done():
            self._resume.set_result(None)
        self._resume = None

    def _start_sender(self) -> None:
        if self._sender is None and not self._aborted:
            self._sender = asyncio.create_task(self._send(), name=f"ws-send-{self._peer}")

    async def _send(self) -> None:
        """Write the queued frames; when closing, then close the WebSocket with the code of
        its reason (`CLOSE_CODES`).

        Ends when the queue is empty: the next `write` or `close` starts a new one.
        """
        ws = self._ws
        clean = False
        try:
            queue = self._queue
            while queue and not self._aborted:
                await ws.send(queue.popleft())
            if self._closing and not self._aborted:
                async with asyncio.timeout(CLOSE_GRACE_S):
                    await ws.close(self._close_code)
            clean = True
        except (ConnectionClosed, TimeoutError, OSError):
            pass
        finally:
            self._sender = None
            if not self._queue:
                self._queue = None  # idle again: no queue until the next write
            if not clean and not self._aborted and ws.state is not State.CLOSED:
                ws.transport.abort()

    async def read_loop(self, acceptor: Acceptor) -> None:
        """Feed messages to the connection until the client goes."""
        ws = self._ws
        # Accepted: the handshake's response is not needed any more. (The request cannot go:
        # websockets tells the handshake from later frames by `request is None`.)
        ws.response = None
        conn = acceptor.accept(self)
        if conn is None:
            await ws.close(CloseCode.TRY_AGAIN_LATER, "gate full")
            return
        try:
            while not self._closing:
                if self._paused:
                    self._resume = asyncio.get_running_loop().create_future()
                    await self._resume
                    continue
                message = await ws.recv()
                if isinstance(message, str):
                    log.info("conn %d (%s): text message, closing", conn.conn_id, self._peer)
                    if self._queue is not None:
                        self._queue.clear()
                    self._closing = True
                    await ws.close(CloseCode.UNSUPPORTED_DATA, "binary frames only")
                    break
                conn.message_received(message)
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                log.info("conn %d (%s): message above the frame limit", conn.conn_id, self._peer)
        finally:
            conn.connection_lost()
            self._closing = True
            self._start_sender()  # the closing handshake (or nothing, once aborted)
            sender = self._sender
            if sender is not None:
                await sender


async def serve_ws(
    acceptor: Acceptor,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    max_frame_size: int,
    send_queue_frames: int,
) -> Server:
    """Listen for WebSocket (wss with `ssl_context`) clients; each becomes `acceptor.accept`."""

    async def handler(ws: ServerConnection) -> None:
        await WsLink(ws, send_queue_frames=send_queue_frames).read_loop(acceptor)

    return await serve(
        handler,
        host,
        port,
        ssl=ssl_context,
        max_size=max_frame_size,
        compression=None,
        ping_interval=None,
        write_limit=WRITE_HIGH_WATER,
        reuse_address=True,
    )
