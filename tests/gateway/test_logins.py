"""Logins under attack (issue 14): one answer for "who are you", the failed-login back-off
per account and per address, the bounded password pool, banned users — over real sockets,
on the in-memory wiring (the Redis throttle has its own contract test, and the flood across
processes runs in tests/security/test_login_flood.py)."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from coffeebus.settings import LoginSettings
from gateway.server import Gate
from schemas.codes import ClientType, ErrorCode, ExtResultCode, KickReason
from schemas.commands import Cmd
from schemas.envelope import KickUser, encode_gate_record, now_ms, token_digest
from schemas.ids import new_trace_id
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, login_pb2
from store.clock import ManualClock
from store.ids import UserId
from store.login_throttle import ThrottlePolicy
from store.memory.login_throttle import MemoryLoginThrottle
from store.memory.users import MemoryUserStore
from store.passwords import PasswordPool, ScryptParams
from store.users import TokenCheck, UserImport
from tests.gateway.client import Client
from tests.gateway.conftest import Env
from tests.waiting import wait_for

CHEAP = ScryptParams(n=16, r=1, p=1)
NO_EXEMPT = LoginSettings(address_exempt=())


class CountingPool(PasswordPool):
    """A pool that records each verification: whether a stored hash was given, and the
    cost of the dummy it would hash without one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verified: list[tuple[bool, ScryptParams]] = []

    async def verify(
        self, password: str, encoded: str | None, *, dummy_params: ScryptParams = CHEAP
    ) -> bool:
        self.verified.append((encoded is not None, dummy_params))
        return await super().verify(password, encoded, dummy_params=dummy_params)


@pytest.fixture
async def pool() -> AsyncIterator[CountingPool]:
    pool = CountingPool(workers=1, queue=0)
    yield pool
    pool.close()


@pytest.fixture
def users(pool: CountingPool) -> MemoryUserStore:
    return MemoryUserStore(password_params=CHEAP, passwords=pool)


async def _gate(
    env: Env,
    users: MemoryUserStore,
    *,
    login: LoginSettings = NO_EXEMPT,
    throttle: MemoryLoginThrottle | None = None,
    pool: PasswordPool | None = None,
    **overrides: Any,
) -> Gate:
    gate = Gate(
        env.settings(**overrides),
        bus=env.bus,
        user_store=users,
        route_store=env.routes,
        topology=env.topology,
        login_settings=login,
        login_throttle=throttle or MemoryLoginThrottle(),
        password_pool=pool,
    )
    env.gates.append(gate)
    await gate.start()
    return gate


async def _password_login(
    client: Client, name: str, password: str
) -> login_pb2.AuthRsp | ext_pb2.ErrorRsp:
    req = login_pb2.AuthReq(user_name=name, user_pwd=password, client_type=base_pb2.CLIENT_TYPE_WEB)
    seq = await client.send(Cmd.AUTH_REQ, req)
    frame = await client.recv()
    assert frame.seq == seq
    if frame.command_id == Cmd.ERROR_RSP:
        return ext_pb2.ErrorRsp.FromString(frame.body)
    assert frame.command_id == Cmd.AUTH_RSP
    return login_pb2.AuthRsp.FromString(frame.body)


async def _token_login(
    client: Client, user_id: int, token: str, client_type: int = ClientType.ANDROID
) -> login_pb2.AuthTokenRsp | ext_pb2.ErrorRsp:
    req = login_pb2.AuthTokenReq(
        user_id=user_id,
        user_token=token,
        client_type=base_pb2.ClientType.ValueType(client_type),
        client_version="test",
    )
    seq = await client.send(Cmd.AUTH_TOKEN_REQ, req)
    frame = await client.recv()
    assert frame.seq == seq
    if frame.command_id == Cmd.ERROR_RSP:
        return ext_pb2.ErrorRsp.FromString(frame.body)
    assert frame.command_id == Cmd.AUTH_TOKEN_RSP
    return login_pb2.AuthTokenRsp.FromString(frame.body)


