"""The load side of `bench.room_bench`: one process holding many room members.

A member is a bare TCP connection, not an SDK client: the benchmark measures how many room
messages a gate writes, so a member costs the load side as little as it can — the load
shares the gate's two cores, and CPU it burns is CPU the gate waits for. A member logs in
(AuthTokenReq) and joins the room (RoomJoinReq) through the full `FrameDecoder`; from then
on it only walks the frames' length fields and counts the RoomMsg (0x0818) ones, without
building a frame object per message. Every `RoomJob.sample_every`-th member keeps decoding
them and keeps the latency: now minus the send time the sender wrote into ``msg_data``
(``"<unix seconds> ..."``, the same clock on one machine).

The orchestrator reads the shared counters (joined, failed, delivered, dropped from the
room) and asks on the pipe:

- ``("samples",)``: the latencies seen since the last ask (and forgets them);
- ``("close",)``: close every connection and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from bench._conn_load import run_load, token_for
from schemas.codes import ErrorCode
from schemas.commands import Cmd, build_frame
from schemas.frame import HEADER_SIZE, FrameDecoder
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import login_pb2

__all__ = ["DELIVERED", "DROPPED", "FAILED", "JOINED", "RoomJob", "run_worker"]

#: Indexes of the worker's shared counters.
JOINED = 0
FAILED = 1
DELIVERED = 2
DROPPED = 3

#: Latencies a worker keeps between two asks.
SAMPLE_CAP = 200_000
COUNTER_PERIOD_S = 0.1
CONNECT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RoomJob:
    """What one worker connects: for each (gate port, first user, count), those users."""

    index: int
    targets: tuple[tuple[int, int, int], ...]
    room_id: int
    sample_every: int
    in_flight: int
    #: Source addresses, used round robin (one address has ~28k ephemeral ports).
    sources: tuple[str, ...]


#: A frame's length (its first field) and command id (the fifth, at byte 10): all a counting
#: member reads of a frame (`schemas.frame`'s header layout).
_LENGTH_AND_COMMAND = struct.Struct(">I6xH")


class _Member(asyncio.Protocol):
    __slots__ = (
        "_counting",
        "_decoder",
        "_sample",
        "_stats",
        "_switch",
        "_tail",
        "_transport",
        "_waiter",
    )

    def __init__(self, stats: _Stats, sample: bool) -> None:
        self._stats = stats
        self._sample = sample
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        # Counting only (`count_only`): asked for, and started once the decoder holds no
        # partial frame; `_tail` is the partial frame a read left since.
        self._switch = False
        self._counting = False
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def count_only(self) -> None:
        """From now on only count what arrives (module docstring); a sampling member keeps
        decoding."""
        self._switch = not self._sample

    def data_received(self, data: bytes) -> None:
        if self._counting:
            self._count(data)
            return
        self._decode(data)
        if self._switch and not self._decoder.buffered:
            self._counting = True

    def _count(self, data: bytes) -> None:
        if self._tail:
            data = self._tail + data
        end = len(data)
        pos = delivered = dropped = 0
        unpack = _LENGTH_AND_COMMAND.unpack_from
        while end - pos >= HEADER_SIZE:
            length, command = unpack(data, pos)
            if length < HEADER_SIZE:
                raise RuntimeError(f"frame length {length} from the gate: the stream is broken")
            if end - pos < length:
                break
            if command == Cmd.ROOM_MSG:
                delivered += 1
            elif command == Cmd.ROOM_EXIT_NOTIFY:
                dropped += 1
            pos += length
        self._tail = data[pos:]
        stats = self._stats
        stats.delivered += delivered
        stats.dropped += dropped

    def _decode(self, data: bytes) -> None:
        stats = self._stats
        for frame in self._decoder.feed(data):
            command = frame.command_id
            if command == Cmd.ROOM_MSG:
                stats.delivered += 1
                if self._sample and len(stats.samples) < SAMPLE_CAP:
                    sent = ext_pb2.RoomMsg.FromString(frame.body).msg_data.split(b" ", 1)[0]
                    with contextlib.suppress(ValueError):
                        stats.samples.append(time.time() - float(sent))
            elif command == Cmd.ROOM_EXIT_NOTIFY:
                stats.dropped += 1
            elif command == Cmd.HEARTBEAT:
                continue
            elif self._waiter is not None and not self._waiter.done():
                self._waiter.set_result((command, bytes(frame.body)))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("closed by the gate"))

    async def ask(self, frame: bytes, expect: int) -> bytes:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(frame)
        command, body = await self._waiter
        if command != expect:
            raise RuntimeError(f"expected 0x{expect:04X}, got 0x{command:04X}: {body!r}")
        return body

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class _Stats:
    def __init__(self) -> None:
        self.delivered = 0
        self.dropped = 0
        self.samples: list[float] = []


def run_worker(job: RoomJob, pipe: Connection, counters: SynchronizedArray[Any]) -> None:
    """Process entry point (multiprocessing target)."""
    run_load(_main(job, pipe, counters))


async def _main(job: RoomJob, pipe: Connection, counters: SynchronizedArray[Any]) -> None:
    loop = asyncio.get_running_loop()
    stats = _Stats()
    members: list[_Member] = []
    errors: dict[str, int] = {}
    limit = asyncio.Semaphore(job.in_flight)
    n = 0

    async def join(port: int, user_id: int, index: int) -> None:
        member = _Member(stats, index % job.sample_every == 0)
        async with limit:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await loop.create_connection(
                        lambda: member,
                        "127.0.0.1",
                        port,
                        local_addr=(job.sources[index % len(job.sources)], 0),
                    )
                    login = login_pb2.AuthTokenReq(user_id=user_id, user_token=token_for(user_id))
                    rsp = login_pb2.AuthTokenRsp.FromString(
                        await member.ask(
                            build_frame(Cmd.AUTH_TOKEN_REQ, 1, login), Cmd.AUTH_TOKEN_RSP
                        )
                    )
                    if rsp.result_code != ErrorCode.SUCCESS:
                        raise RuntimeError(f"login refused: {rsp.result_string}")
                    req = ext_pb2.RoomJoinReq(room_id=job.room_id)
                    await member.ask(build_frame(Cmd.ROOM_JOIN_REQ, 2, req), Cmd.ROOM_JOIN_RSP)
                    member.count_only()
            except Exception as exc:  # counted and named; none stops the run
                key = f"{type(exc).__name__}: {exc}"[:200]
                errors[key] = errors.get(key, 0) + 1
                counters[FAILED] += 1
                member.close()
                return
        members.append(member)
        counters[JOINED] += 1

    tasks = []
    for port, first, count in job.targets:
        for user_id in range(first, first + count):
            tasks.append(join(port, user_id, n))
            n += 1
    await asyncio.gather(*tasks)
    pipe.send(("joined", len(members), errors))

    async def publish_counters() -> None:
        while True:
            counters[DELIVERED] = stats.delivered
            counters[DROPPED] = stats.dropped
            await asyncio.sleep(COUNTER_PERIOD_S)

    ticker = asyncio.create_task(publish_counters())
    try:
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command[0] == "samples":
                samples, stats.samples = stats.samples, []
                pipe.send(("samples", samples))
            elif command[0] == "close":
                for member in members:
                    member.close()
                pipe.send(("closed",))
                return
    finally:
        ticker.cancel()
