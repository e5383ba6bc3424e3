"""`coffeebus run`: the all-in-one embedded process, as a person starts it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from sdk.client import Client
from sdk.errors import LoginError


async def _free_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port


@pytest.fixture
async def embedded() -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, int]]]:
    ports = {"tcp": await _free_port(), "ws": await _free_port(), "api": await _free_port()}
    env = dict(
        os.environ,
        COFFEEBUS_GATEWAY__HOST="127.0.0.1",
        COFFEEBUS_GATEWAY__TCP_PORT=str(ports["tcp"]),
        COFFEEBUS_GATEWAY__WS_PORT=str(ports["ws"]),
        COFFEEBUS_API__PORT=str(ports["api"]),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coffeebus",
        "run",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while b"Press Ctrl-C to stop." not in (line := await proc.stdout.readline()):
                assert line, "coffeebus run exited before it was ready"
        yield proc, ports
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_serves_demo_users_and_stops_on_ctrl_c(
    embedded: tuple[asyncio.subprocess.Process, dict[str, int]],
) -> None:
    proc, ports = embedded
    client = Client()
    await client.connect("127.0.0.1", ports["tcp"])
    rsp = await client.login(1001, "alice-demo-token")
    assert rsp.user_info.nick_name == "alice"
    other = Client()
    await other.connect("127.0.0.1", ports["ws"], transport="ws")
    with pytest.raises(LoginError):
        await other.login(1002, "not-bobs-token")
    await other.close()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['api']}") as http:
        devices = (await http.get("/v1/users/1001/devices")).json()
    assert [d["client_type"] for d in devices["devices"]] == [int(client.client_type)]
    proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(20):
        assert await proc.wait() == 0
    await client.close()
