"""Groups and their members: the models and the `GroupStore` protocol.

Writers: every change of a group (create, update, disband, invite, kick, exit) is made by the
``group`` consumer group, whose topic ``im.up.group`` is keyed by group id — so each group has
one writer at a time, and the few checks that read before writing (the member limit, "is it
disbanded") rely on that. The one race left is a rebalance overlap, when a revoked owner may
still be finishing a batch: two concurrent invites could then both pass the limit check and
the group exceed its limit by at most one batch. Member ack times are written by the ``ack``
group, only with ``$max`` on existing memberships, so they never race with the above.

Idempotency: `GroupStore.create` is keyed by a caller-chosen ``create_key`` (e.g. the
request's trace id): a replay returns the first group. The id is drawn by `create` or, when
the caller must know it before the group exists (the server API answers with it), drawn
first with `GroupStore.allocate_id` and passed to `create`. Adding or removing members that are
already (not) there changes nothing. Every change increments the group's ``version``, which
the Redis member cache (`store.redis.groups`) uses to never let an old snapshot replace a
newer one.

Disbanding keeps the group document as a tombstone (``disbanded``; its id is never reused and
a replayed create still finds it) and removes every membership, so "member of" is always a
plain lookup.

Implementations: `store.memory.groups.MemoryGroupStore`, `store.mongo.groups.MongoGroupStore`, and
`store.redis.groups.CachedGroupStore` in front of either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec

from schemas.codes import GroupBeInviteMode, GroupJoinModel, GroupMuteModel, GroupType
from schemas.ids import GroupId, UserId
from store.errors import StoreError


class GroupError(StoreError):
    """Root of the group store's refusals."""


class UnknownGroupError(GroupError):
    """No such group."""


class GroupDisbandedError(GroupError):
    """The group was disbanded."""


class GroupFullError(GroupError):
    """The change would take the group above its member limit; nothing was changed."""


class GroupIdTakenError(GroupError):
    """A create named an id that another create (another ``create_key``) used."""


class GroupLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Member limits by group type (the seed's: NORMAL 200, SUPER 2000)."""

    normal: int = 200
    super_group: int = 2000

    def limit(self, group_type: int) -> int:
        """The member limit of a group of `group_type` (unknown types get NORMAL's)."""
        return self.super_group if group_type == GroupType.SUPER else self.normal


class GroupSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a new group is created with."""

    name: str
    owner_id: UserId
    group_type: int = GroupType.NORMAL
    join_model: int = GroupJoinModel.DEFAULT
    be_invite_model: int = GroupBeInviteMode.DEFAULT
    mute_model: int = GroupMuteModel.DEFAULT
    intro: str = ""
    announcement: str = ""
    avatar_url: str = ""


class GroupUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """A change of a group's attributes; None keeps the stored value."""

    name: str | None = None
    owner_id: UserId | None = None
    join_model: int | None = None
    be_invite_model: int | None = None
    mute_model: int | None = None
    intro: str | None = None
    announcement: str | None = None
    avatar_url: str | None = None

    def fields(self) -> dict[str, object]:
        """The attributes this update sets."""
        return {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not None
        }


class Group(msgspec.Struct, frozen=True, kw_only=True):
    """A group as stored."""

    group_id: GroupId
    name: str
    owner_id: UserId
    group_type: int
    join_model: int
    be_invite_model: int
    mute_model: int
    intro: str
    announcement: str
    avatar_url: str
    created_ms: int
    updated_ms: int
    version: int
    """Incremented by every change of the group or its members."""
    disbanded: bool = False

    @property
    def muted(self) -> bool:
        """Whether only the owner may send."""
        return self.mute_model == GroupMuteModel.ALL


class CreateResult(msgspec.Struct, frozen=True):
    """The group (the first one, for a replayed create) and whether this call created it."""

    group: Group
    created: bool


class MembershipChange(msgspec.Struct, frozen=True):
    """Which of the requested users changed membership and which already were as asked."""

    changed: list[UserId]
    unchanged: list[UserId]


class MemberAck(msgspec.Struct, frozen=True):
    """A member's delivery ack in a group: highest acked seq and when."""

    group_id: GroupId
    user_id: UserId
    seq: int
    ack_ms: int


class GroupStore(Protocol):
    """Where groups and memberships live."""

    async def allocate_id(self) -> GroupId:
        """A new group id, never returned before (by this or `create`); nothing is created."""
        ...

    async def create(
        self,
        spec: GroupSpec,
        member_ids: Iterable[UserId],
        *,
        create_key: str,
        group_id: GroupId | None = None,
    ) -> CreateResult:
        """Create a group with the owner and `member_ids` as members, with `group_id` (one
        `allocate_id` returned) or a new id; a replay with the same `create_key` returns the
        first group (completing its memberships). Raises `GroupFullError` when the members
        exceed the type's limit (nothing is created), `GroupIdTakenError` when `group_id`
        belongs to a group of another `create_key`."""
        ...

    async def get(self, group_id: GroupId) -> Group | None:
        """The group (disbanded ones too), or None."""
        ...

    async def update(self, group_id: GroupId, change: GroupUpdate) -> Group:
        """Apply `change` and return the group. Raises `UnknownGroupError`,
        `GroupDisbandedError`."""
        ...

    async def disband(self, group_id: GroupId) -> Group:
        """Mark the group disbanded and remove every membership (idempotent). Raises
        `UnknownGroupError`."""
        ...

    async def add_members(self, group_id: GroupId, user_ids: Iterable[UserId]) -> MembershipChange:
        """Add members (all or none: raises `GroupFullError` past the limit; also
        `UnknownGroupError`, `GroupDisbandedError`)."""
        ...

    async def remove_members(
        self, group_id: GroupId, user_ids: Iterable[UserId]
    ) -> MembershipChange:
        """Remove members (those who are not members are left alone)."""
        ...

    async def members(self, group_id: GroupId) -> list[UserId]:
        """The group's members, ascending (empty for unknown or disbanded groups)."""
        ...

    async def is_member(self, group_id: GroupId, user_id: UserId) -> bool:
        """Whether `user_id` is a member."""
        ...

    async def members_among(self, group_id: GroupId, user_ids: Iterable[UserId]) -> set[UserId]:
        """Those of `user_ids` that are members, in one request (a batch of acks asks for
        hundreds at once)."""
        ...

    async def groups_of(self, user_id: UserId) -> list[GroupId]:
        """The groups `user_id` is a member of, ascending."""
        ...

    async def record_acks(self, acks: Sequence[MemberAck]) -> None:
        """Move members' ack seqs and times forward (``$max``; non-members are ignored).
        One bulk write for the whole batch, whatever groups it spans."""
        ...

    async def acks(self, group_id: GroupId) -> dict[UserId, MemberAck]:
        """The recorded acks of the group's members."""
        ...


def new_group(group_id: GroupId, spec: GroupSpec, now_ms: int) -> Group:
    """A group as `create` stores it."""
    return Group(
        group_id=group_id,
        name=spec.name,
        owner_id=spec.owner_id,
        group_type=spec.group_type,
        join_model=spec.join_model,
        be_invite_model=spec.be_invite_model,
        mute_model=spec.mute_model,
        intro=spec.intro,
        announcement=spec.announcement,
        avatar_url=spec.avatar_url,
        created_ms=now_ms,
        updated_ms=now_ms,
        version=1,
    )


def initial_members(
    spec: GroupSpec, member_ids: Iterable[UserId], limits: GroupLimits
) -> list[UserId]:
    """The owner and `member_ids`, deduplicated; raises `GroupFullError` past the limit."""
    members = sorted({spec.owner_id, *member_ids})
    limit = limits.limit(spec.group_type)
    if len(members) > limit:
        raise GroupFullError(f"{len(members)} members exceed the limit of {limit}")
    return members


def check_room(group: Group, current: int, adding: int, limits: GroupLimits) -> None:
    """Raise `GroupFullError` unless `adding` more members fit."""
    limit = limits.limit(group.group_type)
    if current + adding > limit:
        raise GroupFullError(
            f"group {group.group_id} has {current} members; {adding} more exceed {limit}"
        )


def check_writable(group_id: GroupId, group: Group | None) -> Group:
    """The group, unless it is unknown or disbanded (then raise)."""
    if group is None:
        raise UnknownGroupError(f"no group {group_id}")
    if group.disbanded:
        raise GroupDisbandedError(f"group {group_id} is disbanded")
    return group
