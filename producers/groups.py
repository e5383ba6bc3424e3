"""Group endpoints: create, disband, add and remove members (through the group consumer),
list a user's groups and read a group (from the group store).

The ``group`` consumer group is the single writer of groups (`consumers.group`): a change
is published to ``im.up.group`` as the protocol's own request (GroupCreateReq,
GroupDisbandingReq, GroupInviteMemberReq, GroupKickOutMemberReq) with origin None — the
API's admin path there: the body's ``user_id`` is the operator the notification names, no
owner or membership check. The consumer stores the change, puts the NOTIFICATION message in
the group's timeline (through ``im.up.msg``) and notifies members' devices. The API checks
what it can first (group exists, users exist, limits) and answers **202** with a request id
once the request is on the bus; a request the consumer still refuses (a race with another
change) is logged there.

Reads go to the group store directly (the Redis member cache in front of MongoDB).
"""

from __future__ import annotations

import logging
from typing import Annotated

from google.protobuf.message import Message
from litestar import delete, get, post
from litestar.exceptions import ValidationException
from litestar.params import JSONBody, Parameter

from bus.base import Outgoing
from producers.deps import Pipeline, PipelineDep, StoresDep
from producers.messaging import require_users
from producers.models import (
    MAX_MEMBERS_PER_CALL,
    Accepted,
    GroupCreateBody,
    GroupList,
    GroupMembersBody,
    GroupView,
)
from producers.problems import PROBLEMS, ApiProblem
from producers.users import parse_id, parse_user_id
from schemas.commands import Cmd, UplinkTopic
from schemas.envelope import encode_envelope, make_envelope
from schemas.ids import GroupId, UserId, new_trace_id
from schemas.pb.coffeechat import group_pb2
from store.groups import Group

__all__ = [
    "add_members",
    "create_group",
    "disband_group",
    "get_group",
    "list_groups",
    "remove_members",
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


@post(
    "/v1/groups",
    summary="Create a group",
    description=(
        "Creates a group owned by `owner_id` with `member_ids` (the owner is always a "
        "member). 202: the group consumer creates it, puts a GROUP_CREATE notification in "
        "its timeline and notifies the members' devices; the new group then shows in "
        "`GET /v1/groups?user_id=<owner_id>`."
    ),
    tags=["groups"],
    responses=PROBLEMS,
    status_code=202,
)
async def create_group(
    data: JSONBody[GroupCreateBody], stores: StoresDep, pipeline: PipelineDep
) -> Accepted:
    """``POST /v1/groups``."""
    owner = UserId(data.owner_id)
    members = [UserId(u) for u in dict.fromkeys(data.member_ids) if u != owner]
    limit = pipeline.group_limits.normal
    if len(members) + 1 > limit:
        raise ApiProblem(
            409, "group-full", f"{len(members) + 1} members exceed the limit of {limit}"
        )
    await require_users(stores.users, [owner, *members])
    req = group_pb2.GroupCreateReq(user_id=owner, group_name=data.name, member_id_list=members)
    return await _publish(pipeline, Cmd.GROUP_CREATE_REQ, req, owner)


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