def _refused(answer: object, code: ExtResultCode) -> ext_pb2.ErrorRsp:
    assert isinstance(answer, ext_pb2.ErrorRsp), answer
    assert ExtResultCode(answer.result_code) is code, answer
    return answer


async def test_unknown_name_and_wrong_password_look_alike(
    memory_env: Env, users: MemoryUserStore, pool: CountingPool
) -> None:
    await users.upsert(UserImport(user_id=UserId(7), user_name="ann", password="right"))
    gate = await _gate(memory_env, users)
    client = await memory_env.connect(gate, "tcp")
    answers = [
        await _password_login(client, "ann", "wrong"),
        await _password_login(client, "nobody", "wrong"),
    ]
    for answer in answers:
        assert isinstance(answer, login_pb2.AuthRsp)
        assert ErrorCode(answer.result_code) is ErrorCode.LOGIN_INVALID_USER_OR_PWD
        assert answer.result_string == "login_invalid_user_or_pwd"
    # The same timing class: each cost one verification at the store's own cost — the
    # unknown name against a dummy hash of the same parameters as Ann's real one.
    assert pool.verified == [(True, CHEAP), (False, CHEAP)]
    ok = await _password_login(client, "ann", "right")
    assert isinstance(ok, login_pb2.AuthRsp)
    assert ErrorCode(ok.result_code) is ErrorCode.SUCCESS


async def test_an_account_backs_off_after_its_free_failures(
    memory_env: Env, users: MemoryUserStore, pool: CountingPool
) -> None:
    await users.upsert(UserImport(user_id=UserId(8), user_name="bo", password="right"))
    clock = ManualClock()
    policy = ThrottlePolicy(account_free_failures=2, initial_s=4.0, max_s=60.0)
    login = LoginSettings()  # loopback exempt: only the account counts
    gate = await _gate(
        memory_env, users, login=login, throttle=MemoryLoginThrottle(policy, clock=clock)
    )
    client = await memory_env.connect(gate, "tcp")
    for _ in range(3):  # two free, the third arms 4 s
        answer = await _password_login(client, "bo", "guess")
        assert isinstance(answer, login_pb2.AuthRsp)
    verified = len(pool.verified)
    # Backing off: refused at once, even with the right password, without a hash.
    refusal = _refused(await _password_login(client, "bo", "right"), ExtResultCode.RATE_LIMITED)
    assert "retry in 4 s" in refusal.text
    assert len(pool.verified) == verified
    assert gate.stats.logins_throttled == 1
    # Another account from the same place is not affected.
    other = await _password_login(await memory_env.connect(gate, "tcp"), "someone", "x")
    assert isinstance(other, login_pb2.AuthRsp)
    # The connection itself was told to wait 4 s: it is refused before the gate is asked.
    early = _refused(await _password_login(client, "bo", "right"), ExtResultCode.RATE_LIMITED)
    assert "retried early" in early.text
    assert gate.stats.logins_throttled == 1
    clock.advance(4)
    client = await memory_env.connect(gate, "tcp")  # a new one: the account's wait is over
    ok = await _password_login(client, "bo", "right")
    assert isinstance(ok, login_pb2.AuthRsp)
    assert ErrorCode(ok.result_code) is ErrorCode.SUCCESS
    # The success reset the account: two free failures again.
    again = await memory_env.connect(gate, "tcp")
    for _ in range(2):
        answer = await _password_login(again, "bo", "guess")
        assert isinstance(answer, login_pb2.AuthRsp)


