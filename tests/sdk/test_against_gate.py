"""The SDK against the real `gateway.server.Gate` (memory bus and stores), TCP and WebSocket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from bus.memory import MemoryBus
from bus.topology import load_topology
from coffeebus.settings import GatewaySettings
from gateway.server import Gate
from schemas.codes import ClientType, ErrorCode, ExtResultCode, KickReason
from sdk import Client, Disconnected, Kicked, LoginError, ServerError
from sdk.transport import TransportKind
from store.ids import UserId
from store.memory.routes import MemoryRouteStore
from store.memory.users import MemoryUserStore
from store.passwords import ScryptParams
from store.users import UserImport

KINDS: list[TransportKind] = ["tcp", "ws"]
TIMEOUT = 5.0


class Setup(msgspec.Struct):
    gate: Gate
    users: MemoryUserStore
    routes: MemoryRouteStore


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    topology = load_topology()
    bus = MemoryBus()
    for spec in topology.topics.values():
        bus.create_topic(spec.name, spec.partitions)
    await bus.start()
    users = MemoryUserStore(password_params=ScryptParams(n=16, r=1, p=1))
    routes = MemoryRouteStore()
    settings = msgspec.convert(
        {"gate_id": "sdk-test-gate", "host": "127.0.0.1", "tcp_port": 0, "ws_port": 0},
        GatewaySettings,
    )
    gate = Gate(settings, bus=bus, user_store=users, route_store=routes, topology=topology)
    await gate.start()
    for uid in (1001, 1002):
        await users.upsert(
            UserImport(
                user_id=UserId(uid), nick_name=f"u{uid}", token=f"tok-{uid}", user_name=f"name{uid}"
            )
        )
    try:
        yield Setup(gate, users, routes)
    finally:
        await gate.stop()
        await bus.stop()


def port(setup: Setup, kind: TransportKind) -> int:
    return setup.gate.tcp_port if kind == "tcp" else setup.gate.ws_port


def client() -> Client:
    return Client(heartbeat_interval=None, reconnect=False, request_timeout=TIMEOUT)


@pytest.mark.parametrize("kind", KINDS)
async def test_login_heartbeat_and_logout(setup: Setup, kind: TransportKind) -> None:
    async with client() as sdk:
        await sdk.connect("127.0.0.1", port(setup, kind), transport=kind)
        rsp = await sdk.login(1001, "tok-1001", client_type=ClientType.WEB)
        assert ErrorCode(rsp.result_code) is ErrorCode.SUCCESS
        assert rsp.user_info.nick_name == "u1001"
        assert [r.client_type for r in await setup.routes.get(UserId(1001))] == [ClientType.WEB]
        assert await sdk.heartbeat() >= 0
        await sdk.logout()
        assert await setup.routes.get(UserId(1001)) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_bad_token_then_request_before_login(setup: Setup, kind: TransportKind) -> None:
    async with client() as sdk:
        await sdk.connect("127.0.0.1", port(setup, kind), transport=kind)
        with pytest.raises(LoginError) as caught:
            await sdk.login(1001, "wrong")
        assert caught.value.code is ErrorCode.LOGIN_INVALID_USER_TOKEN
        with pytest.raises(ServerError) as refused:
            await sdk.recent_sessions()
        assert refused.value.code is ExtResultCode.NOT_AUTHENTICATED
        # The same connection logs in with the right token.
        rsp = await sdk.login(1001, "tok-1001")
        assert ErrorCode(rsp.result_code) is ErrorCode.SUCCESS


async def test_password_login(setup: Setup) -> None:
    await setup.users.upsert(UserImport(user_id=UserId(1002), password="pw"))
    async with client() as sdk:
        await sdk.connect("127.0.0.1", setup.gate.tcp_port)
        rsp = await sdk.login_password("name1002", "pw")
        assert rsp.user_info.user_id == 1002
        assert sdk.user_id == 1002


async def test_second_login_kicks_the_first_across_transports(setup: Setup) -> None:
    first = Client(heartbeat_interval=None, reconnect=True, request_timeout=TIMEOUT)
    async with first, client() as second:
        await first.connect("127.0.0.1", setup.gate.tcp_port)
        await first.login(1001, "tok-1001", client_type=ClientType.ANDROID)
        await second.connect("127.0.0.1", setup.gate.ws_port, transport="ws")
        await second.login(1001, "tok-1001", client_type=ClientType.ANDROID)
        async with asyncio.timeout(TIMEOUT):
            kicked = await first.next_event()
            gone = await first.next_event()
        assert isinstance(kicked, Kicked)
        assert KickReason(kicked.notify.reason) is KickReason.DUPLICATE_LOGIN
        assert isinstance(gone, Disconnected)
        assert gone.reconnecting is False  # a kicked client must not fight back
        assert await second.heartbeat() >= 0
