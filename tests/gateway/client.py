"""A minimal test client for the gate, over TCP or WebSocket, built on `schemas.frame`.

Deliberately small and independent of the SDK: it sends exactly the bytes a test asks for
(split, coalesced, garbage) and exposes every frame the gate sends back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Literal

from google.protobuf.message import Message
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from schemas.codes import ClientType
from schemas.commands import Cmd
from schemas.frame import Frame, FrameDecoder, decode_frame, encode_frame
from schemas.pb.coffeechat import base_pb2, login_pb2

Kind = Literal["tcp", "ws"]
TIMEOUT = 5.0


class Closed(Exception):
    """The gate closed the connection while a frame was awaited."""


class Client:
    """One client connection; `recv` returns frames in order, `Closed` once the gate hangs up."""

    def __init__(
        self,
        kind: Kind,
        *,
        reader: asyncio.StreamReader | None = None,
        writer: asyncio.StreamWriter | None = None,
        ws: ClientConnection | None = None,
    ) -> None:
        self.kind = kind
        self._reader = reader
        self._writer = writer
        self._ws = ws
        self._decoder = FrameDecoder()
        self._pending: list[Frame] = []
        self._seq = 0
        self.close_code: int | None = None

    @classmethod
    async def connect(
        cls, kind: Kind, port: int, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ) -> Client:
        if kind == "tcp":
            reader, writer = await asyncio.open_connection(host, port, ssl=tls)
            return cls(kind, reader=reader, writer=writer)
        scheme = "wss" if tls else "ws"
        ws = await connect(f"{scheme}://{host}:{port}/", ssl=tls, compression=None, max_size=None)
        return cls(kind, ws=ws)

    def next_seq(self) -> int:
        self._seq = self._seq % 0xFFFF + 1
        return self._seq

    async def send_raw(self, data: bytes) -> None:
        """TCP: bytes on the stream; WebSocket: one binary message."""
        if self._writer is not None:
            self._writer.write(data)
            await self._writer.drain()
        else:
            assert self._ws is not None
            await self._ws.send(data)

    async def send_text(self, text: str) -> None:
        assert self._ws is not None
        await self._ws.send(text)

    async def send(
        self, cmd: int, message: Message | None = None, *, seq: int | None = None
    ) -> int:
        """Send one frame; returns its seq."""
        seq = self.next_seq() if seq is None else seq
        body = b"" if message is None else message.SerializeToString()
        await self.send_raw(encode_frame(cmd, seq, body))
        return seq

    async def recv(self, within: float = TIMEOUT) -> Frame:
        """The next frame from the gate; raises `Closed` if it hangs up first."""
        async with asyncio.timeout(within):
            while not self._pending:
                await self._read_more()
        return self._pending.pop(0)

    async def expect(self, cmd: int, within: float = TIMEOUT) -> Frame:
        """The next frame, which must be of command `cmd`."""
        frame = await self.recv(within)
        assert frame.command_id == cmd, f"expected 0x{cmd:04X}, got {frame}"
        return frame

    async def wait_closed(self, within: float = TIMEOUT) -> list[Frame]:
        """Read until the gate closes the connection; return the frames it sent first."""
        frames: list[Frame] = []
        async with asyncio.timeout(within):
            while True:
                try:
                    frames.append(await self.recv(within))
                except Closed:
                    return frames

    async def _read_more(self) -> None:
        if self._reader is not None:
            try:
                data = await self._reader.read(65536)
            except ConnectionError:
                data = b""
            if not data:
                raise Closed
            self._pending.extend(self._decoder.feed(data))
            return
        assert self._ws is not None
        try:
            message = await self._ws.recv()
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd is not None else None
            raise Closed from exc
        assert isinstance(message, bytes)
        self._pending.append(decode_frame(message))

    async def login(
        self, user_id: int, token: str, *, client_type: int = ClientType.ANDROID
    ) -> login_pb2.AuthTokenRsp:
        req = login_pb2.AuthTokenReq(
            user_id=user_id,
            user_token=token,
            client_type=base_pb2.ClientType.ValueType(client_type),
            client_version="test",
        )
        seq = await self.send(Cmd.AUTH_TOKEN_REQ, req)
        frame = await self.expect(Cmd.AUTH_TOKEN_RSP)
        assert frame.seq == seq
        return login_pb2.AuthTokenRsp.FromString(frame.body)

    def abort(self) -> None:
        """Drop the connection without a closing handshake."""
        if self._writer is not None:
            self._writer.transport.abort()
        elif self._ws is not None:
            self._ws.transport.abort()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await self._writer.wait_closed()
        elif self._ws is not None:
            await self._ws.close()
