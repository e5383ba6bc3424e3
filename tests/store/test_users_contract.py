"""The `UserStore` contract, run against the in-memory twin and MongoDB (+ Redis cache)."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from store.clock import ManualClock
from store.errors import (
    InvalidUserInputError,
    UnknownUserError,
    UserDeletedError,
    UserNameTakenError,
)
from store.ids import MAX_USER_ID, UserId
from store.memory.users import MemoryUserStore
from store.mongo.client import Document
from store.mongo.users import MongoUserStore
from store.passwords import verify_password
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys
from store.users import TokenStatus, UserImport, UserStore

ALICE = UserId(1001)
BOB = UserId(1002)
NOBODY = UserId(4242)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("mongo", marks=[pytest.mark.mongo, pytest.mark.redis]),
        pytest.param("mongo-nocache", marks=pytest.mark.mongo),
    ]
)
def users(request: pytest.FixtureRequest, clock: ManualClock) -> UserStore:
    """Each `UserStore` implementation, empty."""
    if request.param == "memory":
        return MemoryUserStore(clock=clock)
    db: AsyncDatabase[Document] = request.getfixturevalue("mongo_db")
    if request.param == "mongo-nocache":
        return MongoUserStore(db, None, clock=clock)
    redis: RedisClient = request.getfixturevalue("redis")
    keys: RedisKeys = request.getfixturevalue("redis_keys")
    return MongoUserStore(db, redis, keys=keys, clock=clock)


async def test_new_user_gets_defaults_and_a_generated_token(
    users: UserStore, clock: ManualClock
) -> None:
    stored = await users.upsert(UserImport(user_id=ALICE, nick_name="Alice"))
    assert stored.user_id == ALICE
    assert stored.nick_name == "Alice"
    assert (stored.phone, stored.avatar_url, stored.attach_info) == ("", "", "")
    assert stored.user_name is None
    assert stored.password_hash is None
    assert len(stored.token) >= 40  # 32 random bytes in base64
    assert stored.created_ms == stored.updated_ms == clock.now_ms()
    assert await users.get(ALICE) == stored


async def test_token_ok_bad_and_unknown_user(users: UserStore) -> None:
    await users.upsert(UserImport(user_id=ALICE, nick_name="Alice", token="secret-a"))

    ok = await users.check_token(ALICE, "secret-a")
    assert ok.status is TokenStatus.OK
    assert ok.ok
    assert ok.user is not None
    assert (ok.user.user_id, ok.user.nick_name) == (ALICE, "Alice")

    bad = await users.check_token(ALICE, "secret-b")
    assert (bad.status, bad.user, bad.ok) == (TokenStatus.BAD_TOKEN, None, False)
    assert (await users.check_token(ALICE, "")).status is TokenStatus.BAD_TOKEN

    for unknown in (NOBODY, UserId(0), UserId(-1), UserId(MAX_USER_ID + 1)):
        check = await users.check_token(unknown, "secret-a")
        assert (check.status, check.user) == (TokenStatus.UNKNOWN_USER, None)


async def test_token_check_never_returns_the_password_hash(users: UserStore) -> None:
    await users.upsert(UserImport(user_id=ALICE, token="t", user_name="alice", password="pw1"))
    check = await users.check_token(ALICE, "t")
    assert check.user is not None
    assert check.user.password_hash is None
    assert check.user.user_name == "alice"


async def test_rotate_invalidates_the_old_token_even_when_cached(users: UserStore) -> None:
    await users.upsert(UserImport(user_id=ALICE, token="old"))
    # Warm any cache with the old token first.
    assert (await users.check_token(ALICE, "old")).ok

    new = await users.rotate_token(ALICE)

    assert new != "old"
    assert (await users.check_token(ALICE, "old")).status is TokenStatus.BAD_TOKEN
    assert (await users.check_token(ALICE, new)).ok
    user = await users.get(ALICE)
    assert user is not None
    assert user.token == new
    assert await users.rotate_token(ALICE) != new


async def test_rotate_unknown_user_raises(users: UserStore) -> None:
    with pytest.raises(UnknownUserError):
        await users.rotate_token(NOBODY)


async def test_upsert_updates_what_it_names_and_the_cache_follows(
    users: UserStore, clock: ManualClock
) -> None:
    first = await users.upsert(
        UserImport(user_id=ALICE, nick_name="Alice", phone="123", token="t1")
    )
    assert (await users.check_token(ALICE, "t1")).ok  # cached now

    clock.advance(5)
    second = await users.upsert(UserImport(user_id=ALICE, nick_name="Alicia", token="t2"))

    assert second.nick_name == "Alicia"
    assert second.phone == "123"  # not named: kept
    assert second.created_ms == first.created_ms
    assert second.updated_ms == first.updated_ms + 5000
    assert (await users.check_token(ALICE, "t1")).status is TokenStatus.BAD_TOKEN
    check = await users.check_token(ALICE, "t2")
    assert check.user is not None
    assert check.user.nick_name == "Alicia"

    # An update without a token keeps the token.
    third = await users.upsert(UserImport(user_id=ALICE, avatar_url="https://a/1.png"))
    assert third.token == "t2"
    check = await users.check_token(ALICE, "t2")
    assert check.user is not None
    assert check.user.avatar_url == "https://a/1.png"


async def test_unknown_user_then_import_logs_in(users: UserStore) -> None:
    # A negative answer may be cached; the import must still be visible at once.
    assert (await users.check_token(BOB, "t")).status is TokenStatus.UNKNOWN_USER
    await users.upsert(UserImport(user_id=BOB, token="t"))
    assert (await users.check_token(BOB, "t")).ok


async def test_password_right_wrong_and_unknown_name(users: UserStore) -> None:
    await users.upsert(UserImport(user_id=ALICE, user_name="alice", password="correct horse"))
    await users.upsert(UserImport(user_id=BOB, nick_name="no password"))

    user = await users.check_password("alice", "correct horse")
    assert user is not None
    assert user.user_id == ALICE
    assert await users.check_password("alice", "wrong horse") is None
    assert await users.check_password("Alice", "correct horse") is None  # names are exact
    assert await users.check_password("mallory", "correct horse") is None
    assert await users.check_password("#1002", "") is None  # the reserved name key of BOB
    assert await users.check_password("", "correct horse") is None
    assert await users.check_password("alice", "") is None


async def test_password_hashes_are_salted(users: UserStore) -> None:
    a = await users.upsert(UserImport(user_id=ALICE, user_name="alice", password="same"))
    b = await users.upsert(UserImport(user_id=BOB, user_name="bob", password="same"))
    assert a.password_hash is not None
    assert b.password_hash is not None
    assert a.password_hash.startswith("scrypt$16384$8$1$")
    assert a.password_hash != b.password_hash
    assert "same" not in a.password_hash
    assert verify_password("same", a.password_hash)
    assert verify_password("same", b.password_hash)
    assert await users.check_password("bob", "same") is not None


async def test_changing_the_password(users: UserStore) -> None:
    await users.upsert(UserImport(user_id=ALICE, user_name="alice", password="one"))
    await users.upsert(UserImport(user_id=ALICE, password="two"))
    assert await users.check_password("alice", "one") is None
    assert await users.check_password("alice", "two") is not None


async def test_user_names_are_unique_and_renaming_frees_the_old_one(users: UserStore) -> None:
    await users.upsert(UserImport(user_id=ALICE, user_name="alice", password="pa"))
    # The same user naming itself again is fine.
    await users.upsert(UserImport(user_id=ALICE, user_name="alice"))
    with pytest.raises(UserNameTakenError):
        await users.upsert(UserImport(user_id=BOB, user_name="alice"))
    assert await users.get(BOB) is None  # the refused import created nothing

    await users.upsert(UserImport(user_id=ALICE, user_name="alice2"))
    assert await users.check_password("alice", "pa") is None
    assert await users.check_password("alice2", "pa") is not None
    await users.upsert(UserImport(user_id=BOB, user_name="alice", password="pb"))
    bob = await users.check_password("alice", "pb")
    assert bob is not None
    assert bob.user_id == BOB


@pytest.mark.parametrize(
    "bad",
    [
        UserImport(user_id=UserId(0)),
        UserImport(user_id=UserId(MAX_USER_ID + 1)),
        UserImport(user_id=ALICE, user_name="#1001"),
        UserImport(user_id=ALICE, user_name="has space"),
        UserImport(user_id=ALICE, user_name=""),
        UserImport(user_id=ALICE, user_name="x" * 65),
        UserImport(user_id=ALICE, token=""),
        UserImport(user_id=ALICE, token="new\nline"),
        UserImport(user_id=ALICE, user_name="alice", password=""),
        UserImport(user_id=ALICE, user_name="alice", password="p" * 1025),
    ],
)
async def test_invalid_imports_are_refused(users: UserStore, bad: UserImport) -> None:
    with pytest.raises(InvalidUserInputError):
        await users.upsert(bad)
    assert await users.get(ALICE) is None


async def test_list_users_in_asked_order_without_unknown_or_repeats(users: UserStore) -> None:
    for uid in (ALICE, BOB, UserId(1003)):
        await users.upsert(UserImport(user_id=uid, nick_name=f"n{uid}"))
    listed = await users.list_users([UserId(1003), NOBODY, ALICE, UserId(1003), UserId(0)])
    assert [u.user_id for u in listed] == [1003, ALICE]
    assert listed[1].nick_name == f"n{ALICE}"
    assert await users.list_users([]) == []


async def test_concurrent_imports_of_one_new_user_all_succeed(users: UserStore) -> None:
    results = await asyncio.gather(
        *(users.upsert(UserImport(user_id=ALICE, nick_name=f"n{i}")) for i in range(8))
    )
    final = await users.get(ALICE)
    assert final is not None
    assert final.nick_name in {r.nick_name for r in results}
    # Whoever created the user, later imports kept its token.
    assert len({r.token for r in results}) == 1


async def test_create_many_creates_only_the_new_users(users: UserStore) -> None:
    await users.upsert(UserImport(user_id=ALICE, nick_name="Alice", token="secret-a"))
    await users.upsert(UserImport(user_id=BOB, user_name="bob"))
    carol, dave, erin = UserId(1003), UserId(1004), UserId(1005)
    created = await users.create_many(
        [
            UserImport(user_id=ALICE, nick_name="Not Alice", token="secret-x"),  # exists
            UserImport(user_id=carol, nick_name="Carol", token="secret-c"),
            UserImport(user_id=dave, user_name="bob"),  # the name is taken
            UserImport(user_id=erin, user_name="erin", password="pw-erin-1"),
        ]
    )
    assert created == [carol, erin]
    alice = await users.get(ALICE)
    assert alice is not None
    assert (alice.nick_name, alice.token) == ("Alice", "secret-a")
    assert await users.get(dave) is None
    assert (await users.check_token(carol, "secret-c")).ok
    assert (await users.check_password("erin", "pw-erin-1")) == await users.get(erin)
    assert await users.create_many([]) == []


async def test_create_many_replaces_a_cached_unknown_user(users: UserStore) -> None:
    # The failed login caches "no such user"; the bulk-created user logs in at once.
    assert (await users.check_token(NOBODY, "secret-n")).status is TokenStatus.UNKNOWN_USER
    assert await users.create_many([UserImport(user_id=NOBODY, token="secret-n")]) == [NOBODY]
    assert (await users.check_token(NOBODY, "secret-n")).ok


async def test_create_many_refuses_an_invalid_import_before_writing(users: UserStore) -> None:
    with pytest.raises(InvalidUserInputError):
        await users.create_many(
            [UserImport(user_id=UserId(1003)), UserImport(user_id=UserId(MAX_USER_ID + 1))]
        )
    assert await users.get(UserId(1003)) is None


# --- bans and deletion (issue 14: session administration) --------------------------------


async def test_ban_keeps_the_token_and_is_idempotent(users: UserStore, clock: ManualClock) -> None:
    await users.upsert(UserImport(user_id=ALICE, token="tok-a", nick_name="Al"))
    banned = await users.set_banned(ALICE, True, reason="spam")
    assert (banned.banned, banned.ban_reason, banned.banned_ms) == (True, "spam", clock.now_ms())
    clock.advance(5)
    again = await users.set_banned(ALICE, True, reason="other")
    assert (again.banned_ms, again.ban_reason) == (banned.banned_ms, "spam")  # unchanged
    check = await users.check_token(ALICE, "tok-a")  # the token still proves who asks ...
    assert check.ok
    assert check.user is not None
    assert check.user.banned  # ... and the gate refuses the banned user
    lifted = await users.set_banned(ALICE, False)
    assert (lifted.banned, lifted.banned_ms) == (False, banned.banned_ms)  # the last ban's time
    assert await users.set_banned(ALICE, False) == lifted
    check = await users.check_token(ALICE, "tok-a")
    assert check.user is not None
    assert not check.user.banned
    with pytest.raises(UnknownUserError):
        await users.set_banned(NOBODY, True)


async def test_delete_leaves_a_tombstone_that_never_logs_in(users: UserStore) -> None:
    await users.upsert(
        UserImport(user_id=ALICE, token="tok-a", nick_name="Al", user_name="al", password="pw-al")
    )
    assert (await users.check_token(ALICE, "tok-a")).ok  # cached, if there is a cache
    tombstone, deleted = await users.delete(ALICE)
    assert deleted
    assert tombstone.deleted
    assert (tombstone.nick_name, tombstone.user_name, tombstone.password_hash) == ("", None, None)
    assert tombstone.token != "tok-a"
    assert (await users.check_token(ALICE, "tok-a")).status is TokenStatus.UNKNOWN_USER
    assert (await users.check_token(ALICE, tombstone.token)).status is TokenStatus.UNKNOWN_USER
    assert await users.check_password("al", "pw-al") is None
    assert await users.list_users([ALICE]) == []
    assert await users.get(ALICE) == tombstone
    # Idempotent: a second delete finds the tombstone.
    assert await users.delete(ALICE) == (tombstone, False)
    # The id is retired; the name is free.
    with pytest.raises(UserDeletedError):
        await users.upsert(UserImport(user_id=ALICE, nick_name="back"))
    with pytest.raises(UserDeletedError):
        await users.rotate_token(ALICE)
    with pytest.raises(UserDeletedError):
        await users.set_banned(ALICE, True)
    await users.upsert(UserImport(user_id=BOB, user_name="al", password="pw-bob"))
    assert (await users.check_password("al", "pw-bob")) is not None
    assert await users.create_many([UserImport(user_id=ALICE)]) == []
    with pytest.raises(UnknownUserError):
        await users.delete(NOBODY)
