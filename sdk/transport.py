"""Thin I/O shells that move frames: TCP (asyncio streams) and WebSocket (`websockets`).

Both expose the same three coroutines — `send` bytes of whole frames, `receive` the next
frames, `close` — so the client does not care which one it runs on. TCP reassembles frames
from the byte stream with `FrameDecoder` (split or coalesced reads both work); on WebSocket
one binary message is one frame.

Per connection this costs one socket, a stream reader/writer pair (TCP) or a `websockets`
connection (WS) and a read buffer; no threads. WebSocket compression and the library's own
keepalive pings are off: the protocol's heartbeat does that job, and permessage-deflate
would cost a zlib context per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from typing import Final, Literal, Protocol

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from schemas.errors import FrameError
from schemas.frame import DEFAULT_MAX_FRAME_SIZE, Frame, FrameDecoder, decode_frame
from sdk.errors import ConnectionLostError, ServerProtocolError

__all__ = ["TcpTransport", "Transport", "TransportKind", "WsTransport", "open_transport"]

TransportKind = Literal["tcp", "ws"]

_READ_SIZE: Final = 64 * 1024


class Transport(Protocol):
    """A connection that carries whole frames."""

    async def send(self, data: bytes) -> None:
        """Send the bytes of one or more whole frames."""
        ...

    async def receive(self) -> list[Frame]:
        """Wait for the next frames (at least one); `ConnectionLostError` when the peer has
        closed, `ServerProtocolError` when it sent something that is not a frame."""
        ...

    def abort(self) -> None:
        """Drop the connection at once (a pending `receive` fails)."""
        ...

    async def close(self) -> None:
        """Close the connection cleanly."""
        ...


class TcpTransport:
    """Frames over a TCP (optionally TLS) stream."""

    __slots__ = ("_decoder", "_reader", "_writer")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(max_frame_size=max_frame_size)

    async def send(self, data: bytes) -> None:
        """Write and wait for the buffer to drain below its high-water mark."""
        if self._writer.is_closing():
            raise ConnectionLostError("the connection is closed")
        self._writer.write(data)
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ConnectionLostError(f"send failed: {exc!r}") from exc

    async def receive(self) -> list[Frame]:
        """Read until at least one frame is complete."""
        while True:
            try:
                data = await self._reader.read(_READ_SIZE)
            except (ConnectionError, OSError) as exc:
                raise ConnectionLostError(f"receive failed: {exc!r}") from exc
            if not data:
                detail = (
                    f" mid-frame ({self._decoder.buffered} bytes)" if self._decoder.buffered else ""
                )
                raise ConnectionLostError(f"the server closed the connection{detail}")
            try:
                frames = self._decoder.feed(data)
            except FrameError as exc:
                raise ServerProtocolError(str(exc)) from exc
            if frames:
                return frames

    def abort(self) -> None:
        """Reset the connection."""
        self._writer.transport.abort()

    async def close(self) -> None:
        """Close and wait until the socket is closed."""
        if not self._writer.is_closing():
            self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):  # reset by the peer: closed is closed
            await self._writer.wait_closed()


class WsTransport:
    """Frames over a WebSocket connection, one binary message per frame."""

    __slots__ = ("_max_frame_size", "_ws")

    def __init__(
        self, ws: ClientConnection, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    ) -> None:
        self._ws = ws
        self._max_frame_size = max_frame_size

    async def send(self, data: bytes) -> None:
        """Send one binary message per call (callers send one frame at a time)."""
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise ConnectionLostError(f"send failed: {exc}") from exc

    async def receive(self) -> list[Frame]:
        """Wait for the next binary message and decode it as one frame."""
        try:
            message = await self._ws.recv()
        except ConnectionClosed as exc:
            raise ConnectionLostError(f"the server closed the connection: {exc}") from exc
        if isinstance(message, str):
            raise ServerProtocolError("the server sent a text message; frames are binary")
        try:
            return [decode_frame(message, max_frame_size=self._max_frame_size)]
        except FrameError as exc:
            raise ServerProtocolError(str(exc)) from exc

    def abort(self) -> None:
        """Drop the TCP connection under the WebSocket."""
        self._ws.transport.abort()

    async def close(self) -> None:
        """Run the closing handshake (bounded by the library's close timeout)."""
        await self._ws.close()


async def open_transport(
    host: str,
    port: int,
    *,
    kind: TransportKind = "tcp",
    ssl: ssl_module.SSLContext | None = None,
    path: str = "/",
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    local_addr: tuple[str, int] | None = None,
) -> Transport:
    """Connect to a gate. `local_addr` picks the source address (benchmarks spread
    connections over several loopback addresses to get past one address's ports).

    Raises `OSError` when the connection cannot be made.
    """
    if kind == "tcp":
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl, local_addr=local_addr, limit=_READ_SIZE
        )
        return TcpTransport(reader, writer, max_frame_size=max_frame_size)
    if kind == "ws":
        scheme = "wss" if ssl is not None else "ws"
        netloc = f"[{host}]" if ":" in host else host
        uri = f"{scheme}://{netloc}:{port}{path}"
        try:
            ws = await ws_connect(
                uri,
                ssl=ssl,
                max_size=max_frame_size,
                compression=None,
                ping_interval=None,
                open_timeout=None,  # the caller bounds the whole connect
                local_addr=local_addr,
            )
        except (InvalidHandshake, InvalidURI) as exc:
            raise OSError(f"WebSocket handshake with {uri} failed: {exc}") from exc
        return WsTransport(ws, max_frame_size=max_frame_size)
    raise ValueError(f"unknown transport {kind!r}: use 'tcp' or 'ws'")
