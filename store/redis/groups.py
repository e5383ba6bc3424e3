"""`CachedGroupStore`: a Redis cache of each group and its member set in front of a store.

Every group message needs "is the sender a member, is the group muted, who are the
members"; this answers them from one Redis hash per group
(`store.redis.keys.RedisKeys.group_members`)::

    #v  -> the group's version (`store.groups.Group.version`)
    #g  -> the group, msgpack-encoded ("" = no such group)
    <user id> -> "1", one field per member

``HMGET #v <user>`` answers "member?" in O(1) and ``HGETALL`` gives the member list (2,000
fields for a SUPER group) — the same costs as ``SISMEMBER``/``SMEMBERS`` on a set, but with the
version in the same key, so replacing a snapshot is a single-key script (Redis Cluster safe
without hash tags).

Coherence without transactions: a snapshot is taken by reading the group (its version) and
*then* its members; writers change the members first and bump the version after. A script
replaces the cached snapshot only with a strictly newer version. So a reader that filled the
cache from an old read can never overwrite what a writer put after its change, and a writer's
put always contains its own change. Reads fill on a miss (read-through); every write through
this class re-puts the snapshot at once (other processes see the change immediately), and the
TTL bounds only what a crash between the store write and the cache write leaves (the replayed
write re-puts it).

A create is the one write that does not follow "members first, version after": the store
inserts the group (version 1) and then its members. A reader that misses in between caches
version 1 with the owner alone, and a writer's put of the same version used to be refused —
the members stayed invisible until the TTL (seen: the API's 201 reading right after a
create, then the GROUP_CREATE notification reaching nobody but the owner). So a writer's put,
made after its own write completed, may replace a snapshot of the *same* version; a reader's
fill still needs a strictly newer one, so a slow reader cannot undo the writer's put.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from schemas.ids import GroupId, UserId
from store.groups import (
    CreateResult,
    Group,
    GroupSpec,
    GroupStore,
    GroupUpdate,
    MemberAck,
    MembershipChange,
)
from store.redis.client import RedisClient
from store.redis.keys import RedisKeys

VERSION_FIELD: Final = b"#v"
GROUP_FIELD: Final = b"#g"

# KEYS[1] cache key; ARGV[1] version; ARGV[2] TTL ms; ARGV[3] "1" for a writer's put (may
# replace the same version), "0" for a reader's fill (only a newer one); ARGV[4] encoded group
# ("" = none); ARGV[5..] member ids.
_PUT: Final = """
local cur = redis.call('HGET', KEYS[1], '#v')
if cur then
  local have, put = tonumber(cur), tonumber(ARGV[1])
  if have > put or (have == put and ARGV[3] ~= '1') then
    return 0
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '#v', ARGV[1], '#g', ARGV[4])
local fields = {}
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = '1'
  if #fields >= 1000 then
    redis.call('HSET', KEYS[1], unpack(fields))
    fields = {}
  end
end
if #fields > 0 then
  redis.call('HSET', KEYS[1], unpack(fields))
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class _Snapshot(msgspec.Struct, frozen=True):
    group: Group | None
    members: frozenset[UserId]


