"""The `CallStore` contract, run against the in-memory twin and Redis."""

from __future__ import annotations

import asyncio

import pytest

from store.calls import Call, CallState, CallStore, EndCause
from store.ids import UserId
from store.memory.calls import MemoryCallStore
from store.redis.calls import RedisCallStore
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys

ALICE, BOB, CAROL = UserId(1001), UserId(1002), UserId(1003)
T0 = 1_700_000_000_000
ANDROID, IOS = 1, 2
TTL = 600.0


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest) -> CallStore:
    """Each `CallStore` implementation, empty."""
    if request.param == "memory":
        return MemoryCallStore()
    redis: RedisClient = request.getfixturevalue("redis")
    keys: RedisKeys = request.getfixturevalue("redis_keys")
    return RedisCallStore(redis, keys=keys)


def ringing(channel: str = "call-1", caller: UserId = ALICE, callee: UserId = BOB) -> Call:
    return Call(
        channel=channel,
        caller=caller,
        callee=callee,
        call_type=1,
        caller_client_type=ANDROID,
        state=CallState.RINGING,
        created_ms=T0,
        trace_id="t1",
    )


async def test_create_is_idempotent_and_schedules(store: CallStore) -> None:
    call = await store.create(ringing(), deadline_ms=T0 + 60_000, ttl_s=TTL)
    assert call == ringing()
    again = await store.create(ringing(), deadline_ms=T0 + 1, ttl_s=TTL)
    assert again == call
    assert await store.get("call-1") == call
    assert await store.get("call-2") is None
    assert await store.due(T0 + 59_999, 10) == []
    assert await store.due(T0 + 60_000, 10) == ["call-1"]  # the first deadline stands


async def test_claims_make_busy_until_the_call_ends(store: CallStore) -> None:
    await store.create(ringing(), deadline_ms=T0, ttl_s=TTL)
    assert await store.claim(ALICE, "call-1", ttl_s=TTL) is None
    assert await store.claim(ALICE, "call-1", ttl_s=TTL) is None  # a replay
    assert await store.claim(BOB, "call-1", ttl_s=TTL) is None
    await store.create(ringing("call-2", CAROL, BOB), deadline_ms=T0, ttl_s=TTL)
    assert await store.claim(BOB, "call-2", ttl_s=TTL) == "call-1"  # busy
    assert await store.current(BOB) == "call-1"
    ended, call = await store.end(
        "call-1", hangup_user=ALICE, reason=3, cause=EndCause.BYE, now_ms=T0 + 5, retry_ms=T0 + 9
    )
    assert ended
    assert call is not None
    # Ending: the claim still names it, but the call no longer holds the user.
    assert await store.claim(BOB, "call-2", ttl_s=TTL) is None
    assert await store.current(BOB) == "call-2"
    await store.finish(call, keep_s=TTL)
    assert await store.current(ALICE) is None  # released
    assert await store.current(BOB) == "call-2"  # not someone else's claim
    finished = await store.get("call-1")
    assert finished is not None
    assert finished.state is CallState.ENDED
    assert await store.due(T0 + 100_000, 10) == ["call-2"]


async def test_first_answer_wins(store: CallStore) -> None:
    await store.create(ringing(), deadline_ms=T0 + 60_000, ttl_s=TTL)
    results = await asyncio.gather(
        store.answer("call-1", ANDROID, T0 + 10, deadline_ms=T0 + 30_010),
        store.answer("call-1", IOS, T0 + 11, deadline_ms=T0 + 30_011),
    )
    assert sorted(won for won, _ in results) == [False, True]
    call = await store.get("call-1")
    assert call is not None
    assert call.state is CallState.TALKING
    winner = ANDROID if results[0][0] else IOS
    assert call.callee_client_type == winner
    assert call.caller_hb_ms == call.callee_hb_ms == call.answered_ms
    replay, _ = await store.answer("call-1", winner, T0 + 20, deadline_ms=T0 + 30_020)
    assert replay  # the winner answering again still holds the call
    assert await store.due(T0 + 30_009, 10) == []
    assert await store.due(T0 + 30_011, 10) == ["call-1"]
    assert await store.answer("call-9", ANDROID, T0, deadline_ms=T0) == (False, None)


async def test_heartbeats_and_end_once(store: CallStore) -> None:
    await store.create(ringing(), deadline_ms=T0, ttl_s=TTL)
    await store.claim(ALICE, "call-1", ttl_s=TTL)
    await store.answer("call-1", IOS, T0 + 1, deadline_ms=T0 + 30_001)
    after = await store.heartbeat("call-1", ALICE, T0 + 500, claim_ttl_s=TTL, call_ttl_s=TTL)
    assert after is not None
    assert (after.caller_hb_ms, after.callee_hb_ms) == (T0 + 500, T0 + 1)
    after = await store.heartbeat("call-1", CAROL, T0 + 600, claim_ttl_s=TTL, call_ttl_s=TTL)
    assert after is not None
    assert after.caller_hb_ms == T0 + 500
    await store.reschedule("call-1", T0 + 30_500)
    assert await store.due(T0 + 30_499, 10) == []

    results = await asyncio.gather(
        store.end(
            "call-1", hangup_user=0, reason=3, cause=EndCause.HEARTBEAT_TIMEOUT,
            now_ms=T0 + 40_000, retry_ms=T0 + 45_000,
        ),
        store.end(
            "call-1", hangup_user=BOB, reason=3, cause=EndCause.BYE,
            now_ms=T0 + 40_001, retry_ms=T0 + 45_001,
        ),
    )  # fmt: skip
    assert sorted(ended for ended, _ in results) == [False, True]
    final = next(call for ended, call in results if ended)
    assert final is not None
    assert final.state is CallState.ENDING
    assert final.duration_s == 39
    assert await store.get("call-1") == final
    assert await store.due(T0 + 45_001, 10) == ["call-1"]  # the retry
    after = await store.heartbeat("call-1", ALICE, T0 + 41_000, claim_ttl_s=TTL, call_ttl_s=TTL)
    assert after == final  # an ending call takes no heartbeat
    await store.finish(final, keep_s=TTL)
    await store.finish(final, keep_s=TTL)  # idempotent
    assert await store.due(T0 + 100_000, 10) == []
    ended, call = await store.end(
        "call-1", hangup_user=ALICE, reason=3, cause=EndCause.BYE, now_ms=T0, retry_ms=T0
    )
    assert not ended
    assert call is not None
    assert call.state is CallState.ENDED
    await store.forget("call-1")