async def test_an_address_backs_off_after_its_free_failures(
    memory_env: Env, users: MemoryUserStore
) -> None:
    await users.upsert(UserImport(user_id=UserId(9), token="tok-9"))
    clock = ManualClock()
    policy = ThrottlePolicy(address_free_failures=3, initial_s=2.0)
    gate = await _gate(memory_env, users, throttle=MemoryLoginThrottle(policy, clock=clock))
    client = await memory_env.connect(gate, "tcp")
    for user_id in (1, 2, 3, 4):  # token sprayed over user ids: the address counts
        answer = await _token_login(client, user_id, "guess")
        assert isinstance(answer, login_pb2.AuthTokenRsp)
        assert ErrorCode(answer.result_code) is ErrorCode.LOGIN_INVALID_USER_TOKEN
    _refused(await _token_login(client, 9, "tok-9"), ExtResultCode.RATE_LIMITED)
    clock.advance(2)
    client = await memory_env.connect(gate, "tcp")
    ok = await _token_login(client, 9, "tok-9")
    assert isinstance(ok, login_pb2.AuthTokenRsp)
    assert ErrorCode(ok.result_code) is ErrorCode.SUCCESS


@pytest.mark.parametrize("gate_knows_the_pool", [True, False])
async def test_a_full_password_pool_refuses_at_once(
    memory_env: Env, users: MemoryUserStore, pool: CountingPool, gate_knows_the_pool: bool
) -> None:
    """Refused at once: before the throttle and the store are asked when the gate knows the
    pool (the wiring gives it the store's), else by the store's verification."""
    await users.upsert(UserImport(user_id=UserId(10), user_name="cy", password="right"))
    gate = await _gate(memory_env, users, pool=pool if gate_knows_the_pool else None)
    # Hold the pool's only thread (workers=1, queue=0) until released.
    release = threading.Event()
    held = asyncio.ensure_future(pool._run(functools.partial(release.wait, 30)))
    try:
        client = await memory_env.connect(gate, "tcp")
        refusal = _refused(await _password_login(client, "cy", "right"), ExtResultCode.RATE_LIMITED)
        assert "retry" in refusal.text
        assert gate.stats.logins_busy == 1
        assert pool.refused == (0 if gate_knows_the_pool else 1)
    finally:
        release.set()
        await held
    # Told to retry in a second, the connection is refused unchecked until then; a new
    # connection logs in now that the pool is free.
    early = _refused(await _password_login(client, "cy", "right"), ExtResultCode.RATE_LIMITED)
    assert "retried early" in early.text
    assert gate.stats.logins_busy == 1
    client = await memory_env.connect(gate, "tcp")
    ok = await _password_login(client, "cy", "right")
    assert isinstance(ok, login_pb2.AuthRsp)
    assert ErrorCode(ok.result_code) is ErrorCode.SUCCESS


async def test_a_banned_user_is_told_only_after_proving_who_it_is(
    memory_env: Env, users: MemoryUserStore
) -> None:
    await users.upsert(UserImport(user_id=UserId(11), token="tok-11"))
    await users.set_banned(UserId(11), True, reason="spam")
    gate = await _gate(memory_env, users)
    client = await memory_env.connect(gate, "tcp")
    wrong = await _token_login(client, 11, "guess")
    assert isinstance(wrong, login_pb2.AuthTokenRsp)
    assert ErrorCode(wrong.result_code) is ErrorCode.LOGIN_INVALID_USER_TOKEN
    refusal = _refused(await _token_login(client, 11, "tok-11"), ExtResultCode.FORBIDDEN)
    assert refusal.text == "banned: spam"
    await users.set_banned(UserId(11), False)
    ok = await _token_login(client, 11, "tok-11")
    assert isinstance(ok, login_pb2.AuthTokenRsp)
    assert ErrorCode(ok.result_code) is ErrorCode.SUCCESS


# --- KickUser ---------------------------------------------------------------------------


async def _publish(env: Env, gate: Gate, record: KickUser) -> None:
    await env.bus.publish(gate.topic, encode_gate_record(record), key=b"%d" % record.user_id)


def _kick(user_id: int, reason: KickReason, **fields: Any) -> KickUser:
    values: dict[str, Any] = {
        "user_id": user_id,
        "client_types": (),
        "keep_token": b"",
        "reason": reason,
        "text": "by the operator",
        "trace_id": new_trace_id(),
        "ts_ms": now_ms(),
        **fields,
    }
    return KickUser(**values)


