"""Contract of `store.push_tokens.PushTokenStore` and `store.push_log.PushLog`: the memory
twins and MongoDB pass the same tests."""

from __future__ import annotations

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from schemas.ids import UserId
from store.clock import ManualClock
from store.memory.push_log import MemoryPushLog
from store.memory.push_tokens import MemoryPushTokenStore
from store.mongo.client import Document
from store.mongo.push_log import MongoPushLog
from store.mongo.push_tokens import MongoPushTokenStore
from store.push_log import PushLog
from store.push_tokens import MAX_DEVICES_PER_USER, PushDevice, PushProvider, PushTokenStore

ALICE = UserId(1001)
BOB = UserId(1002)


@pytest.fixture(params=["memory", pytest.param("mongo", marks=pytest.mark.mongo)])
def tokens(request: pytest.FixtureRequest, clock: ManualClock) -> PushTokenStore:
    if request.param == "memory":
        return MemoryPushTokenStore(clock=clock)
    db: AsyncDatabase[Document] = request.getfixturevalue("mongo_db")
    return MongoPushTokenStore(db, clock=clock)


@pytest.fixture(params=["memory", pytest.param("mongo", marks=pytest.mark.mongo)])
def push_log(request: pytest.FixtureRequest) -> PushLog:
    if request.param == "memory":
        return MemoryPushLog()
    db: AsyncDatabase[Document] = request.getfixturevalue("mongo_db")
    return MongoPushLog(db)


def device(user: UserId, token: str, provider: PushProvider = PushProvider.APNS) -> PushDevice:
    return PushDevice(user_id=user, provider=provider, token=token, app_id="app", client_type=2)


async def test_register_lists_newest_first_and_stamps_the_time(
    tokens: PushTokenStore, clock: ManualClock
) -> None:
    first = await tokens.register(device(ALICE, "a1"))
    clock.advance(1)
    second = await tokens.register(device(ALICE, "a2", PushProvider.FCM))
    assert second.registered_ms == first.registered_ms + 1000
    assert await tokens.devices(ALICE) == [second, first]
    assert await tokens.devices(BOB) == []
    assert await tokens.devices_of([ALICE, BOB]) == {ALICE: [second, first]}
    assert await tokens.devices_of([]) == {}


async def test_one_token_belongs_to_the_user_who_registered_it_last(
    tokens: PushTokenStore, clock: ManualClock
) -> None:
    await tokens.register(device(ALICE, "shared"))
    clock.advance(1)
    moved = await tokens.register(device(BOB, "shared"))
    assert await tokens.devices_of([ALICE, BOB]) == {BOB: [moved]}
    # the same token string under another provider is another device
    other = await tokens.register(device(ALICE, "shared", PushProvider.WEBHOOK))
    assert await tokens.devices(ALICE) == [other]


async def test_remove_only_the_holders_token(tokens: PushTokenStore) -> None:
    await tokens.register(device(ALICE, "a1"))
    assert not await tokens.remove(BOB, PushProvider.APNS, "a1")
    assert not await tokens.remove(ALICE, PushProvider.FCM, "a1")
    assert await tokens.remove(ALICE, PushProvider.APNS, "a1")
    assert not await tokens.remove(ALICE, PushProvider.APNS, "a1")
    assert await tokens.devices(ALICE) == []


async def test_discard_invalid_spares_a_renewed_or_moved_registration(
    tokens: PushTokenStore, clock: ManualClock
) -> None:
    read = await tokens.register(device(ALICE, "t"))
    clock.advance(1)
    renewed = await tokens.register(device(ALICE, "t"))
    assert not await tokens.discard_invalid(read)
    assert await tokens.devices(ALICE) == [renewed]
    clock.advance(1)
    await tokens.register(device(BOB, "t"))
    assert not await tokens.discard_invalid(renewed)
    (bobs,) = await tokens.devices(BOB)
    assert await tokens.discard_invalid(bobs)
    assert not await tokens.discard_invalid(bobs)
    assert await tokens.devices_of([ALICE, BOB]) == {}


async def test_a_user_gets_pushes_on_the_newest_devices_only(
    tokens: PushTokenStore, clock: ManualClock
) -> None:
    for n in range(MAX_DEVICES_PER_USER + 2):
        await tokens.register(device(ALICE, f"d{n}"))
        clock.advance(1)
    listed = await tokens.devices(ALICE)
    assert [d.token for d in listed] == [
        f"d{n}" for n in reversed(range(2, MAX_DEVICES_PER_USER + 2))
    ]


async def test_claims_are_granted_once(push_log: PushLog) -> None:
    assert await push_log.claim(["1|s:1:2|5", "1|s:1:2|6", "1|s:1:2|5"], 1000) == [
        True,
        True,
        False,
    ]
    assert await push_log.claim(["1|s:1:2|6", "2|s:1:2|6"], 2000) == [False, True]
    assert await push_log.claim([], 3000) == []


async def test_prune_forgets_old_claims(push_log: PushLog) -> None:
    await push_log.claim(["old"], 1000)
    await push_log.claim(["new"], 5000)
    assert await push_log.prune(before_ms=5000) == 1
    assert await push_log.claim(["old", "new"], 6000) == [True, False]
