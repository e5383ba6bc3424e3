"""A flood of wrong-password logins on one gate (issue 14, item 2): every attempt is answered
(a wrong-password answer, or RATE_LIMITED at once when the password pool is full), the pool
never holds more than its bound, a logged-in user's c2c messages and heartbeats keep flowing
on the same gate, and a legitimate password login gets through.

No timing is asserted here: how much the flood slows the logged-in users is a benchmark
figure (`make bench-login-flood`, docs/security.md "Logins"), measured with the flood and
the system in processes of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import pytest

from schemas.codes import ErrorCode, ExtResultCode
from schemas.commands import Cmd
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, login_pb2, message_pb2
from sdk.client import Client as SdkClient
from sdk.errors import ConnectionLostError, NotConnectedError, ServerError
from store.users import UserImport
from tests.consumers.conftest import System
from tests.gateway.client import Client as RawClient
from tests.gateway.client import Closed

FLOODERS = 60
FLOOD_S = 3.0
TEXTS = 20


@pytest.fixture
def system(embedded_system: System) -> System:
    return embedded_system


async def _flood(port: int, stop: asyncio.Event, answers: dict[str, int]) -> None:
    """One flooder: AuthReq with a wrong password for a new name each time, the next as soon
    as the previous is answered; when the gate closes the connection (its login deadline
    counts from connect, retries do not extend it), a new one."""
    while not stop.is_set():
        client = await RawClient.connect("tcp", port)
        try:
            while not stop.is_set():
                req = login_pb2.AuthReq(
                    user_name=f"guess-{secrets.token_hex(4)}",
                    user_pwd="wrong",
                    client_type=base_pb2.CLIENT_TYPE_WEB,
                )
                seq = await client.send(Cmd.AUTH_REQ, req)
                frame = await client.recv(within=30)  # answered, never left waiting
                assert frame.seq == seq
                if frame.command_id == Cmd.AUTH_RSP:
                    code = ErrorCode(login_pb2.AuthRsp.FromString(frame.body).result_code)
                    assert code is ErrorCode.LOGIN_INVALID_USER_OR_PWD
                    answers["wrong"] += 1
                else:
                    assert frame.command_id == Cmd.ERROR_RSP
                    refusal = ext_pb2.ErrorRsp.FromString(frame.body)
                    assert ExtResultCode(refusal.result_code) is ExtResultCode.RATE_LIMITED
                    answers["rate_limited"] += 1
        except Closed:
            answers["closed"] += 1
        finally:
            client.abort()


async def test_a_wrong_password_flood_is_bounded_and_others_keep_talking(system: System) -> None:
    await system.start_consumers(["msg", "fanout"])
    runtime = system.runtime
    pool = runtime.passwords
    assert pool is not None
    # loopback is exempt from the address back-off, and every guess names a new user: no
    # failed-login counter stops the flood, only the pool bounds it (the worst case)
    gate = await system.gate(rate_limit_per_s=1000, rate_limit_burst=2000)
    alice, bob = await system.user(), await system.user()
    a = await system.login(alice, gate)
    b = await system.login(bob, gate)
    victim = system.new_uid()
    await runtime.users.upsert(UserImport(user_id=victim, user_name=f"v{victim}", password="pw"))

    answers = {"wrong": 0, "rate_limited": 0, "closed": 0}
    stop = asyncio.Event()
    most_pending = 0

    async def watch_pool() -> None:
        nonlocal most_pending
        while not stop.is_set():
            most_pending = max(most_pending, pool.pending)
            await asyncio.sleep(0.001)

    async def legit_login() -> None:
        """Retried as an app would: after a RATE_LIMITED answer, and on a new connection if
        the gate closed this one (the login timeout)."""
        while True:
            client = SdkClient(heartbeat_interval=None, reconnect=False, request_timeout=30)
            try:
                await client.connect("127.0.0.1", gate.tcp_port)
                while True:
                    with contextlib.suppress(ServerError):  # RATE_LIMITED: busy
                        rsp = await client.login_password(f"v{victim}", "pw")
                        assert rsp.user_info.user_id == victim
                        return
                    await asyncio.sleep(0.1)  # the app's pause before it retries
            except (NotConnectedError, ConnectionLostError):
                # The gate's login deadline counts from connect: it closes the connection
                # between two attempts (NotConnectedError at the next) or during one.
                continue
            finally:
                await client.close()

    flood = [asyncio.create_task(_flood(gate.tcp_port, stop, answers)) for _ in range(FLOODERS)]
    watcher = asyncio.create_task(watch_pool())
    try:
        legit = asyncio.create_task(legit_login())
        for n in range(TEXTS):
            ack = await a.send_text(bob, f"text {n}")  # acked: stored, during the flood
            assert ack.server_msg_id > 0
            await b.heartbeat(timeout=30)
            await asyncio.sleep(FLOOD_S / TEXTS)  # Alice's pace
        await asyncio.wait_for(legit, 60)
    finally:
        stop.set()
        await asyncio.gather(*flood, watcher)

    # Bob got every text, in order, on the flooded gate.
    pushes = await system.wait_pushes(b, Cmd.MSG_DATA, count=TEXTS)
    texts = [p.msg_data for p in pushes if isinstance(p, message_pb2.MsgData)]
    assert texts == [f"text {n}".encode() for n in range(TEXTS)]
    # Every flood attempt was answered: checked, or refused at once — never queued past
    # the pool's bound.
    assert answers["wrong"] > 0
    assert answers["rate_limited"] > 0
    # Refused by the gate because the pool was full, the rest by the connection's core:
    # a login retried before the second it was told to wait reaches neither.
    assert 0 < gate.stats.logins_busy < answers["rate_limited"]
    assert gate.stats.logins_failed >= answers["wrong"]  # (some answered as a flooder left)
    assert most_pending <= pool.workers + pool.queue
