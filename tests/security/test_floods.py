"""Floods against a real gate on loopback sockets: each is contained, and a well-behaved SDK
client on the same gate keeps its heartbeat round trip under `RTT_BOUND` while it runs.

The gate is the embedded system's (MemoryBus and memory stores): what is flooded here is the
gate's socket handling, which does not depend on the bus. Each flood runs concurrently with
a probe that sends a heartbeat every `PROBE_INTERVAL` from the well-behaved client; the flood's own
outcome (refused, closed, rate limited) is asserted from the gate's side and the attacker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.server import Gate
from schemas.codes import ExtResultCode
from schemas.commands import Cmd
from schemas.envelope import Deliver, Target, encode_gate_record, now_ms
from schemas.frame import HEADER_SIZE, encode_frame
from schemas.ids import ConnId, UserId, new_trace_id
from schemas.pb.coffeebus import ext_pb2
from sdk.client import Client as SdkClient
from tests.consumers.conftest import System
from tests.gateway.client import Client as RawClient
from tests.gateway.client import Closed
from tests.waiting import wait_for

#: The worst heartbeat round trip the well-behaved client may see during a flood. Loopback
#: answers in well under a millisecond; the bound leaves room for a busy 2-core machine.
RTT_BOUND = 1.0
#: 20 heartbeats a second: well under the per-connection rate limit (50/s by default).
PROBE_INTERVAL = 0.05
_HEADER = struct.Struct(">IHHHHHH")


@pytest.fixture
def system(embedded_system: System) -> System:
    return embedded_system


async def _probe(client: SdkClient, stop: asyncio.Event) -> list[float]:
    rtts: list[float] = []
    while not stop.is_set() or len(rtts) < 3:  # at least a few, however short the flood
        rtts.append(await client.heartbeat(timeout=5.0))
        await asyncio.sleep(PROBE_INTERVAL)  # a well-behaved client's pace, under its rate limit
    return rtts


async def under_flood(
    system: System, gate: Gate, flood: Callable[[], Awaitable[None]]
) -> list[float]:
    """Run `flood` while a logged-in SDK client probes; its heartbeat round trips."""
    user = await system.user()
    good = await system.login(user, gate)
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(good, stop))
    try:
        await flood()
    finally:
        stop.set()
        rtts = await probe
    assert max(rtts) < RTT_BOUND, f"worst round trip {max(rtts):.3f} s over {len(rtts)}"
    assert await good.heartbeat() < RTT_BOUND  # and is still connected
    return rtts


@contextlib.asynccontextmanager
async def raw_clients(port: int, count: int) -> AsyncIterator[list[RawClient]]:
    clients: list[RawClient] = []
    try:
        for _ in range(count):
            clients.append(await RawClient.connect("tcp", port))
        yield clients
    finally:
        for client in clients:
            client.abort()


async def test_message_rate_flood_is_limited_then_closed(system: System) -> None:
    gate = await system.gate(rate_limit_per_s=50, rate_limit_burst=100)
    attacker = await system.user()
    answers: list[ExtResultCode] = []

    async def flood() -> None:
        async with raw_clients(gate.tcp_port, 1) as [raw]:
            await raw.login(attacker, system.tokens[attacker])
            burst = b"".join(encode_frame(Cmd.HEARTBEAT, s % 0xFFFF + 1) for s in range(5000))
            with contextlib.suppress(ConnectionError):
                await raw.send_raw(burst)
            for frame in await raw.wait_closed(within=10):
                if frame.command_id == Cmd.ERROR_RSP:
                    code = ext_pb2.ErrorRsp.FromString(frame.body).result_code
                    answers.append(ExtResultCode(code))

    await under_flood(system, gate, flood)
    # The burst's worth answered, then at most a burst of refusals before the close.
    assert answers
    assert set(answers) == {ExtResultCode.RATE_LIMITED}
    assert len(answers) <= 101


async def test_connection_rate_flood_from_one_address_is_refused(system: System) -> None:
    gate = await system.gate(conn_rate_per_ip=20, conn_burst_per_ip=50, conn_rate_exempt=[])
    opened = 300

    async def flood() -> None:
        start = time.monotonic()
        async with raw_clients(gate.tcp_port, opened):
            await wait_for(lambda: gate.stats.accepted + gate.stats.refused >= opened + 1)
            allowed = 50 + 20 * (time.monotonic() - start) + 2  # burst + rate (+ the probe)
            assert gate.stats.accepted <= allowed

    # The well-behaved client connects first (same address): it takes one token.
    await under_flood(system, gate, flood)
    assert gate.stats.refused_rate >= opened - 50 - 20 * 15
    assert gate.stats.refused_rate == gate.stats.refused


async def test_oversize_frames_close_their_connections(system: System) -> None:
    gate = await system.gate(max_frame_size=64 * 1024)
    huge = _HEADER.pack(0xFFFF_FFFF, 1, 0, 0, Cmd.MSG_DATA, 1, 0)
    just_over = encode_frame(Cmd.MSG_DATA, 1, b"\x00" * (64 * 1024 - HEADER_SIZE + 1))

    async def flood() -> None:
        async with raw_clients(gate.tcp_port, 60) as clients:
            for i, client in enumerate(clients):
                with contextlib.suppress(ConnectionError):
                    await client.send_raw(huge if i % 2 else just_over)
            for client in clients:
                assert await client.wait_closed(within=10) == []  # closed, nothing answered

    await under_flood(system, gate, flood)
    await wait_for(lambda: gate.connections == 1)  # the probe's


async def test_slow_loris_connections_are_closed_by_the_frame_timeout(system: System) -> None:
    gate = await system.gate(frame_timeout_s=0.5, login_timeout_s=60)
    frame = encode_frame(Cmd.HEARTBEAT, 1)

    async def flood() -> None:
        async with raw_clients(gate.tcp_port, 100) as clients:
            start = time.monotonic()
            # A byte per client every 0.1 s: never a whole frame before the timeout.
            for i in range(HEADER_SIZE - 1):
                for client in clients:
                    with contextlib.suppress(ConnectionError):
                        await client.send_raw(frame[i : i + 1])
                if gate.connections <= 1:
                    break
                await asyncio.sleep(0.1)  # the attacker's pace, not a wait for the gate
            for client in clients:
                with pytest.raises(Closed):
                    await client.recv(within=5)
            assert time.monotonic() - start < 5

    await under_flood(system, gate, flood)


async def test_clients_that_never_read_are_disconnected(system: System) -> None:
    gate = await system.gate(send_queue_frames=8)
    readers = [await system.user() for _ in range(5)]

    async def flood() -> None:
        async with raw_clients(gate.tcp_port, len(readers)) as clients:
            for client, user in zip(clients, readers, strict=True):
                await client.login(user, system.tokens[user])
            targets = []
            for user in readers:
                [route] = await system.runtime.routes.get(user)
                targets.append(Target(conn_id=ConnId(route.conn_id), user_id=UserId(user)))
            record = Deliver(
                cmd=Cmd.MSG_DATA,
                body=b"\x00" * 200_000,
                targets=tuple(targets),
                trace_id=new_trace_id(),
                ts_ms=now_ms(),
            )
            # Nobody reads: kernel buffers take a few MB each, then the send queues fill.
            for _ in range(400):
                if gate.connections <= 1:
                    break
                await system.runtime.bus.publish(gate.topic, encode_gate_record(record), key=b"0")
                await asyncio.sleep(0)  # let the gate consume
            await wait_for(lambda: gate.connections == 1)

    await under_flood(system, gate, flood)


async def test_idle_unauthenticated_connections_hit_the_login_timeout(system: System) -> None:
    gate = await system.gate(login_timeout_s=1.0)
    count = 500

    async def flood() -> None:
        async with raw_clients(gate.tcp_port, count) as clients:
            await wait_for(lambda: gate.stats.accepted >= count)
            start = time.monotonic()
            for client in clients:
                with pytest.raises(Closed):
                    await client.recv(within=5)
            assert time.monotonic() - start < 5

    await under_flood(system, gate, flood)
    assert gate.connections == 1
