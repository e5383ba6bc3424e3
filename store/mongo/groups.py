"""`GroupStore` on MongoDB ``groups`` and ``group_members`` (PyMongo's asyncio API).

Documents:

- ``groups``: ``{_id: group id, create_key, name, owner, type, join, invite, mute, intro,
  notice, avatar, ctime, utime, version, disbanded}``; unique ``create_key``.
- ``group_members``: ``{_id: "<group>|<user>", group, user, joined, ack_seq, ack_ms}``;
  ``is_member`` and ack updates are primary-key operations.

Group ids come from a `store.seq.SectionStore` counter (timeline ``#group-ids``, one id per
reservation), so they are unique across processes without a read-modify-write. Writes follow
the order the member cache relies on (`store.redis.groups`): memberships first, then the
group's ``version`` increment.

Intended shard keys: ``groups`` by ``_id``; ``group_members`` by ``group`` (a user's groups
are then a scatter-gather query, rare enough: the group list request).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from schemas.ids import GroupId, UserId
from store.clock import Clock, SystemClock
from store.groups import (
    CreateResult,
    Group,
    GroupIdTakenError,
    GroupLimits,
    GroupSpec,
    GroupUpdate,
    MemberAck,
    MembershipChange,
    UnknownGroupError,
    check_room,
    check_writable,
    initial_members,
    new_group,
)
from store.mongo.bulk import insert_new, update_all, update_op
from store.mongo.client import Document
from store.mongo.collections import Collection
from store.mongo.compat import MongoServer
from store.seq import SectionStore

GROUP_ID_TIMELINE = "#group-ids"

_FIELDS = {
    "name": "name",
    "owner_id": "owner",
    "join_model": "join",
    "be_invite_model": "invite",
    "mute_model": "mute",
    "intro": "intro",
    "announcement": "notice",
    "avatar_url": "avatar",
}


def member_key(group_id: int, user_id: int) -> str:
    """The ``_id`` of a membership."""
    return f"{group_id}|{user_id}"


def _group_doc(group: Group, create_key: str) -> Document:
    return {
        "_id": group.group_id,
        "create_key": create_key,
        "type": group.group_type,
        **{short: getattr(group, name) for name, short in _FIELDS.items()},
        "ctime": group.created_ms,
        "utime": group.updated_ms,
        "version": group.version,
        "disbanded": group.disbanded,
    }


def _group_from_doc(doc: Document) -> Group:
    return Group(
        group_id=GroupId(int(doc["_id"])),
        name=doc["name"],
        owner_id=UserId(int(doc["owner"])),
        group_type=int(doc["type"]),
        join_model=int(doc["join"]),
        be_invite_model=int(doc["invite"]),
        mute_model=int(doc["mute"]),
        intro=doc["intro"],
        announcement=doc["notice"],
        avatar_url=doc["avatar"],
        created_ms=int(doc["ctime"]),
        updated_ms=int(doc["utime"]),
        version=int(doc["version"]),
        disbanded=bool(doc["disbanded"]),
    )


class MongoGroupStore:
    """`GroupStore` on a MongoDB database (indexes from `store.mongo.client.ensure_indexes`).

    Args:
        db: the database holding ``groups`` and ``group_members``.
        ids: where group ids are drawn from (normally a `store.mongo.seq.MongoSectionStore`).
        limits: member limits by group type.
        clock: source of created/updated times.
        server: the server's mode (`store.mongo.compat`), for the ack bulk writes.
    """

    def __init__(
        self,
        db: AsyncDatabase[Document],
        ids: SectionStore,
        *,
        limits: GroupLimits | None = None,
        clock: Clock | None = None,
        server: MongoServer = MongoServer.FERRETDB_V1,
    ) -> None:
        self._groups: AsyncCollection[Document] = db[Collection.GROUPS]
        self._members: AsyncCollection[Document] = db[Collection.GROUP_MEMBERS]
        self._ids = ids
        self._limits = limits or GroupLimits()
        self._clock = clock or SystemClock()
        self._server = server

    async def allocate_id(self) -> GroupId:
        """An id from the ``#group-ids`` counter (one reservation, no read-modify-write)."""
        return GroupId(await self._ids.reserve(GROUP_ID_TIMELINE, 1))

    async def create(
        self,
        spec: GroupSpec,
        member_ids: Iterable[UserId],
        *,
        create_key: str,
        group_id: GroupId | None = None,
    ) -> CreateResult:
        """Insert the group, then its memberships; a replay finds the group by its key."""
        members = initial_members(spec, member_ids, self._limits)
        existing = await self._groups.find_one({"create_key": create_key})
        if existing is None:
            if group_id is None:
                group_id = await self.allocate_id()
            group = new_group(group_id, spec, self._clock.now_ms())
            try:
                await self._groups.insert_one(_group_doc(group, create_key))
                created = True
            except DuplicateKeyError:
                # A concurrent replay of the same create won; its id is the group's.
                existing = await self._groups.find_one({"create_key": create_key})
                if existing is None:
                    raise GroupIdTakenError(
                        f"group id {group_id} belongs to another create"
                    ) from None
        if existing is not None:
            group, created = _group_from_doc(existing), False
            if group.disbanded:
                return CreateResult(group, created=False)
        await self._insert_members(group.group_id, members)
        return CreateResult(group, created=created)

    async def _insert_members(self, group_id: GroupId, user_ids: Sequence[UserId]) -> None:
        now = self._clock.now_ms()
        await insert_new(
            self._members,
            [
                {
                    "_id": member_key(group_id, user),
                    "group": group_id,
                    "user": user,
                    "joined": now,
                    "ack_seq": 0,
                    "ack_ms": 0,
                }
                for user in user_ids
            ],
        )

    async def get(self, group_id: GroupId) -> Group | None:
        """The group, or None."""
        doc = await self._groups.find_one({"_id": group_id})
        return None if doc is None else _group_from_doc(doc)

    async def _bump(self, group_id: GroupId, fields: Document | None = None) -> Group:
        doc = await self._groups.find_one_and_update(
            {"_id": group_id},
            {"$set": {**(fields or {}), "utime": self._clock.now_ms()}, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise UnknownGroupError(f"no group {group_id}")
        return _group_from_doc(doc)

    async def update(self, group_id: GroupId, change: GroupUpdate) -> Group:
        """Apply `change`."""
        check_writable(group_id, await self.get(group_id))
        return await self._bump(group_id, {_FIELDS[k]: v for k, v in change.fields().items()})

    async def disband(self, group_id: GroupId) -> Group:
        """Mark disbanded, then remove the memberships (a replay finishes the removal)."""
        group = await self.get(group_id)
        if group is None:
            raise UnknownGroupError(f"no group {group_id}")
        if not group.disbanded:
            group = await self._bump(group_id, {"disbanded": True})
        await self._members.delete_many({"group": group_id})
        return group

    async def add_members(self, group_id: GroupId, user_ids: Iterable[UserId]) -> MembershipChange:
        """Add members, all or none (limit checked by the group's single writer)."""
        group = check_writable(group_id, await self.get(group_id))
        current = set(await self.members(group_id))
        wanted = sorted(set(user_ids))
        new = [u for u in wanted if u not in current]
        check_room(group, len(current), len(new), self._limits)
        if new:
            await self._insert_members(group_id, new)
            await self._bump(group_id)
        return MembershipChange(new, [u for u in wanted if u not in new])

    async def remove_members(
        self, group_id: GroupId, user_ids: Iterable[UserId]
    ) -> MembershipChange:
        """Remove members."""
        if await self.get(group_id) is None:
            raise UnknownGroupError(f"no group {group_id}")
        current = set(await self.members(group_id))
        wanted = sorted(set(user_ids))
        gone = [u for u in wanted if u in current]
        if gone:
            await self._members.delete_many(
                {"_id": {"$in": [member_key(group_id, u) for u in gone]}}
            )
            await self._bump(group_id)
        return MembershipChange(gone, [u for u in wanted if u not in gone])

    async def members(self, group_id: GroupId) -> list[UserId]:
        """Members, ascending."""
        cursor = self._members.find({"group": group_id}, {"user": True}).sort("user")
        return [UserId(int(doc["user"])) async for doc in cursor]

    async def is_member(self, group_id: GroupId, user_id: UserId) -> bool:
        """Whether `user_id` is a member (a primary-key lookup)."""
        return await self._members.find_one({"_id": member_key(group_id, user_id)}) is not None

    async def members_among(self, group_id: GroupId, user_ids: Iterable[UserId]) -> set[UserId]:
        """Those of `user_ids` that are members: one query on the (group, user) index."""
        wanted = sorted(set(user_ids))
        if not wanted:
            return set()
        cursor = self._members.find({"group": group_id, "user": {"$in": wanted}}, {"user": True})
        return {UserId(int(doc["user"])) async for doc in cursor}

    async def groups_of(self, user_id: UserId) -> list[GroupId]:
        """The user's groups, ascending."""
        cursor = self._members.find({"user": user_id}, {"group": True}).sort("group")
        return [GroupId(int(doc["group"])) async for doc in cursor]

    async def record_acks(self, acks: Sequence[MemberAck]) -> None:
        """One bulk of ``$max`` updates on existing memberships."""
        await update_all(
            self._members,
            [
                update_op(
                    {"_id": member_key(a.group_id, a.user_id)},
                    {"$max": {"ack_seq": a.seq, "ack_ms": a.ack_ms}},
                )
                for a in acks
            ],
            server=self._server,
        )

    async def acks(self, group_id: GroupId) -> dict[UserId, MemberAck]:
        """Recorded acks of the members."""
        cursor = self._members.find({"group": group_id, "ack_seq": {"$gt": 0}})
        return {
            UserId(int(doc["user"])): MemberAck(
                group_id, UserId(int(doc["user"])), int(doc["ack_seq"]), int(doc["ack_ms"])
            )
            async for doc in cursor
        }