async def _kicked(client: Client) -> ext_pb2.KickNotify:
    frames = await client.wait_closed()
    notify = [f for f in frames if f.command_id == Cmd.KICK_NOTIFY]
    assert len(notify) == 1, frames
    return ext_pb2.KickNotify.FromString(notify[0].body)


async def test_kick_user_closes_the_connections_it_selects(
    memory_env: Env, users: MemoryUserStore
) -> None:
    await users.upsert(
        UserImport(user_id=UserId(12), token="tok-12", user_name="di", password="pw")
    )
    await users.upsert(UserImport(user_id=UserId(13), token="tok-13"))
    gate = await _gate(memory_env, users)
    phone, web, by_password, other = [await memory_env.connect(gate, "tcp") for _ in range(4)]
    await _token_login(phone, 12, "tok-12", ClientType.ANDROID)
    await _token_login(web, 12, "tok-12", ClientType.WEB)
    answer = await _password_login(by_password, "di", "pw")  # a web login too ...
    assert isinstance(answer, login_pb2.AuthRsp)
    await _token_login(other, 13, "tok-13")
    # ... which, under kick_same_type, replaced the token web login
    assert KickReason((await _kicked(web)).reason) is KickReason.DUPLICATE_LOGIN

    # A rotation: only token logins with another token than the current one go.
    await _publish(
        memory_env,
        gate,
        _kick(12, KickReason.TOKEN_REVOKED, keep_token=token_digest("tok-12-new")),
    )
    notify = await _kicked(phone)
    assert (KickReason(notify.reason), notify.text) == (KickReason.TOKEN_REVOKED, "by the operator")
    # An admin kick of one client type: the web (password) connection goes, Bob's stays.
    await _publish(memory_env, gate, _kick(12, KickReason.ADMIN, client_types=(ClientType.WEB,)))
    assert KickReason((await _kicked(by_password)).reason) is KickReason.ADMIN
    seq = await other.send(Cmd.HEARTBEAT)
    assert (await other.expect(Cmd.HEARTBEAT)).seq == seq
    assert gate.stats.admin_kicks == 2


class _GatedUsers(MemoryUserStore):
    """A user store whose token checks wait for `release` once `hold` is set."""

    def __init__(self) -> None:
        super().__init__(password_params=CHEAP)
        self.hold = False
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def check_token(self, user_id: UserId, token: str) -> TokenCheck:
        check = await super().check_token(user_id, token)
        if self.hold:
            self.hold = False
            self.holding.set()
            await self.release.wait()
        return check


async def test_a_login_checked_before_a_revocation_is_checked_again(memory_env: Env) -> None:
    users = _GatedUsers()
    await users.upsert(UserImport(user_id=UserId(14), token="old"))
    gate = await _gate(memory_env, users)
    client = await memory_env.connect(gate, "tcp")
    users.hold = True
    login = asyncio.ensure_future(_token_login(client, 14, "old"))
    await users.holding.wait()  # the old token checked out; the answer is not sent yet
    await users.rotate_token(UserId(14))  # the server API: store first, then the gates
    await _publish(
        memory_env,
        gate,
        _kick(14, KickReason.TOKEN_REVOKED, keep_token=token_digest("whatever")),
    )
    await wait_for(lambda: 14 in gate._kicked_at)  # the gate has seen the record
    users.release.set()
    answer = await login
    assert isinstance(answer, login_pb2.AuthTokenRsp)
    assert ErrorCode(answer.result_code) is ErrorCode.LOGIN_INVALID_USER_TOKEN
    assert not answer.HasField("user_info")
    await wait_for(lambda: _no_route(memory_env, 14))  # the route it registered is gone


async def _no_route(env: Env, user_id: int) -> bool:
    return not await env.routes.get(UserId(user_id))
