"""`GroupStore` in memory: the embedded mode's, and the twin in the contract tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

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


class MemoryGroupStore:
    """In-memory `GroupStore`: the embedded mode's, and the twin in the contract tests."""

    def __init__(self, *, limits: GroupLimits | None = None, clock: Clock | None = None) -> None:
        self._limits = limits or GroupLimits()
        self._clock = clock or SystemClock()
        self._groups: dict[GroupId, Group] = {}
        self._by_key: dict[str, GroupId] = {}
        self._members: dict[GroupId, set[UserId]] = {}
        self._acks: dict[tuple[GroupId, UserId], MemberAck] = {}
        self._next_id = 0

    async def allocate_id(self) -> GroupId:
        """The next id."""
        self._next_id += 1
        return GroupId(self._next_id)

    async def create(
        self,
        spec: GroupSpec,
        member_ids: Iterable[UserId],
        *,
        create_key: str,
        group_id: GroupId | None = None,
    ) -> CreateResult:
        """Create a group (idempotent on `create_key`)."""
        members = initial_members(spec, member_ids, self._limits)
        existing = self._by_key.get(create_key)
        if existing is not None:
            group = self._groups[existing]
            if not group.disbanded:
                self._members[existing].update(members)
            return CreateResult(group, created=False)
        if group_id is None:
            group_id = await self.allocate_id()
        elif group_id in self._groups:
            raise GroupIdTakenError(f"group id {group_id} belongs to another create")
        group = new_group(group_id, spec, self._clock.now_ms())
        self._groups[group.group_id] = group
        self._by_key[create_key] = group.group_id
        self._members[group.group_id] = set(members)
        return CreateResult(group, created=True)

    async def get(self, group_id: GroupId) -> Group | None:
        """The group, or None."""
        return self._groups.get(group_id)

    def _bump(self, group: Group, **fields: object) -> Group:
        changed = msgspec.structs.replace(
            group, version=group.version + 1, updated_ms=self._clock.now_ms(), **fields
        )
        self._groups[group.group_id] = changed
        return changed

    async def update(self, group_id: GroupId, change: GroupUpdate) -> Group:
        """Apply `change`."""
        group = check_writable(group_id, self._groups.get(group_id))
        return self._bump(group, **change.fields())

    async def disband(self, group_id: GroupId) -> Group:
        """Disband (idempotent)."""
        group = self._groups.get(group_id)
        if group is None:
            raise UnknownGroupError(f"no group {group_id}")
        self._members[group_id] = set()
        if group.disbanded:
            return group
        return self._bump(group, disbanded=True)

    async def add_members(self, group_id: GroupId, user_ids: Iterable[UserId]) -> MembershipChange:
        """Add members, all or none."""
        group = check_writable(group_id, self._groups.get(group_id))
        current = self._members[group_id]
        wanted = sorted(set(user_ids))
        new = [u for u in wanted if u not in current]
        check_room(group, len(current), len(new), self._limits)
        if new:
            current.update(new)
            self._bump(group)
        return MembershipChange(new, [u for u in wanted if u not in new])

    async def remove_members(
        self, group_id: GroupId, user_ids: Iterable[UserId]
    ) -> MembershipChange:
        """Remove members."""
        group = self._groups.get(group_id)
        if group is None:
            raise UnknownGroupError(f"no group {group_id}")
        current = self._members[group_id]
        wanted = sorted(set(user_ids))
        gone = [u for u in wanted if u in current]
        if gone:
            current.difference_update(gone)
            for user in gone:
                self._acks.pop((group_id, user), None)
            self._bump(group)
        return MembershipChange(gone, [u for u in wanted if u not in gone])

    async def members(self, group_id: GroupId) -> list[UserId]:
        """Members, ascending."""
        return sorted(self._members.get(group_id, ()))

    async def is_member(self, group_id: GroupId, user_id: UserId) -> bool:
        """Whether `user_id` is a member."""
        return user_id in self._members.get(group_id, ())

    async def members_among(self, group_id: GroupId, user_ids: Iterable[UserId]) -> set[UserId]:
        """Those of `user_ids` that are members."""
        return set(user_ids) & self._members.get(group_id, set())

    async def groups_of(self, user_id: UserId) -> list[GroupId]:
        """The user's groups, ascending."""
        return sorted(g for g, members in self._members.items() if user_id in members)

    async def record_acks(self, acks: Sequence[MemberAck]) -> None:
        """Move members' acks forward."""
        for ack in acks:
            if ack.user_id not in self._members.get(ack.group_id, ()):
                continue
            key = (ack.group_id, ack.user_id)
            old = self._acks.get(key)
            self._acks[key] = (
                ack
                if old is None
                else MemberAck(
                    ack.group_id, ack.user_id, max(old.seq, ack.seq), max(old.ack_ms, ack.ack_ms)
                )
            )

    async def acks(self, group_id: GroupId) -> dict[UserId, MemberAck]:
        """Recorded acks of the members."""
        return {user: ack for (g, user), ack in self._acks.items() if g == group_id and ack.seq > 0}
