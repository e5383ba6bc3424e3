"""A bare CoffeeChat connection for the message scenarios' load: send, receive, ack.

The c2c and group scenarios measure the server, but their load shares its two cores: CPU
the load generator burns is CPU the server waits for. An SDK client costs a task, a future,
a timeout and a protobuf object per request, which at 4,000 messages/s took twice the
server's CPU. A `LeanClient` is what a client must be and no more:

- it logs in (AuthTokenReq) and sends MsgData frames with a seq of its own, and matches the
  server's MsgDataAck (or ErrorRsp) by that seq — a dict entry per message in flight;
- it acks every pushed MsgData exactly as the SDK does (`sdk.protocol.msg_data_ack_for`,
  with the push's seq), so the server does all the work of a real receiver;
- it reads frames by their length field and decodes only the MsgData pushes and the
  responses it waits for; the acks one read produces go out in one write.

What it measures goes to a `Sink` the worker owns: send→ack latencies, failures, and each
pushed message (decoded) with its arrival time.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable

from schemas.codes import ErrorCode
from schemas.commands import Cmd, build_frame
from schemas.frame import HEADER_SIZE, MAX_SEQ
from schemas.pb.coffeechat import login_pb2, message_pb2
from sdk.protocol import msg_data_ack_for

__all__ = ["LeanClient", "Sink"]

#: length (u32), command id (u16, at byte 10) and seq (u16, at byte 12) of a frame header.
_HEADER = struct.Struct(">I6xHH")


class Sink:
    """What the lean clients of one worker measured (the worker reads and resets it)."""

    __slots__ = ("ack_latencies", "failed", "on_push", "outstanding", "settled")

    def __init__(self, on_push: Callable[[int, message_pb2.MsgData, float], None]) -> None:
        #: send→ack latencies (seconds from each message's due time).
        self.ack_latencies: list[float] = []
        #: sends answered by an error, or lost with their connection.
        self.failed = 0
        #: sends not yet answered.
        self.outstanding = 0
        #: set whenever nothing is outstanding.
        self.settled = asyncio.Event()
        self.settled.set()
        #: called with (receiver's user id, message, arrival time) for every pushed MsgData.
        self.on_push = on_push

    def sent(self) -> None:
        self.outstanding += 1
        self.settled.clear()

    def answered(self, latency: float | None) -> None:
        if latency is None:
            self.failed += 1
        else:
            self.ack_latencies.append(latency)
        self.outstanding -= 1
        if self.outstanding == 0:
            self.settled.set()


class LeanClient(asyncio.Protocol):
    """One logged-in connection (module docstring)."""

    def __init__(self, user_id: int, sink: Sink) -> None:
        self.user_id = user_id
        self._sink = sink
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._seq = 1  # 1 is the login's
        #: seq -> due time of each MsgData in flight.
        self._pending: dict[int, float] = {}
        self._login: asyncio.Future[bytes] | None = None

    async def connect(
        self, host: str, port: int, token: str, *, source: str, timeout_s: float = 60.0
    ) -> None:
        """Connect from `source` and log in with `token`."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            await loop.create_connection(lambda: self, host, port, local_addr=(source, 0))
            self._login = loop.create_future()
            assert self._transport is not None
            login = login_pb2.AuthTokenReq(user_id=self.user_id, user_token=token)
            self._transport.write(build_frame(Cmd.AUTH_TOKEN_REQ, 1, login))
            rsp = login_pb2.AuthTokenRsp.FromString(await self._login)
        if rsp.result_code != ErrorCode.SUCCESS:
            self.close()
            raise RuntimeError(f"user {self.user_id}: login refused: {rsp.result_string}")

    def send(self, message: message_pb2.MsgData, due: float) -> None:
        """Send `message` (0x0301); its ack's latency is counted from `due`."""
        if self._transport is None or self._transport.is_closing():
            self._sink.sent()
            self._sink.answered(None)
            return
        seq = self._seq
        while True:
            seq = 1 if seq >= MAX_SEQ else seq + 1
            if seq not in self._pending:
                break
        self._seq = seq
        self._pending[seq] = due
        self._sink.sent()
        self._transport.write(build_frame(Cmd.MSG_DATA, seq, message))

    def forget(self) -> None:
        """Stop waiting for the acks still in flight (a late one is then ignored)."""
        self._pending.clear()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
        end = len(data)
        pos = 0
        replies: list[bytes] = []
        unpack = _HEADER.unpack_from
        while end - pos >= HEADER_SIZE:
            length, command, seq = unpack(data, pos)
            if length < HEADER_SIZE:
                raise RuntimeError(f"frame length {length} from the gate: the stream is broken")
            if end - pos < length:
                break
            if command == Cmd.MSG_DATA:
                now = time.perf_counter()
                message = message_pb2.MsgData.FromString(data[pos + HEADER_SIZE : pos + length])
                ack = msg_data_ack_for(message, self.user_id)
                replies.append(build_frame(Cmd.MSG_DATA_ACK, seq, ack))
                self._sink.on_push(self.user_id, message, now)
            elif command in (Cmd.MSG_DATA_ACK, Cmd.ERROR_RSP):
                due = self._pending.pop(seq, None)
                if due is not None:
                    ok = command == Cmd.MSG_DATA_ACK
                    self._sink.answered(time.perf_counter() - due if ok else None)
            elif (
                command == Cmd.AUTH_TOKEN_RSP and self._login is not None and not self._login.done()
            ):
                self._login.set_result(data[pos + HEADER_SIZE : pos + length])
            pos += length
        self._buffer = data[pos:]
        if replies and self._transport is not None:
            self._transport.write(b"".join(replies))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._login is not None and not self._login.done():
            self._login.set_exception(ConnectionError(f"user {self.user_id}: closed by the gate"))
        pending, self._pending = self._pending, {}
        for _ in pending:
            self._sink.answered(None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