class CachedGroupStore:
    """A `GroupStore` reading groups and members through Redis, writing through `inner`.

    Args:
        inner: the authoritative store (normally `store.mongo.groups.MongoGroupStore`).
        redis: a client with ``decode_responses=False``.
        keys: the Redis key namespace.
        ttl: seconds a cached snapshot lives.
    """

    def __init__(
        self,
        inner: GroupStore,
        redis: RedisClient,
        *,
        keys: RedisKeys | None = None,
        ttl: float = 600.0,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._inner = inner
        self._redis = redis
        self._keys = keys or RedisKeys()
        self._ttl_ms = max(1, round(ttl * 1000))
        self._put_script = redis.register_script(_PUT)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(Group)

    # --- cache -------------------------------------------------------------------------

    async def _load(self, group_id: GroupId, *, writer: bool = False) -> _Snapshot:
        # The group (and so its version) strictly before the members: see the module doc.
        group = await self._inner.get(group_id)
        members = frozenset(await self._inner.members(group_id)) if group else frozenset()
        await self._put(group_id, group, members, writer=writer)
        return _Snapshot(group, members)

    async def _put(
        self, group_id: GroupId, group: Group | None, members: frozenset[UserId], *, writer: bool
    ) -> None:
        await self._put_script(
            keys=[self._keys.group_members(group_id)],
            args=[
                0 if group is None else group.version,
                self._ttl_ms,
                1 if writer else 0,
                b"" if group is None else self._encoder.encode(group),
                *sorted(members),
            ],
        )

    async def refresh(self, group_id: GroupId) -> None:
        """Re-put the group's snapshot from the store after a write of this process: it may
        replace a snapshot of the same version (module docstring, "A create")."""
        await self._load(group_id, writer=True)

    # --- reads through the cache -------------------------------------------------------

    async def get(self, group_id: GroupId) -> Group | None:
        """The group, from the cache when it holds it."""
        data = await self._redis.hget(self._keys.group_members(group_id), GROUP_FIELD)
        if data is None:
            return (await self._load(group_id)).group
        return self._decoder.decode(_as_bytes(data)) if data else None

    async def members(self, group_id: GroupId) -> list[UserId]:
        """Members, ascending, from the cache when it holds them."""
        fields = [_as_bytes(f) for f in await self._redis.hkeys(self._keys.group_members(group_id))]
        if VERSION_FIELD not in fields:
            return sorted((await self._load(group_id)).members)
        return sorted(UserId(int(f)) for f in fields if not f.startswith(b"#"))

    async def is_member(self, group_id: GroupId, user_id: UserId) -> bool:
        """Whether `user_id` is a member: one ``HMGET`` on a hit."""
        version, present = await self._redis.hmget(
            self._keys.group_members(group_id), [VERSION_FIELD, str(user_id)]
        )
        if version is None:
            return user_id in (await self._load(group_id)).members
        return present is not None

    async def members_among(self, group_id: GroupId, user_ids: Iterable[UserId]) -> set[UserId]:
        """Those of `user_ids` that are members: one ``HMGET`` on a hit."""
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return set()
        version, *present = await self._redis.hmget(
            self._keys.group_members(group_id), [VERSION_FIELD, *(str(u) for u in wanted)]
        )
        if version is None:
            members = (await self._load(group_id)).members
            return {u for u in wanted if u in members}
        return {u for u, p in zip(wanted, present, strict=True) if p is not None}

    # --- writes through the store, then the cache --------------------------------------

    async def allocate_id(self) -> GroupId:
        """An id from the store."""
        return await self._inner.allocate_id()

    async def create(
        self,
        spec: GroupSpec,
        member_ids: Iterable[UserId],
        *,
        create_key: str,
        group_id: GroupId | None = None,
    ) -> CreateResult:
        """Create in the store; cache the new snapshot."""
        result = await self._inner.create(
            spec, member_ids, create_key=create_key, group_id=group_id
        )
        await self.refresh(result.group.group_id)
        return result

    async def update(self, group_id: GroupId, change: GroupUpdate) -> Group:
        """Update in the store; re-put the snapshot."""
        group = await self._inner.update(group_id, change)
        await self.refresh(group_id)
        return group

    async def disband(self, group_id: GroupId) -> Group:
        """Disband in the store; re-put the snapshot."""
        group = await self._inner.disband(group_id)
        await self.refresh(group_id)
        return group

    async def add_members(self, group_id: GroupId, user_ids: Iterable[UserId]) -> MembershipChange:
        """Add in the store; re-put the snapshot."""
        change = await self._inner.add_members(group_id, user_ids)
        await self.refresh(group_id)
        return change

    async def remove_members(
        self, group_id: GroupId, user_ids: Iterable[UserId]
    ) -> MembershipChange:
        """Remove in the store; re-put the snapshot."""
        change = await self._inner.remove_members(group_id, user_ids)
        await self.refresh(group_id)
        return change

    # --- not cached --------------------------------------------------------------------

    async def groups_of(self, user_id: UserId) -> list[GroupId]:
        """The user's groups (from the store)."""
        return await self._inner.groups_of(user_id)

    async def record_acks(self, acks: Sequence[MemberAck]) -> None:
        """Record acks in the store."""
        await self._inner.record_acks(acks)

    async def acks(self, group_id: GroupId) -> dict[UserId, MemberAck]:
        """Recorded acks (from the store)."""
        return await self._inner.acks(group_id)
