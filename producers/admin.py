"""Session administration: kick, ban, unban, delete a user, rotate a token — each taking
effect on every gate within a second (docs/integration.md, docs/security.md).

Every action changes the user store first (a ban, a tombstone, a new token: the
revision-checked token cache follows at once, so no new login gets past it), then tells
every live gate (`store.routes.RouteStore.live_gates`) with a `schemas.envelope.KickUser` on
its topic — a gate holds connections of any user, and a user may be on several gates — and
answers once those records are durable on the bus. Each gate closes the user's connections
the record selects, after a KickNotify, and re-checks any login of that user it was checking
at that moment (`gateway.server`). Last, a business event goes to ``biz.events.user``
(`schemas.bizevents`: ``user.kicked``, ``user.banned``, ``user.unbanned``,
``user.token_rotated``, ``user.deleted``).

Every endpoint is idempotent: repeating it changes nothing more, closes what a racing login
may have opened meanwhile, and publishes its event again with the same id (consumers dedupe
on it), so a retry after a failure (503: the bus was unreachable) completes what the first
attempt began.

===========================================  =====================  =====================
endpoint                                     closes (KickNotify)    then
===========================================  =====================  =====================
``POST /v1/users/{id}/kick``                 all, or one client     the user may log in
                                             type (ADMIN)           again at once
``POST /v1/users/{id}/ban``                  all (BANNED)           logins refused until
                                                                    unbanned; token kept
``DELETE /v1/users/{id}/ban``                nothing                logins work again
``POST /v1/users/{id}/token``                token logins with      the new token works;
                                             the old token          password logins stay
                                             (TOKEN_REVOKED)
``DELETE /v1/users/{id}``                    all (ACCOUNT_DELETED)  a tombstone for good
                                                                    (below)
===========================================  =====================  =====================

**Deleting a user**: the user store keeps a tombstone (id and times; no profile, no usable
token, no password, the user name freed); the id is retired (a later import is 409
``user-deleted``, a read 410). Push tokens are removed. The user leaves every group it is a
member of (a GroupExitReq through the group consumer, as the server API: members see a
GROUP_LEAVE notice); groups it owns are kept — the owner cannot leave, and disbanding would
take them from every member; disband them with ``DELETE /v1/groups/{id}``. The messages it
sent stay in their conversations (the peers' history is theirs too), shown with its user id;
sending to it is refused (NOT_FOUND). Its own inbox, sessions and read marks are not
deleted: nobody can read them any more (no login), Redis's hot copies expire after
``[hot] idle_ttl_s`` without writes, and MongoDB's stay.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Final

from litestar import delete, post
from litestar.params import JSONBody

from bus.base import Outgoing
from producers.deps import Pipeline, PipelineDep, StoresDep
from producers.models import (
    BanBody,
    BanState,
    DeletedUser,
    KickBody,
    KickResult,
    TokenResponse,
)
from producers.problems import PROBLEMS, problem_responses
from producers.users import UserIdPath, live_user, parse_user_id
from schemas.bizevents import (
    UserBanned,
    UserDeleted,
    UserKicked,
    UserTokenRotated,
    UserUnbanned,
    event_id,
)
from schemas.codes import KickReason
from schemas.commands import Cmd, UplinkTopic
from schemas.envelope import (
    KickUser,
    encode_envelope,
    encode_gate_record,
    make_envelope,
    now_ms,
    token_digest,
)
from schemas.ids import GroupId, TraceId, new_trace_id
from schemas.pb.coffeechat import group_pb2
from store.ids import GateId, UserId
from store.routes import RouteStore
from store.users import User

__all__ = ["ban_user", "close_sessions", "delete_user", "kick_user", "rotate_token", "unban_user"]

logger = logging.getLogger(__name__)

#: What the admin endpoints may answer besides 200 (410: the user was deleted).
ADMIN_PROBLEMS: Final = PROBLEMS | problem_responses(410)
_ALL: Final[tuple[int, ...]] = ()


async def close_sessions(
    pipeline: Pipeline,
    routes: RouteStore,
    user_id: UserId,
    reason: KickReason,
    text: str,
    *,
    trace: TraceId,
    client_types: tuple[int, ...] = _ALL,
    keep_token: bytes = b"",
) -> int:
    """Tell every live gate to close the user's connections that `client_types` (empty:
    all) and `keep_token` select (`schemas.envelope.KickUser`); the number of gates told.

    Returns once every record is durable; a bus failure raises (the API answers 503 and the
    caller retries: closing twice closes nothing more).
    """
    record = encode_gate_record(
        KickUser(
            user_id=user_id,
            client_types=client_types,
            keep_token=keep_token,
            reason=reason,
            text=text,
            trace_id=trace,
            ts_ms=now_ms(),
        )
    )
    gates = [info.gate_id for info in await routes.live_gates()]
    key = b"%d" % user_id
    await pipeline.bus.publish_batch(
        [Outgoing(pipeline.topology.gate_topic(GateId(g)).name, record, key=key) for g in gates]
    )
    logger.info(
        "told %d gate(s) to close the connections of user %d (%s: %s), trace %s",
        len(gates),
        user_id,
        reason.name,
        text,
        trace,
    )
    return len(gates)


@post(
    "/v1/users/{user_id:str}/kick",
    summary="Close a user's connections",
    description=(
        "Every live gate closes the user's connections — all, or those of `client_type` — "
        "after a KickNotify (reason ADMIN, `reason` as its text), within a second. The user "
        "may log in again at once (ban it to prevent that). Idempotent: a repeat closes "
        "what is open by then. Emits `user.kicked`."
    ),
    tags=["sessions"],
    responses=ADMIN_PROBLEMS,
    status_code=200,
)
async def kick_user(
    user_id: UserIdPath,
    stores: StoresDep,
    pipeline: PipelineDep,
    data: JSONBody[KickBody | None] = None,
) -> KickResult:
    """``POST /v1/users/{user_id}/kick`` (no body: every connection, no reason)."""
    data = data or KickBody()
    uid = parse_user_id(user_id)
    await live_user(stores.users, uid)
    routes = await stores.routes.get(uid)
    devices = sum(1 for r in routes if data.client_type in (None, r.client_type))
    trace = new_trace_id()
    types = () if data.client_type is None else (data.client_type,)
    told = await close_sessions(
        pipeline, stores.routes, uid, KickReason.ADMIN, data.reason, trace=trace, client_types=types
    )
    await pipeline.publish_event(
        UserKicked(
            id=event_id(UserKicked, uid, trace),
            ts=now_ms(),
            trace_id=trace,
            user_id=uid,
            client_type=data.client_type,
            reason=data.reason,
            gates_notified=told,
        ),
    )
    return KickResult(
        user_id=uid, client_type=data.client_type, devices=devices, gates_notified=told
    )


@post(
    "/v1/users/{user_id:str}/ban",
    summary="Ban a user",
    description=(
        "Every login of the user is refused (ErrorRsp FORBIDDEN once its credential checked "
        "out) and its live connections are closed with KickNotify BANNED on every gate, within "
        "a second. The token is kept: unbanning lets the user in again. Idempotent: banning a "
        "banned user keeps the first ban (its time and reason). Emits `user.banned`."
    ),
    tags=["sessions"],
    responses=ADMIN_PROBLEMS,
    status_code=200,
)
async def ban_user(
    user_id: UserIdPath,
    stores: StoresDep,
    pipeline: PipelineDep,
    data: JSONBody[BanBody | None] = None,
) -> BanState:
    """``POST /v1/users/{user_id}/ban`` (no body: no reason)."""
    data = data or BanBody()
    uid = parse_user_id(user_id)
    user = await stores.users.set_banned(uid, True, reason=data.reason)
    trace = new_trace_id()
    text = user.ban_reason or "banned"
    told = await close_sessions(pipeline, stores.routes, uid, KickReason.BANNED, text, trace=trace)
    await pipeline.publish_event(
        UserBanned(
            id=event_id(UserBanned, uid, user.banned_ms),
            ts=user.banned_ms,
            trace_id=trace,
            user_id=uid,
            banned_ms=user.banned_ms,
            reason=user.ban_reason,
            gates_notified=told,
        ),
    )
    logger.info("banned user %d (%s)", uid, user.ban_reason)
    return _ban_state(user, told)


@delete(
    "/v1/users/{user_id:str}/ban",
    summary="Lift a user's ban",
    description=(
        "The user may log in again with its token. Idempotent: unbanning a user that is not "
        "banned changes nothing. Emits `user.unbanned`."
    ),
    tags=["sessions"],
    responses=ADMIN_PROBLEMS,
    status_code=200,
)
async def unban_user(user_id: UserIdPath, stores: StoresDep, pipeline: PipelineDep) -> BanState:
    """``DELETE /v1/users/{user_id}/ban``."""
    uid = parse_user_id(user_id)
    user = await stores.users.set_banned(uid, False)
    await pipeline.publish_event(
        UserUnbanned(
            id=event_id(UserUnbanned, uid, user.banned_ms),
            ts=now_ms(),
            user_id=uid,
            banned_ms=user.banned_ms,
        ),
    )
    logger.info("lifted the ban of user %d", uid)
    return _ban_state(user, 0)


def _ban_state(user: User, told: int) -> BanState:
    return BanState(
        user_id=user.user_id,
        banned=user.banned,
        banned_ms=user.banned_ms,
        ban_reason=user.ban_reason,
        gates_notified=told,
    )


@post(
    "/v1/users/{user_id:str}/token",
    summary="Rotate a user's token",
    description=(
        "Gives the user a new random token. The old one stops working at once for new "
        "logins, and every connection logged in with it is closed (KickNotify TOKEN_REVOKED) "
        "on whatever gate it lives, within a second; connections logged in by password stay. "
        "Emits `user.token_rotated`."
    ),
    tags=["users"],
    responses=ADMIN_PROBLEMS,
    status_code=200,
)
async def rotate_token(
    user_id: UserIdPath, stores: StoresDep, pipeline: PipelineDep
) -> TokenResponse:
    """``POST /v1/users/{user_id}/token`` (with the messaging pipeline: old sessions close)."""
    uid = parse_user_id(user_id)
    token = await stores.users.rotate_token(uid)  # UnknownUserError -> 404, deleted -> 410
    trace = new_trace_id()
    digest = token_digest(token)
    told = await close_sessions(
        pipeline,
        stores.routes,
        uid,
        KickReason.TOKEN_REVOKED,
        "the token was revoked",
        trace=trace,
        keep_token=digest,
    )
    await pipeline.publish_event(
        UserTokenRotated(
            id=event_id(UserTokenRotated, uid, hashlib.sha256(digest).hexdigest()[:16]),
            ts=now_ms(),
            trace_id=trace,
            user_id=uid,
            gates_notified=told,
        ),
    )
    logger.info("rotated the token of user %d", uid)
    return TokenResponse(user_id=uid, token=token, gates_notified=told)


@delete(
    "/v1/users/{user_id:str}",
    summary="Delete a user",
    description=(
        "The user becomes a tombstone for good: connections closed (KickNotify "
        "ACCOUNT_DELETED) on every gate within a second, every login refused, profile, "
        "token, password and user name gone, push tokens removed; it leaves every group it "
        "is a member of (groups it owns are kept); its messages stay in their "
        "conversations. The id is retired (a later import: 409 `user-deleted`). Idempotent: "
        "a repeat answers the same. Emits `user.deleted`."
    ),
    tags=["sessions"],
    responses=ADMIN_PROBLEMS,
    status_code=200,
)
async def delete_user(user_id: UserIdPath, stores: StoresDep, pipeline: PipelineDep) -> DeletedUser:
    """``DELETE /v1/users/{user_id}``."""
    uid = parse_user_id(user_id)
    tombstone, now = await stores.users.delete(uid)  # UnknownUserError -> 404
    trace = new_trace_id()
    told = await close_sessions(
        pipeline, stores.routes, uid, KickReason.ACCOUNT_DELETED, "account deleted", trace=trace
    )
    removed = 0
    if stores.push_tokens is not None:
        devices = await stores.push_tokens.devices(uid)
        done = await asyncio.gather(
            *(stores.push_tokens.remove(uid, d.provider, d.token) for d in devices)
        )
        removed = sum(done)
    left, owned = await _leave_groups(pipeline, uid, trace)
    await pipeline.publish_event(
        UserDeleted(
            id=event_id(UserDeleted, uid),
            ts=tombstone.deleted_ms,
            trace_id=trace,
            user_id=uid,
            deleted_ms=tombstone.deleted_ms,
            groups_left=tuple(left),
            groups_owned=tuple(owned),
            gates_notified=told,
        ),
    )
    logger.info(
        "%s user %d: left groups %s, kept owned groups %s, removed %d push token(s)",
        "deleted" if now else "deletion repeated for",
        uid,
        left,
        owned,
        removed,
    )
    return DeletedUser(
        user_id=uid,
        deleted_ms=tombstone.deleted_ms,
        groups_left=left,
        groups_owned=owned,
        push_tokens_removed=removed,
        gates_notified=told,
    )


async def _leave_groups(
    pipeline: Pipeline, user_id: UserId, trace: TraceId
) -> tuple[list[int], list[int]]:
    """Publish a GroupExitReq (the server API's, origin none) for every live group the user
    is a member of but does not own; the groups left and the groups owned."""
    left: list[int] = []
    owned: list[int] = []
    outgoing = []
    topic = pipeline.topology.topic(UplinkTopic.GROUP).name
    for gid in await pipeline.groups.groups_of(user_id):
        group = await pipeline.groups.get(GroupId(gid))
        if group is None or group.disbanded:
            continue
        if group.owner_id == user_id:
            owned.append(gid)
            continue
        left.append(gid)
        req = group_pb2.GroupExitReq(user_id=user_id, group_id=gid)
        envelope = make_envelope(
            Cmd.GROUP_EXIT_REQ, req.SerializeToString(), trace_id=new_trace_id()
        )
        outgoing.append(Outgoing(topic, encode_envelope(envelope), key=b"%d" % gid))
    if outgoing:
        await pipeline.bus.publish_batch(outgoing)
    logger.debug("user %d leaves groups %s (trace %s)", user_id, left, trace)
    return sorted(left), sorted(owned)
