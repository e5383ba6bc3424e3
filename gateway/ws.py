"""The WebSocket shell, on the `websockets` library's asyncio server.

One binary message is one frame. A text message is not our protocol: the connection is
closed with 1003 (unsupported data). A message above `max_frame_size` is refused by
websockets itself (close 1009), before it is buffered. WebSocket keepalive pings are off:
the protocol's own heartbeat and the core's idle timer do that job, once.

websockets' `send` waits while the transport's buffer is above its high-water mark, so
frames for the client queue in a deque drained by a sender task; when the client does not
read, the deque reaches `send_queue_frames` and the connection is dropped.
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

from gateway.tcp import Acceptor

__all__ = ["WsLink", "serve_ws"]

log = logging.getLogger(__name__)

WRITE_HIGH_WATER = 64 * 1024
CLOSE_GRACE_S = 5.0


class WsLink:
    """One WebSocket client; implements `gateway.session.Link`. Lives in its handler task."""

    def __init__(self, ws: ServerConnection, *, send_queue_frames: int) -> None:
        self._ws = ws
        self._limit = send_queue_frames
        self._queue: collections.deque[bytes] = collections.deque()
        self._wakeup = asyncio.Event()
        self._readable = asyncio.Event()
        self._readable.set()
        self._closing = False
        self._aborted = False
        peer = ws.remote_address
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    @property
    def peer(self) -> str:
        return self._peer

    def write(self, frames: list[bytes]) -> bool:
        if self._closing:
            return True
        self._queue.extend(frames)
        self._wakeup.set()
        return len(self._queue) <= self._limit

    def close(self) -> None:
        self._closing = True
        self._wakeup.set()
        self._readable.set()  # a paused reader must see the close

    def abort(self) -> None:
        self._closing = self._aborted = True
        self._queue.clear()
        self._wakeup.set()
        self._readable.set()
        self._ws.transport.abort()

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()

    async def send_loop(self) -> None:
        """Write queued frames until closed; then close the WebSocket cleanly (1000)."""
        ws = self._ws
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue and not self._aborted:
                    await ws.send(self._queue.popleft())
                if self._closing:
                    break
            if not self._aborted:
                async with asyncio.timeout(CLOSE_GRACE_S):
                    await ws.close(CloseCode.NORMAL_CLOSURE)
        except (ConnectionClosed, TimeoutError, OSError):
            pass
        finally:
            if not self._aborted and ws.state is not State.CLOSED:
                ws.transport.abort()

    async def read_loop(self, acceptor: Acceptor) -> None:
        """Feed messages to the connection until the client goes."""
        ws = self._ws
        conn = acceptor.accept(self)
        if conn is None:
            await ws.close(CloseCode.TRY_AGAIN_LATER, "gate full")
            return
        sender = asyncio.create_task(self.send_loop(), name=f"ws-send-{conn.conn_id}")
        try:
            while not self._closing:
                await self._readable.wait()
                message = await ws.recv()
                if isinstance(message, str):
                    log.info("conn %d (%s): text message, closing", conn.conn_id, self._peer)
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
            self._wakeup.set()
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
