"""The ``group`` group: group management from ``im.up.group`` (keyed by group id).

Create (0x0501; keyed by the creator, the group has no id yet), disband (0x0503, owner
only), exit (0x0505; the owner cannot leave, it disbands), invite (0x0511, any member), kick
(0x0513, owner only), update (0x080F, owner only: name, intro, announcement, avatar, mute /
join / invite modes) and the server API's create (0x0811, with the id the API allocated;
never from a client). Each answers with its response and a ``result_code``: SUCCESS (200) —
OK (1) for the extension's GroupUpdateRsp — or, for a refusal, the `ExtResultCode` value
(docs/protocol-extensions.md, "Group management"). A body naming another user is refused
with FORBIDDEN like any other rule.

Every change is also a NOTIFICATION message in the group's timeline (`consumers.
notifications`), published to ``im.up.msg`` for the msg group to store — never written here
(one writer per timeline). The order of the steps is what makes a crash at any point lose
nothing:

1. check the request against the store (this handler is the group's only writer, so the
   checks stay true until its own write);
2. publish the notification, with the ``group.changed`` business event (`schemas.bizevents`,
   ``biz.events.group``, keyed by group id) in the same batch, and wait until it is durable —
   a replayed request republishes both: the notification with the same ``client_msg_id``,
   which the msg group stores once, the event with the same id;
3. change the store (idempotent: members already (not) there are left alone);
4. answer the requester and push GroupMemberChangedNotify (0x0515) to the devices of
   everyone the change concerns.

Create is the exception: the group exists only after the write, so the notification
follows it; a replay finds the same group by its create key (the trace id) and republishes.
An update that changes nothing (or a replay after its store write) announces nothing.

Requests without an origin come from the server API (``/v1/groups``): they act as the
operator their body's ``user_id`` names, with admin rights — no owner or membership check
(create, update, disband, invite, kick; the owner still cannot be kicked) — and nobody is answered
(the API checked what it could and answered 202); a refusal is logged. Members' devices get
GroupMemberChangedNotify as for any change.

The member cache (`store.redis.groups.CachedGroupStore`) re-puts its snapshot on every write
made through it, so the msg group sees a change before this handler answers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import IntEnum
from typing import TYPE_CHECKING

import msgspec
from google.protobuf.message import Message

from bus.base import Bus, Outgoing, Record, TopicPartition
from bus.topology import Topology
from consumers.effects import Effects
from consumers.notifications import notification_envelope, notification_msg
from consumers.query import group_info
from consumers.registry import consumer_group
from consumers.requests import Refusal, Request, acting_user, decode_request
from schemas.bizevents import (
    GroupAttribute,
    GroupChange,
    GroupChanged,
    encode_event,
    event_id,
)
from schemas.codes import (
    ErrorCode,
    ExtResultCode,
    GroupBeInviteMode,
    GroupJoinModel,
    GroupMemberChangedType,
    GroupMuteModel,
    MsgNotificationType,
)
from schemas.commands import Cmd, UplinkTopic, spec
from schemas.envelope import Origin, encode_envelope
from schemas.ids import GroupId, TraceId, UserId, group_conversation_id
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, group_pb2, message_pb2
from store.clock import Clock, SystemClock
from store.groups import (
    Group,
    GroupFullError,
    GroupIdTakenError,
    GroupLimits,
    GroupSpec,
    GroupStore,
    GroupUpdate,
)
from store.routes import RouteStore
from store.users import UserStore

if TYPE_CHECKING:
    from consumers.runtime import Runtime

__all__ = ["MAX_GROUP_NAME", "MAX_GROUP_TEXT", "GroupHandler", "build"]

log = logging.getLogger(__name__)

#: characters of a group name
MAX_GROUP_NAME = 128
#: characters of a group's intro, announcement or avatar URL
MAX_GROUP_TEXT = 4096


class _Done:
    """What one request produced: its response body, and who to notify of which change."""

    __slots__ = ("changed", "notify", "response")

    def __init__(self, response: Message) -> None:
        self.response = response
        self.notify: list[UserId] = []
        self.changed: list[group_pb2.GroupMemberChangedInfo] = []


class GroupHandler:
    """Serves the group management requests of ``im.up.group``, one at a time."""

    def __init__(
        self,
        *,
        bus: Bus,
        topology: Topology,
        users: UserStore,
        routes: RouteStore,
        groups: GroupStore,
        limits: GroupLimits | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._bus = bus
        self._topology = topology
        self._users = users
        self._routes = routes
        self._groups = groups
        self.limits = limits or GroupLimits()
        self._clock = clock or SystemClock()
        self._msg_topic = topology.topic(UplinkTopic.MSG).name
        self._events_topic = topology.topic(GroupChanged.topic).name

    async def handle(self, records: Sequence[Record]) -> None:
        """Serve the batch in order (later requests see earlier changes)."""
        for record in records:
            request = decode_request(record)
            effects = Effects(self._topology)
            await self._serve(request, effects)
            if len(effects):
                await effects.flush(self._bus)

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing is cached per partition."""

    async def close(self) -> None:
        """Nothing is buffered."""

    async def _serve(self, request: Request, effects: Effects) -> None:
        origin = request.origin
        admin = origin is None  # the server API (module docstring)
        msg = request.message
        trace = request.envelope.trace_id
        response_cmd = spec(request.cmd).response
        if response_cmd is None:
            log.warning("command 0x%04X is not a group request: ignored", request.cmd)
            return
        try:
            if origin is None:
                user = _operator(msg)
            else:
                user = acting_user(origin, getattr(msg, "user_id", 0), request.cmd)
            if isinstance(msg, group_pb2.GroupCreateReq):
                done = await self._create(user, msg.group_name, msg.member_id_list, trace)
            elif isinstance(msg, ext_pb2.ApiGroupCreateReq):
                if not admin:
                    raise Refusal(ExtResultCode.FORBIDDEN, "0x0811 is the server API's only")
                done = await self._create(
                    user, msg.group_name, msg.member_id_list, trace, GroupId(msg.group_id)
                )
            elif isinstance(msg, ext_pb2.GroupUpdateReq):
                done = await self._update(user, msg, trace, admin=admin)
            elif isinstance(msg, group_pb2.GroupDisbandingReq):
                done = await self._disband(user, msg, trace, admin=admin)
            elif isinstance(msg, group_pb2.GroupExitReq):
                # From the server API, the member its body names leaves (a deleted user).
                done = await self._exit(user, msg, trace)
            elif isinstance(msg, group_pb2.GroupInviteMemberReq):
                done = await self._invite(user, msg, trace, admin=admin)
            elif isinstance(msg, group_pb2.GroupKickOutMemberReq):
                done = await self._kick(user, msg, trace, admin=admin)
            else:
                log.warning("command 0x%04X is not a group request: ignored", request.cmd)
                return
        except Refusal as refusal:
            log.info("refused group command 0x%04X: %s", request.cmd, refusal.text)
            if origin is not None:
                effects.reply(origin, response_cmd, _refused(msg, origin, refusal.code), trace)
            return
        if origin is not None:
            effects.reply(origin, response_cmd, done.response, trace)
        if done.changed:
            notify = group_pb2.GroupMemberChangedNotify(
                user_id=user, group_id=getattr(msg, "group_id", 0), changed_list=done.changed
            )
            if isinstance(msg, group_pb2.GroupCreateReq | ext_pb2.ApiGroupCreateReq):
                assert isinstance(done.response, group_pb2.GroupCreateRsp)
                notify.group_id = done.response.group_info.group_id
            body = notify.SerializeToString()
            routes = await self._routes.get_many(done.notify)
            for uid, user_routes in routes.items():
                effects.push(
                    uid,
                    user_routes,
                    Cmd.GROUP_MEMBER_CHANGED_NOTIFY,
                    body,
                    trace,
                    skip=None if origin is None else (origin.gate_id, origin.conn_id),
                )

    # --- checks ----------------------------------------------------------------------------

    async def _live_group(self, group_id: int) -> Group:
        group = await self._groups.get(GroupId(group_id)) if group_id > 0 else None
        if group is None or group.disbanded:
            raise Refusal(ExtResultCode.NOT_FOUND, f"no group {group_id}")
        return group

    async def _existing_users(self, user_ids: Sequence[int]) -> list[UserId]:
        wanted = list(dict.fromkeys(UserId(u) for u in user_ids))
        if any(u <= 0 for u in wanted):
            raise Refusal(ExtResultCode.INVALID_PARAMETER, "member ids must be positive")
        found = {u.user_id for u in await self._users.list_users(wanted)}
        missing = [u for u in wanted if u not in found]
        if missing:
            raise Refusal(ExtResultCode.INVALID_PARAMETER, f"unknown users {missing}")
        return wanted

    async def _announce(
        self,
        kind: MsgNotificationType,
        group: Group,
        operator: UserId,
        affected: Sequence[UserId],
        trace: TraceId,
        *,
        attributes: dict[GroupAttribute, str | int] | None = None,
    ) -> message_pb2.MsgData:
        """Publish the change's notification to the group's timeline, and its ``group.changed``
        business event, durably, now — before the store changes, like the notification: a
        replay announces both again (the event with the same id)."""
        now = self._clock.now_ms()
        msg = notification_msg(
            kind,
            group_id=group.group_id,
            group_name=group.name,
            operator=operator,
            affected=affected,
            trace_id=trace,
            now_ms=now,
            attributes=attributes,
        )
        change = _CHANGES[kind]
        event = GroupChanged(
            id=event_id(GroupChanged, group.group_id, change, trace),
            ts=now,
            trace_id=trace,
            group_id=group.group_id,
            change=change,
            operator_user_id=operator,
            group_name=group.name,
            members=tuple(affected),
            attributes=attributes or {},
        )
        await self._bus.publish_batch(
            (
                Outgoing(
                    self._msg_topic,
                    encode_envelope(notification_envelope(msg, trace)),
                    key=group_conversation_id(group.group_id).encode(),
                ),
                Outgoing(self._events_topic, encode_event(event), key=event.key()),
            )
        )
        return msg

    # --- the requests ----------------------------------------------------------------------

    async def _create(
        self,
        user: UserId,
        name: str,
        member_ids: Sequence[int],
        trace: TraceId,
        group_id: GroupId | None = None,
    ) -> _Done:
        """Create (0x0501, or the API's 0x0811 with `group_id`)."""
        if not 0 < len(name) <= MAX_GROUP_NAME:
            raise Refusal(
                ExtResultCode.INVALID_PARAMETER, f"group_name must be 1-{MAX_GROUP_NAME} chars"
            )
        if group_id is not None and group_id <= 0:
            raise Refusal(ExtResultCode.INVALID_PARAMETER, "group_id must be positive")
        others = await self._existing_users([u for u in member_ids if u != user])
        spec = GroupSpec(name=name, owner_id=user)
        limit = self.limits.limit(spec.group_type)
        if len(others) + 1 > limit:
            raise Refusal(ExtResultCode.TOO_LARGE, f"{len(others) + 1} members exceed {limit}")
        try:
            result = await self._groups.create(spec, others, create_key=trace, group_id=group_id)
        except GroupFullError as exc:
            raise Refusal(ExtResultCode.TOO_LARGE, str(exc)) from None
        except GroupIdTakenError as exc:
            raise Refusal(ExtResultCode.INVALID_PARAMETER, str(exc)) from None
        group = result.group
        if group.disbanded:  # a replay of a create whose group has been disbanded since
            raise Refusal(ExtResultCode.NOT_FOUND, f"group {group.group_id} is disbanded")
        members = await self._groups.members(group.group_id)
        msg = await self._announce(MsgNotificationType.GROUP_CREATE, group, user, members, trace)
        done = _Done(
            group_pb2.GroupCreateRsp(
                user_id=user,
                result_code=ErrorCode.SUCCESS,
                group_info=group_info(group),
                member_id_list=members,
                attach_notification_msg=msg.SerializeToString(),
            )
        )
        done.notify = members
        done.changed = _changes(members, GroupMemberChangedType.ADD)
        return done

    async def _disband(
        self, user: UserId, req: group_pb2.GroupDisbandingReq, trace: TraceId, *, admin: bool
    ) -> _Done:
        group = await self._groups.get(GroupId(req.group_id)) if req.group_id > 0 else None
        if group is None:
            raise Refusal(ExtResultCode.NOT_FOUND, f"no group {req.group_id}")
        if group.owner_id != user and not admin:
            raise Refusal(ExtResultCode.FORBIDDEN, "only the owner may disband the group")
        rsp = group_pb2.GroupDisbandingRsp(
            user_id=user, group_id=req.group_id, result_code=ErrorCode.SUCCESS
        )
        if group.disbanded:  # already done (a replay): nothing more to say
            return _Done(rsp)
        members = await self._groups.members(group.group_id)
        msg = await self._announce(MsgNotificationType.GROUP_DISMISS, group, user, members, trace)
        await self._groups.disband(group.group_id)
        rsp.attach_notification_msg = msg.SerializeToString()
        done = _Done(rsp)
        done.notify = members
        done.changed = _changes(members, GroupMemberChangedType.DEL)
        return done

    async def _exit(self, user: UserId, req: group_pb2.GroupExitReq, trace: TraceId) -> _Done:
        group = await self._live_group(req.group_id)
        if group.owner_id == user:
            raise Refusal(
                ExtResultCode.FORBIDDEN, "the owner cannot leave the group; disband it instead"
            )
        rsp = group_pb2.GroupExitRsp(
            user_id=user, group_id=req.group_id, result_code=ErrorCode.SUCCESS
        )
        members = await self._groups.members(group.group_id)
        if user not in members:  # not (or no longer: a replay) a member: nothing to do
            return _Done(rsp)
        msg = await self._announce(MsgNotificationType.GROUP_LEAVE, group, user, [user], trace)
        await self._groups.remove_members(group.group_id, [user])
        rsp.attach_notification_msg = msg.SerializeToString()
        done = _Done(rsp)
        done.notify = members
        done.changed = _changes([user], GroupMemberChangedType.DEL)
        return done

    async def _invite(
        self, user: UserId, req: group_pb2.GroupInviteMemberReq, trace: TraceId, *, admin: bool
    ) -> _Done:
        group = await self._live_group(req.group_id)
        members = await self._groups.members(group.group_id)
        if user not in members and not admin:
            raise Refusal(ExtResultCode.FORBIDDEN, f"not a member of group {req.group_id}")
        invited = await self._existing_users(req.member_id_list)
        new = [u for u in invited if u not in members]
        limit = self.limits.limit(group.group_type)
        if len(members) + len(new) > limit:
            raise Refusal(
                ExtResultCode.TOO_LARGE,
                f"group has {len(members)} members; {len(new)} more exceed {limit}",
            )
        rsp = group_pb2.GroupInviteMemberRsp(
            user_id=user, group_id=req.group_id, result_code=ErrorCode.SUCCESS
        )
        if not new:
            return _Done(rsp)
        msg = await self._announce(MsgNotificationType.GROUP_BE_INVITE, group, user, new, trace)
        try:
            await self._groups.add_members(group.group_id, new)
        except GroupFullError as exc:
            # Only possible while a rebalance lets two members of this group handle one
            # group: the notification went out for an invite that did not happen.
            log.error("invite into group %d failed after its notification: %s", group.group_id, exc)
            raise Refusal(ExtResultCode.TOO_LARGE, str(exc)) from None
        rsp.attach_notification_msg = msg.SerializeToString()
        done = _Done(rsp)
        done.notify = sorted({*members, *new})
        done.changed = _changes(new, GroupMemberChangedType.ADD)
        return done

    async def _kick(
        self, user: UserId, req: group_pb2.GroupKickOutMemberReq, trace: TraceId, *, admin: bool
    ) -> _Done:
        group = await self._live_group(req.group_id)
        if group.owner_id != user and not admin:
            raise Refusal(ExtResultCode.FORBIDDEN, "only the owner may kick members")
        wanted = list(dict.fromkeys(UserId(u) for u in req.member_id_list))
        if group.owner_id in wanted:
            raise Refusal(ExtResultCode.INVALID_PARAMETER, "the owner cannot be kicked")
        members = await self._groups.members(group.group_id)
        gone = [u for u in wanted if u in members]
        rsp = group_pb2.GroupKickOutMemberRsp(
            user_id=user, group_id=req.group_id, result_code=ErrorCode.SUCCESS
        )
        if not gone:
            return _Done(rsp)
        msg = await self._announce(MsgNotificationType.GROUP_KICK, group, user, gone, trace)
        await self._groups.remove_members(group.group_id, gone)
        rsp.attach_notification_msg = msg.SerializeToString()
        done = _Done(rsp)
        done.notify = members
        done.changed = _changes(gone, GroupMemberChangedType.DEL)
        return done

    async def _update(
        self, user: UserId, req: ext_pb2.GroupUpdateReq, trace: TraceId, *, admin: bool
    ) -> _Done:
        group = await self._live_group(req.group_id)
        if group.owner_id != user and not admin:
            raise Refusal(ExtResultCode.FORBIDDEN, "only the owner may update the group")
        wanted = _requested_attributes(req)
        if not wanted:
            raise Refusal(ExtResultCode.INVALID_PARAMETER, "the update sets no attribute")
        # Only what differs is a change: a replay after the store write (or a no-op request)
        # announces nothing, and the notification lists exactly what moved.
        changed = {k: v for k, v in wanted.items() if getattr(group, _GROUP_FIELDS[k]) != v}
        rsp = ext_pb2.GroupUpdateRsp(
            user_id=user, group_id=req.group_id, result_code=ext_pb2.EXT_RESULT_CODE_OK
        )
        if not changed:
            rsp.group_info.CopyFrom(group_info(group))
            return _Done(rsp)
        update = msgspec.convert({_GROUP_FIELDS[k]: v for k, v in changed.items()}, GroupUpdate)
        announced = msgspec.structs.replace(group, **update.fields())
        msg = await self._announce(
            MsgNotificationType.GROUP_UPDATE, announced, user, [], trace, attributes=changed
        )
        updated = await self._groups.update(group.group_id, update)
        rsp.group_info.CopyFrom(group_info(updated))
        rsp.attach_notification_msg = msg.SerializeToString()
        return _Done(rsp)


