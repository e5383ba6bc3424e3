"""A raw-frame test peer: an in-process TCP server the test script drives frame by frame.

It is not a fake gate — it has no logic of its own. Each test says what the server sends
and checks what the client sent, which is how the SDK's protocol behaviour (split frames,
drops, timeouts, reconnects) is pinned down. The real gate is exercised by
test_against_gate.py.
"""

from __future__ import annotations

import asyncio
import contextlib

from google.protobuf.message import Message

from schemas.codes import ErrorCode
from schemas.commands import Cmd, build_frame
from schemas.frame import Frame, FrameDecoder
from schemas.pb.coffeechat import base_pb2, login_pb2

TIMEOUT = 5.0
"""Longest a test waits for something the client should do."""


class PeerConnection:
    """The server end of one client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._decoder = FrameDecoder()
        self._frames: list[Frame] = []

    async def recv(self) -> Frame:
        """The next frame the client sent (fails the test after `TIMEOUT`)."""
        async with asyncio.timeout(TIMEOUT):
            while not self._frames:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("the client closed the connection")
                self._frames.extend(self._decoder.feed(data))
        return self._frames.pop(0)

    async def recv_cmd(self, cmd: Cmd) -> Frame:
        """The next frame of command `cmd`, skipping heartbeats."""
        while True:
            frame = await self.recv()
            if frame.command_id == cmd:
                return frame
            assert frame.command_id == Cmd.HEARTBEAT, f"unexpected 0x{frame.command_id:04X}"

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, cmd: Cmd, seq: int, message: Message) -> None:
        await self.send_raw(build_frame(cmd, seq, message))

    async def accept_login(self, user_id: int, code: ErrorCode = ErrorCode.SUCCESS) -> Frame:
        """Answer the client's AuthTokenReq; return it."""
        req = await self.recv_cmd(Cmd.AUTH_TOKEN_REQ)
        rsp = login_pb2.AuthTokenRsp(
            server_time=1,
            result_code=code,  # type: ignore[arg-type]
            result_string=code.name.lower(),
            user_info=base_pb2.UserInfo(user_id=user_id, nick_name=f"user{user_id}"),
        )
        await self.send(Cmd.AUTH_TOKEN_RSP, req.seq, rsp)
        return req

    async def drop(self) -> None:
        """Close the connection from the server side."""
        self.writer.close()
        await self.writer.wait_closed()


class Peer:
    """The listening side; `accept()` hands over each new client connection."""

    def __init__(self) -> None:
        self._accepted: asyncio.Queue[PeerConnection] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self._connections: list[PeerConnection] = []
        self.port = 0

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = PeerConnection(reader, writer)
        self._connections.append(conn)
        await self._accepted.put(conn)

    async def accept(self) -> PeerConnection:
        async with asyncio.timeout(TIMEOUT):
            return await self._accepted.get()

    async def stop_listening(self) -> None:
        """Refuse new connections from now on (a gate that died), keeping the port taken."""
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def __aenter__(self) -> Peer:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self._connections:
            conn.writer.close()
        for conn in self._connections:
            with contextlib.suppress(ConnectionError, OSError):
                await conn.writer.wait_closed()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
