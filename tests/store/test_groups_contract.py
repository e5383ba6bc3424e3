"""The `GroupStore` contract — memory twin, MongoDB, and MongoDB behind the Redis cache — and
the cache's own coherence guarantees, against the real servers."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from schemas.codes import GroupMuteModel, GroupType
from schemas.ids import GroupId, UserId
from store.clock import ManualClock
from store.groups import (
    GroupDisbandedError,
    GroupFullError,
    GroupIdTakenError,
    GroupLimits,
    GroupSpec,
    GroupStore,
    GroupUpdate,
    MemberAck,
    UnknownGroupError,
)
from store.memory.groups import MemoryGroupStore
from store.mongo.client import Document
from store.mongo.compat import MongoServer
from store.mongo.groups import MongoGroupStore
from store.mongo.seq import MongoSectionStore
from store.redis.client import RedisClient
from store.redis.groups import CachedGroupStore
from store.redis.keys import RedisKeys

OWNER = UserId(1)
LIMITS = GroupLimits(normal=5, super_group=8)
U = [UserId(u) for u in range(1, 20)]
NOWHERE = GroupId(4242)


def spec(*, name: str = "coffee", group_type: int = GroupType.NORMAL, intro: str = "") -> GroupSpec:
    return GroupSpec(name=name, owner_id=OWNER, group_type=group_type, intro=intro)


def mongo_store(
    db: AsyncDatabase[Document],
    clock: ManualClock,
    server: MongoServer = MongoServer.FERRETDB_V1,
) -> MongoGroupStore:
    sections = MongoSectionStore(db, server=server)
    return MongoGroupStore(db, sections, limits=LIMITS, clock=clock, server=server)


@pytest.fixture(
    params=[
        "memory",
        pytest.param(MongoServer.FERRETDB_V1, marks=pytest.mark.mongo),
        pytest.param(MongoServer.MONGODB, marks=pytest.mark.mongo),
        pytest.param("cached", marks=[pytest.mark.mongo, pytest.mark.redis]),
    ]
)
def groups(request: pytest.FixtureRequest, clock: ManualClock) -> GroupStore:
    """Each `GroupStore` implementation, empty (on MongoDB in each server mode)."""
    if request.param == "memory":
        return MemoryGroupStore(limits=LIMITS, clock=clock)
    db: AsyncDatabase[Document] = request.getfixturevalue("mongo_db")
    if isinstance(request.param, MongoServer):
        return mongo_store(db, clock, request.param)
    redis: RedisClient = request.getfixturevalue("redis")
    keys: RedisKeys = request.getfixturevalue("redis_keys")
    return CachedGroupStore(mongo_store(db, clock), redis, keys=keys)


async def test_create_makes_the_owner_a_member(groups: GroupStore, clock: ManualClock) -> None:
    result = await groups.create(spec(), [U[2], U[3], U[2]], create_key="req-1")
    group = result.group
    assert result.created
    assert (group.name, group.owner_id, group.group_type) == ("coffee", OWNER, GroupType.NORMAL)
    assert (group.created_ms, group.updated_ms, group.disbanded, group.muted) == (
        clock.now_ms(),
        clock.now_ms(),
        False,
        False,
    )
    assert await groups.get(group.group_id) == group
    assert await groups.members(group.group_id) == [OWNER, U[2], U[3]]
    assert await groups.is_member(group.group_id, U[2])
    assert not await groups.is_member(group.group_id, U[9])
    other = await groups.create(spec(), [], create_key="req-2")
    assert other.group.group_id != group.group_id
    assert await groups.groups_of(OWNER) == sorted([group.group_id, other.group.group_id])
    assert await groups.groups_of(U[3]) == [group.group_id]
    assert await groups.get(NOWHERE) is None
    assert await groups.members(NOWHERE) == []
    assert not await groups.is_member(NOWHERE, OWNER)
    among = await groups.members_among(group.group_id, [U[9], U[2], OWNER, U[2]])
    assert among == {U[2], OWNER}
    assert await groups.members_among(group.group_id, []) == set()
    assert await groups.members_among(NOWHERE, [OWNER]) == set()


async def test_a_replayed_create_returns_the_first_group(groups: GroupStore) -> None:
    first = await groups.create(spec(), [U[2]], create_key="req-1")
    for _ in range(3):
        again = await groups.create(spec(name="other"), [U[2]], create_key="req-1")
        assert (again.group, again.created) == (first.group, False)
    assert await groups.groups_of(U[2]) == [first.group.group_id]


async def test_create_with_an_allocated_id(groups: GroupStore) -> None:
    first, second = await groups.allocate_id(), await groups.allocate_id()
    assert first != second
    assert await groups.get(first) is None  # allocating creates nothing
    made = await groups.create(spec(), [U[2]], create_key="api-1", group_id=second)
    assert (made.group.group_id, made.created) == (second, True)
    replay = await groups.create(spec(), [U[2]], create_key="api-1", group_id=second)
    assert (replay.group, replay.created) == (made.group, False)
    with pytest.raises(GroupIdTakenError):
        await groups.create(spec(), [], create_key="api-2", group_id=second)
    drawn = (await groups.create(spec(), [], create_key="api-3")).group.group_id
    assert drawn not in (first, second)  # create's own ids never collide with allocated ones
    assert await groups.members(second) == [OWNER, U[2]]


async def test_member_limits_by_type(groups: GroupStore) -> None:
    with pytest.raises(GroupFullError):
        await groups.create(spec(), U[1:6], create_key="too-many")  # 6 > 5 with the owner
    assert await groups.groups_of(OWNER) == []
    normal = (await groups.create(spec(), U[1:4], create_key="n")).group
    assert len(await groups.members(normal.group_id)) == 4
    change = await groups.add_members(normal.group_id, [U[4], U[2]])
    assert (change.changed, change.unchanged) == ([U[4]], [U[2]])
    with pytest.raises(GroupFullError):
        await groups.add_members(normal.group_id, [U[5], U[6]])
    # All or none: neither was added.
    assert await groups.members(normal.group_id) == U[:5]
    big = (await groups.create(spec(group_type=GroupType.SUPER), U[1:8], create_key="s")).group
    assert len(await groups.members(big.group_id)) == 8


async def test_add_and_remove_are_idempotent_and_bump_the_version(groups: GroupStore) -> None:
    group = (await groups.create(spec(), [U[2]], create_key="k")).group
    added = await groups.add_members(group.group_id, [U[3], U[4]])
    assert added.changed == [U[3], U[4]]
    again = await groups.add_members(group.group_id, [U[3], U[4]])
    assert (again.changed, again.unchanged) == ([], [U[3], U[4]])
    after_add = await groups.get(group.group_id)
    assert after_add is not None
    assert after_add.version == group.version + 1  # the replay changed nothing
    removed = await groups.remove_members(group.group_id, [U[3], U[9]])
    assert (removed.changed, removed.unchanged) == ([U[3]], [U[9]])
    assert (await groups.remove_members(group.group_id, [U[3]])).changed == []
    assert await groups.members(group.group_id) == [OWNER, U[2], U[4]]
    assert not await groups.is_member(group.group_id, U[3])
    assert await groups.groups_of(U[3]) == []
    final = await groups.get(group.group_id)
    assert final is not None
    assert final.version == group.version + 2
    with pytest.raises(UnknownGroupError):
        await groups.add_members(NOWHERE, [U[2]])
    with pytest.raises(UnknownGroupError):
        await groups.remove_members(NOWHERE, [U[2]])


async def test_update_changes_only_the_given_fields(groups: GroupStore, clock: ManualClock) -> None:
    group = (await groups.create(spec(intro="hello"), [], create_key="k")).group
    clock.advance(5)
    updated = await groups.update(
        group.group_id, GroupUpdate(mute_model=GroupMuteModel.ALL, announcement="quiet")
    )
    assert updated.muted
    assert (updated.announcement, updated.intro, updated.name) == ("quiet", "hello", "coffee")
    assert (updated.updated_ms, updated.created_ms) == (clock.now_ms(), group.created_ms)
    assert updated.version == group.version + 1
    assert await groups.get(group.group_id) == updated
    with pytest.raises(UnknownGroupError):
        await groups.update(NOWHERE, GroupUpdate(name="x"))


async def test_disband_keeps_a_tombstone_and_removes_members(groups: GroupStore) -> None:
    group = (await groups.create(spec(), [U[2], U[3]], create_key="k")).group
    disbanded = await groups.disband(group.group_id)
    assert disbanded.disbanded
    assert await groups.disband(group.group_id) == disbanded  # idempotent
    assert await groups.get(group.group_id) == disbanded
    assert await groups.members(group.group_id) == []
    assert not await groups.is_member(group.group_id, OWNER)
    assert await groups.groups_of(U[2]) == []
    with pytest.raises(GroupDisbandedError):
        await groups.add_members(group.group_id, [U[4]])
    with pytest.raises(GroupDisbandedError):
        await groups.update(group.group_id, GroupUpdate(name="back"))
    # A replayed create finds the tombstone and does not bring the members back.
    replay = await groups.create(spec(), [U[2]], create_key="k")
    assert (replay.group, replay.created) == (disbanded, False)
    assert await groups.members(group.group_id) == []
    with pytest.raises(UnknownGroupError):
        await groups.disband(NOWHERE)


async def test_acks_move_forward_only_and_only_for_members(groups: GroupStore) -> None:
    group = (await groups.create(spec(), [U[2], U[3]], create_key="k")).group
    gid = group.group_id
    batch = [
        MemberAck(gid, U[2], 5, 500),
        MemberAck(gid, U[2], 3, 900),  # out of order: seq stays 5, time moves to 900
        MemberAck(gid, U[3], 7, 700),
        MemberAck(gid, U[9], 9, 900),  # not a member
        MemberAck(NOWHERE, U[2], 9, 900),
    ]
    await groups.record_acks(batch)
    await groups.record_acks(batch)  # a replayed flush
    assert await groups.acks(gid) == {
        U[2]: MemberAck(gid, U[2], 5, 900),
        U[3]: MemberAck(gid, U[3], 7, 700),
    }
    await groups.record_acks([])
    await groups.remove_members(gid, [U[3]])
    assert set(await groups.acks(gid)) == {U[2]}


# --- the cache --------------------------------------------------------------------------


@pytest.fixture
def two_processes(
    mongo_db: AsyncDatabase[Document], redis: RedisClient, redis_keys: RedisKeys, clock: ManualClock
) -> tuple[CachedGroupStore, CachedGroupStore]:
    """Two cached stores sharing MongoDB and Redis, as two consumer processes do."""
    return (
        CachedGroupStore(mongo_store(mongo_db, clock), redis, keys=redis_keys, ttl=60),
        CachedGroupStore(mongo_store(mongo_db, clock), redis, keys=redis_keys, ttl=60),
    )


@pytest.mark.mongo
@pytest.mark.redis
async def test_a_change_in_one_process_is_seen_by_the_other_at_once(
    two_processes: tuple[CachedGroupStore, CachedGroupStore],
    redis: RedisClient,
    redis_keys: RedisKeys,
) -> None:
    writer, reader = two_processes
    gid = (await writer.create(spec(), [U[2]], create_key="k")).group.group_id
    assert await reader.is_member(gid, U[2])  # served from the cache the create filled
    ttl_ms = await redis.pttl(redis_keys.group_members(gid))
    assert 0 < ttl_ms <= 60_000
    await writer.add_members(gid, [U[3]])
    await writer.remove_members(gid, [U[2]])
    assert await reader.members(gid) == [OWNER, U[3]]
    assert not await reader.is_member(gid, U[2])
    assert await reader.members_among(gid, [U[2], U[3]]) == {U[3]}
    await writer.update(gid, GroupUpdate(mute_model=GroupMuteModel.ALL))
    group = await reader.get(gid)
    assert group is not None
    assert group.muted
    await writer.disband(gid)
    assert await reader.members(gid) == []
    group = await reader.get(gid)
    assert group is not None
    assert group.disbanded


@pytest.mark.mongo
@pytest.mark.redis
async def test_a_read_in_the_middle_of_a_create_does_not_hide_its_members(
    two_processes: tuple[CachedGroupStore, CachedGroupStore],
    mongo_db: AsyncDatabase[Document],
    clock: ManualClock,
) -> None:
    """The store inserts a new group, then its members, both at version 1: a reader that
    misses in between caches the owner alone, and the creating writer's put of the same
    version must replace that (it used to be refused until the TTL)."""
    writer, reader = two_processes
    inner = mongo_store(mongo_db, clock)
    # The create up to its group insert: the group, with the owner alone.
    gid = (await inner.create(spec(), [], create_key="k")).group.group_id
    assert await reader.members(gid) == [OWNER]  # cached: version 1, owner alone
    # The rest of it: the members (no version bump), then the writer's put.
    await inner.create(spec(), [U[2], U[3]], create_key="k")
    await writer.refresh(gid)
    assert await reader.members(gid) == [OWNER, U[2], U[3]]
    assert await reader.is_member(gid, U[3])
    # A reader's fill of that same version changes nothing (it may be the stale one).
    await reader.get(gid)
    assert await reader.members(gid) == [OWNER, U[2], U[3]]


@pytest.mark.mongo
@pytest.mark.redis
async def test_reads_go_through_the_cache_and_fill_it_on_a_miss(
    mongo_db: AsyncDatabase[Document],
    redis: RedisClient,
    redis_keys: RedisKeys,
    clock: ManualClock,
) -> None:
    inner = mongo_store(mongo_db, clock)
    cached = CachedGroupStore(inner, redis, keys=redis_keys)
    gid = (await inner.create(spec(), [U[2]], create_key="k")).group.group_id  # bypassing
    key = redis_keys.group_members(gid)
    assert await redis.exists(key) == 0
    assert await cached.members_among(gid, [U[2], U[3]]) == {U[2]}  # miss: filled
    assert await cached.is_member(gid, U[2])
    assert await redis.hget(key, "#v") == b"1"
    # A change behind the cache's back is not seen until the snapshot is refreshed ...
    await inner.add_members(gid, [U[3]])
    assert not await cached.is_member(gid, U[3])
    await cached.refresh(gid)
    assert await cached.is_member(gid, U[3])
    # ... or lapses (deleted here, as a TTL would).
    await inner.remove_members(gid, [U[3]])
    await redis.delete(key)
    assert await cached.members(gid) == [OWNER, U[2]]
    # Unknown groups are cached as such.
    assert await cached.get(NOWHERE) is None
    assert await redis.hget(redis_keys.group_members(NOWHERE), "#v") == b"0"
    assert await cached.members(NOWHERE) == []
    assert not await cached.is_member(NOWHERE, OWNER)


@pytest.mark.mongo
@pytest.mark.redis
async def test_an_old_snapshot_never_replaces_a_newer_one(
    mongo_db: AsyncDatabase[Document],
    redis: RedisClient,
    redis_keys: RedisKeys,
    clock: ManualClock,
) -> None:
    """A reader that read before a change and writes the cache after the writer did."""
    inner = mongo_store(mongo_db, clock)
    gid = (await inner.create(spec(), [U[2]], create_key="k")).group.group_id
    old_group = await inner.get(gid)
    old_members = frozenset(await inner.members(gid))
    writer = CachedGroupStore(inner, redis, keys=redis_keys)
    await writer.remove_members(gid, [U[2]])
    # The slow reader's put of its old snapshot arrives now, and is refused.
    slow_reader = CachedGroupStore(inner, redis, keys=redis_keys)
    await slow_reader._put(gid, old_group, old_members, writer=False)
    assert not await slow_reader.is_member(gid, U[2])
    assert await slow_reader.members(gid) == [OWNER]


@pytest.mark.mongo
@pytest.mark.redis
async def test_a_super_group_snapshot_round_trips(
    mongo_db: AsyncDatabase[Document], redis: RedisClient, redis_keys: RedisKeys, clock: ManualClock
) -> None:
    inner = MongoGroupStore(mongo_db, MongoSectionStore(mongo_db), clock=clock)
    cached = CachedGroupStore(inner, redis, keys=redis_keys)
    members = [UserId(u) for u in range(2, 2001)]
    gid = (
        await cached.create(spec(group_type=GroupType.SUPER), members, create_key="big")
    ).group.group_id
    assert await redis.hlen(redis_keys.group_members(gid)) == 2000 + 2
    got = await asyncio.gather(*(cached.is_member(gid, UserId(u)) for u in (1, 2000, 2001)))
    assert got == [True, True, False]
    assert await cached.members(gid) == [OWNER, *members]
    with pytest.raises(GroupFullError):
        await cached.add_members(gid, [UserId(5000)])