def _operator(req: Message) -> UserId:
    """The operator an API request names (its body's ``user_id``, required)."""
    user_id = int(getattr(req, "user_id", 0))
    if user_id <= 0:
        raise Refusal(ExtResultCode.INVALID_PARAMETER, "an API group request needs user_id")
    return UserId(user_id)


#: the business event's ``change`` of each notification kind
_CHANGES: dict[MsgNotificationType, GroupChange] = {
    MsgNotificationType.GROUP_CREATE: "created",
    MsgNotificationType.GROUP_DISMISS: "disbanded",
    MsgNotificationType.GROUP_BE_INVITE: "members_added",
    MsgNotificationType.GROUP_KICK: "members_removed",
    MsgNotificationType.GROUP_LEAVE: "member_left",
    MsgNotificationType.GROUP_UPDATE: "updated",
}

#: the `store.groups.Group` field of each attribute an update may set
_GROUP_FIELDS: dict[GroupAttribute, str] = {
    "name": "name",
    "intro": "intro",
    "announcement": "announcement",
    "avatar_url": "avatar_url",
    "mute_model": "mute_model",
    "join_model": "join_model",
    "be_invite_model": "be_invite_model",
}


def _requested_attributes(req: ext_pb2.GroupUpdateReq) -> dict[GroupAttribute, str | int]:
    """The attributes `req` sets (proto3 presence), checked; `Refusal` when one is out of
    range."""
    texts: dict[GroupAttribute, str | None] = {
        "intro": req.group_intro if req.HasField("group_intro") else None,
        "announcement": req.announcement if req.HasField("announcement") else None,
        "avatar_url": req.group_avatar if req.HasField("group_avatar") else None,
    }
    modes: dict[GroupAttribute, tuple[int | None, type[IntEnum]]] = {
        "mute_model": (req.mute_model if req.HasField("mute_model") else None, GroupMuteModel),
        "join_model": (req.join_model if req.HasField("join_model") else None, GroupJoinModel),
        "be_invite_model": (
            req.be_invite_model if req.HasField("be_invite_model") else None,
            GroupBeInviteMode,
        ),
    }
    wanted: dict[GroupAttribute, str | int] = {}
    if req.HasField("group_name"):
        if not 0 < len(req.group_name) <= MAX_GROUP_NAME:
            raise Refusal(
                ExtResultCode.INVALID_PARAMETER, f"group_name must be 1-{MAX_GROUP_NAME} chars"
            )
        wanted["name"] = req.group_name
    for attribute, text in texts.items():
        if text is not None:
            if len(text) > MAX_GROUP_TEXT:
                raise Refusal(
                    ExtResultCode.INVALID_PARAMETER, f"{attribute} exceeds {MAX_GROUP_TEXT} chars"
                )
            wanted[attribute] = text
    for attribute, (mode, enum) in modes.items():
        if mode is not None:
            if int(mode) not in enum.__members__.values():
                raise Refusal(ExtResultCode.INVALID_PARAMETER, f"{attribute} {mode} is unknown")
            wanted[attribute] = int(mode)
    return wanted


