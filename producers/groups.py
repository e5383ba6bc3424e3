"""Group endpoints: create, update, disband, add and remove members (through the group
consumer), list a user's groups and read a group (from the group store).

The ``group`` consumer group is the single writer of groups (`consumers.group`): a change
is published to ``im.up.group`` as a protocol request (GroupDisbandingReq,
GroupInviteMemberReq, GroupKickOutMemberReq, the extensions GroupUpdateReq 0x080F and
ApiGroupCreateReq 0x0811) with origin None — the API's admin path there: the body's
``user_id`` is the operator the notification names, no owner or membership check. The
consumer stores the change, puts the NOTIFICATION message in the group's timeline (through
``im.up.msg``), notifies members' devices and emits ``group.changed``. The API checks what it
can first (group exists, users exist, limits, values) and answers **202** with a request id
once the request is on the bus; a request the consumer still refuses (a race with another
change) is logged there.

Create answers with the group, because a business server needs its id: the API allocates
the id (`store.groups.GroupStore.allocate_id`, a reservation that creates nothing) and
publishes ApiGroupCreateReq with it, keyed by that id; the consumer creates exactly that
group, idempotently (a replay finds it by the request's trace id). The API then waits up to
`producers.deps.Pipeline.group_create_wait_s` for the group to exist — primary-key reads of
the group store, backing off from 5 ms to 100 ms — and answers **201** with it; if the
consumer is slower (lagging, or down), **202** with the same, final id and ``created``
false. Either way the request is durable on the bus before the answer.

Reads go to the group store directly (the Redis member cache in front of MongoDB).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Final

from google.protobuf.message import Message
from litestar import Response, delete, get, patch, post
from litestar.exceptions import ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, Parameter

from bus.base import Outgoing
from producers.deps import Pipeline, PipelineDep, StoresDep
from producers.messaging import require_users
from producers.models import (
    MAX_MEMBERS_PER_CALL,
    Accepted,
    GroupCreateBody,
    GroupCreated,
    GroupList,
    GroupMembersBody,
    GroupPatchBody,
    GroupView,
)
from producers.problems import PROBLEMS, ApiProblem
from producers.users import parse_id, parse_user_id
from schemas.codes import GroupType
from schemas.commands import Cmd, UplinkTopic
from schemas.envelope import encode_envelope, make_envelope
from schemas.ids import GroupId, TraceId, UserId, new_trace_id
from schemas.pb.coffeebus import ext_pb2
from schemas.pb.coffeechat import base_pb2, group_pb2
from store.groups import Group

__all__ = [
    "add_members",
    "create_group",
    "disband_group",
    "get_group",
    "list_groups",
    "remove_members",
    "update_group",
]

logger = logging.getLogger(__name__)

GroupIdPath = Annotated[str, Parameter(description="group id, a decimal integer")]
OperatorQuery = Annotated[
    int | None,
    Parameter(
        ge=1,
        le=2**63 - 1,
        description="who the notification names as the operator (default: the owner)",
        required=False,
    ),
]


def _view(group: Group, members: list[UserId] | None = None) -> GroupView:
    return GroupView(
        group_id=group.group_id,
        name=group.name,
        owner_id=group.owner_id,
        group_type=group.group_type,
        join_model=group.join_model,
        be_invite_model=group.be_invite_model,
        mute_model=group.mute_model,
        intro=group.intro,
        announcement=group.announcement,
        avatar_url=group.avatar_url,
        created_ms=group.created_ms,
        updated_ms=group.updated_ms,
        version=group.version,
        disbanded=group.disbanded,
        member_ids=None if members is None else [int(m) for m in members],
    )


async def _live_group(pipeline: Pipeline, raw: str) -> Group:
    group_id = GroupId(parse_id(raw, "group id"))
    group = await pipeline.groups.get(group_id)
    if group is None or group.disbanded:
        raise ApiProblem(404, "unknown-group", f"no group {group_id}")
    return group


async def _publish(pipeline: Pipeline, cmd: Cmd, body: Message, key: int) -> Accepted:
    trace = new_trace_id()
    envelope = make_envelope(cmd, body.SerializeToString(), trace_id=trace)
    topic = pipeline.topology.topic(UplinkTopic.GROUP).name
    await pipeline.bus.publish_batch([Outgoing(topic, encode_envelope(envelope), key=b"%d" % key)])
    logger.info("group request 0x%04X (key %d) published, trace %s", cmd, key, trace)
    return Accepted(request_id=trace)


#: first and longest pause between two reads of a group being created (seconds)
_FIRST_POLL_S: Final = 0.005
_MAX_POLL_S: Final = 0.1


async def _created(pipeline: Pipeline, group_id: GroupId, members: int) -> tuple[Group, int] | None:
    """The group and its member count once it exists with its `members` initial members, or
    None when `pipeline.group_create_wait_s` passes first.

    The store inserts a group and then its members, so "the group exists" alone may be read
    between the two (and answered 201 with the owner alone). Reads by primary key with a
    growing pause: the API has no subscription to the group consumer's results, and a create
    takes one consumer round trip (milliseconds embedded, tens of milliseconds on Kafka and
    FerretDB).
    """
    pause = _FIRST_POLL_S
    try:
        async with asyncio.timeout(pipeline.group_create_wait_s):
            while True:
                group = await pipeline.groups.get(group_id)
                if group is not None:
                    count = len(await pipeline.groups.members(group_id))
                    if count >= members:
                        return group, count
                await asyncio.sleep(pause)
                pause = min(pause * 2, _MAX_POLL_S)
    except TimeoutError:
        return None


@post(
    "/v1/groups",
    summary="Create a group",
    description=(
        "Creates a group owned by `owner_id` with `member_ids` (the owner is always a "
        "member). The API allocates the group id and publishes the request; the group "
        "consumer creates exactly that group, puts a GROUP_CREATE notification in its "
        "timeline and notifies the members' devices. 201 with the group once it exists; "
        "202 with the same (final) id and `created: false` if the consumer has not created "
        "it within the API's wait (it will)."
    ),
    tags=["groups"],
    responses={
        **PROBLEMS,
        202: ResponseSpec(
            GroupCreated, description="on the bus; the group consumer has not created it yet"
        ),
    },
    status_code=201,
)
async def create_group(
    data: JSONBody[GroupCreateBody], stores: StoresDep, pipeline: PipelineDep
) -> Response[GroupCreated]:
    """``POST /v1/groups``."""
    owner = UserId(data.owner_id)
    members = [UserId(u) for u in dict.fromkeys(data.member_ids) if u != owner]
    limit = pipeline.group_limits.normal
    if len(members) + 1 > limit:
        raise ApiProblem(
            409, "group-full", f"{len(members) + 1} members exceed the limit of {limit}"
        )
    await require_users(stores.users, [owner, *members])
    group_id = await pipeline.groups.allocate_id()
    req = ext_pb2.ApiGroupCreateReq(
        user_id=owner, group_id=group_id, group_name=data.name, member_id_list=members
    )
    request_id = TraceId(
        (await _publish(pipeline, Cmd.API_GROUP_CREATE_REQ, req, group_id)).request_id
    )
    found = await _created(pipeline, group_id, len(members) + 1)
    if found is None:
        logger.warning(
            "group %d not created within %.1f s (group consumer lagging?), trace %s",
            group_id,
            pipeline.group_create_wait_s,
            request_id,
        )
        pending = GroupCreated(
            group_id=group_id,
            name=data.name,
            group_type=GroupType.NORMAL,
            owner_id=owner,
            member_count=len(members) + 1,
            created=False,
            request_id=request_id,
        )
        return Response(pending, status_code=202)
    group, member_count = found
    created = GroupCreated(
        group_id=group.group_id,
        name=group.name,
        group_type=group.group_type,
        owner_id=group.owner_id,
        member_count=member_count,
        created=True,
        request_id=request_id,
    )
    return Response(created, status_code=201, headers={"Location": f"/v1/groups/{group.group_id}"})


#: the attributes of `GroupPatchBody` (the rest names the operator)
_PATCHABLE: Final = tuple(n for n in GroupPatchBody.__struct_fields__ if n != "operator_user_id")


@patch(
    "/v1/groups/{group_id:str}",
    summary="Update a group",
    description=(
        "Sets the attributes given (at least one): name, intro, announcement (the notice), "
        "avatar_url, mute_model (1: only the owner may send), join_model, be_invite_model. "
        "202: the group consumer applies what differs from the stored group, puts a "
        "GROUP_UPDATE notification (with the attributes set) in the group's timeline, "
        "which reaches every member, and emits `group.changed` (`updated`); a patch that "
        "changes nothing is accepted and announces nothing."
    ),
    tags=["groups"],
    responses=PROBLEMS,
    status_code=202,
)
async def update_group(
    group_id: GroupIdPath, data: JSONBody[GroupPatchBody], pipeline: PipelineDep
) -> Accepted:
    """``PATCH /v1/groups/{group_id}``."""
    if all(getattr(data, name) is None for name in _PATCHABLE):
        raise ValidationException(f"the patch sets no attribute (one of {', '.join(_PATCHABLE)})")
    group = await _live_group(pipeline, group_id)
    req = ext_pb2.GroupUpdateReq(
        user_id=data.operator_user_id or group.owner_id, group_id=group.group_id
    )
    if data.name is not None:
        req.group_name = data.name
    if data.intro is not None:
        req.group_intro = data.intro
    if data.announcement is not None:
        req.announcement = data.announcement
    if data.avatar_url is not None:
        req.group_avatar = data.avatar_url
    if data.mute_model is not None:
        req.mute_model = base_pb2.GroupMuteModel.ValueType(data.mute_model)
    if data.join_model is not None:
        req.join_model = base_pb2.GroupJoinModel.ValueType(data.join_model)
    if data.be_invite_model is not None:
        req.be_invite_model = base_pb2.GroupBeInviteMode.ValueType(data.be_invite_model)
    return await _publish(pipeline, Cmd.GROUP_UPDATE_REQ, req, group.group_id)


@delete(
    "/v1/groups/{group_id:str}",
    summary="Disband a group",
    description="202: the group consumer disbands it and notifies the members.",
    tags=["groups"],
    responses=PROBLEMS,
    status_code=202,
)
async def disband_group(
    group_id: GroupIdPath, pipeline: PipelineDep, operator_user_id: OperatorQuery = None
) -> Accepted:
    """``DELETE /v1/groups/{group_id}``."""
    group = await _live_group(pipeline, group_id)
    req = group_pb2.GroupDisbandingReq(
        user_id=operator_user_id or group.owner_id, group_id=group.group_id
    )
    return await _publish(pipeline, Cmd.GROUP_DISBAND_REQ, req, group.group_id)


@post(
    "/v1/groups/{group_id:str}/members",
    summary="Add members",
    description="202: the group consumer adds them (those already members are left alone).",
    tags=["groups"],
    responses=PROBLEMS,
    status_code=202,
)
async def add_members(
    group_id: GroupIdPath,
    data: JSONBody[GroupMembersBody],
    stores: StoresDep,
    pipeline: PipelineDep,
) -> Accepted:
    """``POST /v1/groups/{group_id}/members``."""
    group = await _live_group(pipeline, group_id)
    wanted = list(dict.fromkeys(UserId(u) for u in data.user_ids))
    await require_users(stores.users, wanted)
    current = set(await pipeline.groups.members(group.group_id))
    size = len(current | set(wanted))
    limit = pipeline.group_limits.limit(group.group_type)
    if size > limit:
        raise ApiProblem(409, "group-full", f"{size} members would exceed the limit of {limit}")
    req = group_pb2.GroupInviteMemberReq(
        user_id=data.operator_user_id or group.owner_id,
        group_id=group.group_id,
        member_id_list=wanted,
    )
    return await _publish(pipeline, Cmd.GROUP_INVITE_MEMBER_REQ, req, group.group_id)


@delete(
    "/v1/groups/{group_id:str}/members",
    summary="Remove members",
    description=(
        "`?user_id=1&user_id=2`: 202, the group consumer removes them (non-members are left "
        "alone). The owner cannot be removed: disband the group instead."
    ),
    tags=["groups"],
    responses=PROBLEMS,
    status_code=202,
)
async def remove_members(
    group_id: GroupIdPath,
    pipeline: PipelineDep,
    user_id: Annotated[
        list[str], Parameter(description="a member to remove (repeat the parameter)")
    ],
    operator_user_id: OperatorQuery = None,
) -> Accepted:
    """``DELETE /v1/groups/{group_id}/members?user_id=...``."""
    group = await _live_group(pipeline, group_id)
    if not 0 < len(user_id) <= MAX_MEMBERS_PER_CALL:
        raise ValidationException(f"name 1-{MAX_MEMBERS_PER_CALL} user_id parameters")
    wanted = list(dict.fromkeys(parse_user_id(raw) for raw in user_id))
    if group.owner_id in wanted:
        raise ValidationException("the owner cannot be removed; disband the group instead")
    req = group_pb2.GroupKickOutMemberReq(
        user_id=operator_user_id or group.owner_id, group_id=group.group_id, member_id_list=wanted
    )
    return await _publish(pipeline, Cmd.GROUP_KICK_MEMBER_REQ, req, group.group_id)


@get("/v1/groups", summary="A user's groups", tags=["groups"], responses=PROBLEMS)
async def list_groups(
    pipeline: PipelineDep,
    user_id: Annotated[str, Parameter(description="the member's user id")],
) -> GroupList:
    """``GET /v1/groups?user_id=``."""
    uid = parse_user_id(user_id)
    views = []
    for gid in await pipeline.groups.groups_of(uid):
        group = await pipeline.groups.get(gid)
        if group is not None and not group.disbanded:
            views.append(_view(group))
    return GroupList(user_id=uid, groups=views)


@get(
    "/v1/groups/{group_id:str}",
    summary="A group and its members",
    tags=["groups"],
    responses=PROBLEMS,
)
async def get_group(group_id: GroupIdPath, pipeline: PipelineDep) -> GroupView:
    """``GET /v1/groups/{group_id}`` (a disbanded group shows ``disbanded`` and no members)."""
    gid = GroupId(parse_id(group_id, "group id"))
    group = await pipeline.groups.get(gid)
    if group is None:
        raise ApiProblem(404, "unknown-group", f"no group {gid}")
    return _view(group, await pipeline.groups.members(gid))
