"""The `LoginThrottle` contract, against the in-memory twin and Redis (`store.login_throttle`).

Time is a `ManualClock` moved by hand: back-offs of seconds and windows of minutes are
checked without waiting.
"""

from __future__ import annotations

import asyncio

import pytest

from store.clock import ManualClock
from store.login_throttle import (
    LoginThrottle,
    Subject,
    SubjectKind,
    ThrottlePolicy,
    address_subject,
    backoff_s,
)
from store.memory.login_throttle import MemoryLoginThrottle
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.redis.login_throttle import RedisLoginThrottle

POLICY = ThrottlePolicy(
    account_free_failures=3, address_free_failures=5, initial_s=1.0, max_s=60.0, window_s=600.0
)
ALICE = Subject(SubjectKind.ACCOUNT, "alice")
BOB = Subject(SubjectKind.ACCOUNT, "bob")
HOME = Subject(SubjectKind.ADDRESS, "192.0.2.7")


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def throttle(request: pytest.FixtureRequest, clock: ManualClock) -> LoginThrottle:
    if request.param == "memory":
        return MemoryLoginThrottle(POLICY, clock=clock)
    redis: RedisClient = request.getfixturevalue("redis")
    keys: RedisKeys = request.getfixturevalue("redis_keys")
    return RedisLoginThrottle(redis, keys=keys, policy=POLICY, clock=clock)


async def test_free_failures_then_a_doubling_back_off(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    for _ in range(3):
        assert await throttle.failed([ALICE]) == 0
        assert await throttle.wait_s([ALICE]) == 0
    waits = []
    for _ in range(8):
        waits.append(await throttle.failed([ALICE]))
        assert await throttle.wait_s([ALICE]) == waits[-1]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]
    clock.advance(59.5)
    assert await throttle.wait_s([ALICE]) == 0.5
    assert await throttle.wait_s([BOB]) == 0  # another account is not touched
    clock.advance(0.5)
    assert await throttle.wait_s([ALICE]) == 0


async def test_the_longest_wait_of_the_subjects_counts(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    # Five failures from one address on five accounts: no account is over its free three,
    # the address reaches its free five; the sixth arms the address's back-off.
    for n in range(5):
        account = Subject(SubjectKind.ACCOUNT, f"user{n}")
        assert await throttle.failed([account, HOME]) == 0
    assert await throttle.failed([BOB, HOME]) == 1
    assert await throttle.wait_s([ALICE, HOME]) == 1  # Alice from there waits too
    assert await throttle.wait_s([ALICE]) == 0  # ... but not from elsewhere
    clock.advance(1)
    assert await throttle.wait_s([ALICE, HOME]) == 0
    assert await throttle.wait_s([]) == 0


async def test_success_resets_the_account_and_the_window_forgets(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    for _ in range(5):
        await throttle.failed([ALICE, HOME])
    assert await throttle.wait_s([ALICE]) == 2
    await throttle.succeeded(ALICE)
    assert await throttle.wait_s([ALICE]) == 0
    assert await throttle.failed([ALICE]) == 0  # counting starts again
    # The address keeps its count (5 failures: at its free limit)...
    assert await throttle.failed([HOME]) == 1
    # ... until the window passes without a failure.
    clock.advance(POLICY.window_s + 1)
    assert await throttle.wait_s([HOME]) == 0
    assert await throttle.failed([HOME]) == 0


async def test_concurrent_failures_are_all_counted(throttle: LoginThrottle) -> None:
    await asyncio.gather(*(throttle.failed([ALICE]) for _ in range(10)))
    # 10 failures, 3 free: the back-off is at 2**(7-1) = 64 -> capped at 60
    assert await throttle.wait_s([ALICE]) == 60


def test_backoff_and_address_subjects() -> None:
    assert [backoff_s(n, 2, POLICY) for n in range(6)] == [0, 0, 0, 1, 2, 4]
    assert backoff_s(10_000, 0, POLICY) == 60
    assert address_subject("192.0.2.7") == HOME
    assert address_subject("::ffff:192.0.2.7") == HOME
    assert address_subject("2001:db8:1:2:3:4:5:6") == address_subject("2001:db8:1:2::9")
    assert address_subject("2001:db8:1:2::9").name == "2001:db8:1:2::/64"
    assert address_subject("2001:db8:1:3::9") != address_subject("2001:db8:1:2::9")
    assert address_subject("not an address").name == "not an address"