def _changes(
    user_ids: Sequence[UserId], kind: GroupMemberChangedType
) -> list[group_pb2.GroupMemberChangedInfo]:
    return [
        group_pb2.GroupMemberChangedInfo(
            user_id=u, type=base_pb2.GroupMemberChangedType.ValueType(kind)
        )
        for u in user_ids
    ]


def _refused(req: Message, origin: Origin, code: ExtResultCode) -> Message:
    """The request's response carrying a refusal's code (never SUCCESS, never 0)."""
    user = origin.user_id
    group_id = getattr(req, "group_id", 0)
    if isinstance(req, group_pb2.GroupCreateReq | ext_pb2.ApiGroupCreateReq):
        return group_pb2.GroupCreateRsp(user_id=user, result_code=code)
    if isinstance(req, ext_pb2.GroupUpdateReq):
        return ext_pb2.GroupUpdateRsp(
            user_id=user, group_id=group_id, result_code=ext_pb2.ExtResultCode.ValueType(code)
        )
    if isinstance(req, group_pb2.GroupDisbandingReq):
        return group_pb2.GroupDisbandingRsp(user_id=user, group_id=group_id, result_code=code)
    if isinstance(req, group_pb2.GroupExitReq):
        return group_pb2.GroupExitRsp(user_id=user, group_id=group_id, result_code=code)
    if isinstance(req, group_pb2.GroupInviteMemberReq):
        return group_pb2.GroupInviteMemberRsp(user_id=user, group_id=group_id, result_code=code)
    assert isinstance(req, group_pb2.GroupKickOutMemberReq)
    return group_pb2.GroupKickOutMemberRsp(user_id=user, group_id=group_id, result_code=code)


@consumer_group("group")
def build(runtime: Runtime) -> GroupHandler:
    """The group handler on the runtime's stores."""
    return GroupHandler(
        bus=runtime.bus,
        topology=runtime.topology,
        users=runtime.users,
        routes=runtime.routes,
        groups=runtime.groups,
        limits=runtime.group_limits,
    )
