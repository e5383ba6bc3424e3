"""Request and response bodies of the HTTP API, as msgspec Structs.

Litestar validates request bodies against these types and derives the OpenAPI document from
them, so the documented schema and what the server accepts cannot drift apart. Limits
(`Meta`) are part of the contract: a value outside them is a 400, never a 500 from a store.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from schemas.codes import GroupBeInviteMode, GroupJoinModel, GroupMuteModel, MsgType
from store.ids import MAX_USER_ID
from store.passwords import MAX_PASSWORD_BYTES
from store.push_tokens import PushProvider
from store.users import MAX_TOKEN_LENGTH, MAX_USER_NAME_LENGTH

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CLIENT_MSG_ID",
    "MAX_GROUP_NAME",
    "MAX_GROUP_TEXT",
    "MAX_MEMBERS_PER_CALL",
    "MAX_PROFILE_FIELD",
    "MAX_PUSH_RECIPIENTS",
    "Accepted",
    "BanBody",
    "BanState",
    "DeletedUser",
    "Device",
    "DevicesResponse",
    "Gate",
    "GatesResponse",
    "GroupCreateBody",
    "GroupCreated",
    "GroupList",
    "GroupMembersBody",
    "GroupPatchBody",
    "GroupView",
    "Health",
    "KickBody",
    "KickResult",
    "MessageAccepted",
    "MessageBody",
    "Problem",
    "ProblemFieldError",
    "PushBody",
    "PushResult",
    "PushTokenBody",
    "PushTokenList",
    "PushTokenView",
    "RegisterRequest",
    "RegisterResponse",
    "RoomBody",
    "RoomList",
    "RoomView",
    "TokenResponse",
    "UserImportBody",
    "UserView",
]

#: Largest request body accepted (bytes); a user import is far below it.
MAX_BODY_BYTES: Final = 64 * 1024
#: Longest nick name, phone, avatar URL or attach info (characters).
MAX_PROFILE_FIELD: Final = 4096

ProfileText = Annotated[str, msgspec.Meta(max_length=MAX_PROFILE_FIELD)]
TokenText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOKEN_LENGTH)]
UserNameText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_USER_NAME_LENGTH)]
# The store counts password bytes; a character is at most 4 UTF-8 bytes, the store re-checks.
PasswordText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD_BYTES)]


class RegisterRequest(msgspec.Struct, frozen=True):
    """``POST /user/register`` (the seed's legacy endpoint). Unknown fields are ignored, as
    the seed did; ``user_token`` is generated when missing or empty."""

    user_id: int
    user_nick_name: str = ""
    user_token: str = ""


class RegisterResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    """The seed's envelope: ``error_code`` 0 and ``error_msg`` "success" on success; on
    success the user id and the token (given or generated) are added."""

    error_code: int
    error_msg: str
    user_id: int | None = None
    user_token: str | None = None


class UserImportBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``PUT /v1/users/{user_id}``: import a user or update the fields given.

    A field left out (or null) keeps the stored value; for a new user it defaults to empty,
    a generated token, no user name and no password. ``user_name`` + ``password`` enable
    the password login (0x0107).
    """

    nick_name: ProfileText | None = None
    nick_name_spell: ProfileText | None = None
    phone: ProfileText | None = None
    avatar_url: ProfileText | None = None
    attach_info: ProfileText | None = None
    token: TokenText | None = None
    user_name: UserNameText | None = None
    password: PasswordText | None = None


class UserView(msgspec.Struct, frozen=True):
    """A user as the API shows it. The token is shown only by the calls that set it (import,
    rotation); the password hash never leaves the store."""

    user_id: int
    nick_name: str
    nick_name_spell: str
    phone: str
    avatar_url: str
    attach_info: str
    user_name: str | None
    has_password: bool
    created_ms: int
    updated_ms: int
    token: str | None = None


class TokenResponse(msgspec.Struct, frozen=True):
    """``POST /v1/users/{user_id}/token``: the user's new token; the old one is dead, and
    every connection logged in with it is being closed on the gates told."""

    user_id: int
    token: str
    gates_notified: int = 0


#: Longest operator's reason (characters): it is shown to the user's devices.
MAX_REASON: Final = 256
ReasonText = Annotated[str, msgspec.Meta(max_length=MAX_REASON)]


class KickBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/users/{user_id}/kick``: which connections, and the reason they are told."""

    client_type: (
        Annotated[
            int,
            msgspec.Meta(
                ge=0,
                le=0xFFFF_FFFF,
                description="only this client type (0 default, 1 Android, 2 iOS, 3 web, ...)",
            ),
        ]
        | None
    ) = None
    reason: Annotated[ReasonText, msgspec.Meta(description="shown to the devices (KickNotify)")] = (
        ""
    )


class KickResult(msgspec.Struct, frozen=True):
    """What a kick did: the user's online devices it selected and the gates told."""

    user_id: int
    client_type: int | None
    devices: int
    gates_notified: int


class BanBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/users/{user_id}/ban``."""

    reason: Annotated[ReasonText, msgspec.Meta(description="kept with the ban, shown")] = ""


class BanState(msgspec.Struct, frozen=True):
    """A user's ban after ``POST``/``DELETE /v1/users/{user_id}/ban``."""

    user_id: int
    banned: bool
    #: when the current (or the last) ban began, unix ms; 0: never banned
    banned_ms: int
    ban_reason: str
    gates_notified: int = 0


class DeletedUser(msgspec.Struct, frozen=True):
    """``DELETE /v1/users/{user_id}``: what the deletion did (the same on a repeat)."""

    user_id: int
    deleted_ms: int
    #: groups the user is being removed from (the group consumer announces each)
    groups_left: list[int]
    #: groups the user owns: kept as they are (disband them with DELETE /v1/groups/{id})
    groups_owned: list[int]
    push_tokens_removed: int
    gates_notified: int


class Device(msgspec.Struct, frozen=True):
    """One online device of a user: where its connection lives."""

    client_type: int
    client_type_name: str
    gate_id: str
    conn_id: int
    login_ms: int


class DevicesResponse(msgspec.Struct, frozen=True):
    """``GET /v1/users/{user_id}/devices``."""

    user_id: int
    online: bool
    devices: list[Device]


class Gate(msgspec.Struct, frozen=True):
    """A live gate and its load."""

    gate_id: str
    tcp_addr: str
    ws_addr: str
    connections: int


class GatesResponse(msgspec.Struct, frozen=True):
    """``GET /v1/gates``: live gates, least loaded first (the seed's iplist)."""

    gates: list[Gate]


class Health(msgspec.Struct, frozen=True):
    """``GET /healthz`` and ``GET /readyz`` when all is well."""

    status: str


class ProblemFieldError(msgspec.Struct, frozen=True, omit_defaults=True):
    """One invalid field of a request."""

    message: str
    key: str | None = None
    source: str | None = None


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """An error, as RFC 9457 ``application/problem+json``."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemFieldError] | None = None


# --- messaging: push, system messages, groups, revoke --------------------------------------

#: Most recipients of one push (a bigger audience is several calls).
MAX_PUSH_RECIPIENTS: Final = 1000
#: Most users one group call adds or removes (a group's own limit is the group store's).
MAX_MEMBERS_PER_CALL: Final = 500
#: Characters of a group name (as the group consumer checks it).
MAX_GROUP_NAME: Final = 128
#: Characters of a group's intro, announcement or avatar URL (as the group consumer checks it).
MAX_GROUP_TEXT: Final = 4096
#: Characters of a client_msg_id / push_id (as the msg group checks it).
MAX_CLIENT_MSG_ID: Final = 64

IdValue = Annotated[int, msgspec.Meta(ge=1, le=MAX_USER_ID)]
ClientMsgId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_CLIENT_MSG_ID, pattern=r"^[\x21-\x7e]+$")
]
U32 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF_FFFF)]
ShortText = Annotated[str, msgspec.Meta(max_length=255)]
SessionKind = Literal["single", "group"]


class PushBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/push``: a business push (s2c) to users.

    Online-only by default: an S2CPush (0x080B) to each recipient's online devices, nothing
    kept. ``store: true`` makes it a stored system message instead: a MsgData from
    ``from_user_id`` (required then; ``msg_type`` must be a MsgType) in the single chat
    between that user and each recipient, delivered live as MsgData and kept for pull/sync.
    """

    to_user_ids: Annotated[
        list[IdValue], msgspec.Meta(min_length=1, max_length=MAX_PUSH_RECIPIENTS)
    ]
    #: business-defined (S2CPush.msg_type); a MsgType value when ``store`` is true
    msg_type: U32
    #: the payload (UTF-8 text, usually JSON)
    msg_data: str
    content_type: ShortText = "application/json"
    #: which business line pushes (S2CPush.channel)
    channel: ShortText = ""
    #: the devices' dedupe key; generated when missing
    push_id: ClientMsgId | None = None
    store: bool = False
    from_user_id: IdValue | None = None


class PushResult(msgspec.Struct, frozen=True):
    """What ``POST /v1/push`` did. Delivery is asynchronous: ``devices_addressed`` counts the
    online devices the push was addressed to when it was accepted, not receipts."""

    push_id: str
    recipients: int
    online_users: int
    devices_addressed: int
    stored: bool


class MessageBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/messages``: a system message, sent as ``from_user_id`` (a user or a robot
    account) into a single chat with user ``to_session_id`` or into group ``to_session_id``,
    through the same pipeline as client sends."""

    from_user_id: IdValue
    session_type: SessionKind
    to_session_id: IdValue
    msg_data: str
    msg_type: MsgType = MsgType.TEXT
    #: the dedupe key of the conversation (resending it stores nothing new); generated
    #: when missing
    client_msg_id: ClientMsgId | None = None


class MessageAccepted(msgspec.Struct, frozen=True):
    """The message is on the bus; the msg group stores, sequences and fans it out."""

    client_msg_id: str
    conversation: str


class Accepted(msgspec.Struct, frozen=True):
    """A state change is on the bus; its consumer applies it (asynchronously)."""

    request_id: str


class GroupCreateBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/groups``: create a group owned by ``owner_id`` with these members."""

    owner_id: IdValue
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_GROUP_NAME)]
    member_ids: Annotated[list[IdValue], msgspec.Meta(max_length=MAX_MEMBERS_PER_CALL)] = []


class GroupCreated(msgspec.Struct, frozen=True):
    """``POST /v1/groups``: the new group. ``created`` is true (201) once the group exists;
    false (202) when the group consumer had not created it yet when the API stopped
    waiting — the id is final either way, and the group appears with it."""

    group_id: int
    name: str
    group_type: int
    owner_id: int
    #: the owner included
    member_count: int
    created: bool
    #: the trace id of the create request (the logs and the group.changed event carry it)
    request_id: str


GroupName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_GROUP_NAME)]
GroupText = Annotated[str, msgspec.Meta(max_length=MAX_GROUP_TEXT)]


class GroupPatchBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``PATCH /v1/groups/{group_id}``: set the attributes given (at least one); a field left
    out or null keeps its value. The notification names ``operator_user_id`` (default: the
    owner)."""

    name: GroupName | None = None
    intro: GroupText | None = None
    #: the group notice
    announcement: GroupText | None = None
    avatar_url: GroupText | None = None
    #: 1: only the owner may send
    mute_model: GroupMuteModel | None = None
    join_model: GroupJoinModel | None = None
    be_invite_model: GroupBeInviteMode | None = None
    operator_user_id: IdValue | None = None


class GroupMembersBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/groups/{group_id}/members``: add these users; the notification names
    ``operator_user_id`` (default: the owner)."""

    user_ids: Annotated[list[IdValue], msgspec.Meta(min_length=1, max_length=MAX_MEMBERS_PER_CALL)]
    operator_user_id: IdValue | None = None


class GroupView(msgspec.Struct, frozen=True):
    """A group as the API shows it; ``member_ids`` only in ``GET /v1/groups/{group_id}``."""

    group_id: int
    name: str
    owner_id: int
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
    disbanded: bool
    member_ids: list[int] | None = None


class GroupList(msgspec.Struct, frozen=True):
    """``GET /v1/groups?user_id=``: the groups the user is a member of."""

    user_id: int
    groups: list[GroupView]


# --- chat rooms ------------------------------------------------------------------------------

#: Longest room name (characters).
MAX_ROOM_NAME: Final = 128
#: Most listed posters of a room.
MAX_ROOM_POSTERS: Final = 1000

RoomPost = Literal["everyone", "listed", "nobody"]


class RoomBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/rooms``: a chat room and its settings, fixed for its life.

    ``post``: who may say something over the protocol — ``everyone`` in the room, the
    ``listed`` ``posters`` only, or ``nobody``. ``slow_mode_s``: at most one message per user
    every so many seconds (0: no limit). ``max_msg_bytes`` and ``history`` (recent messages
    kept and given to a joiner) default to the ``[rooms]`` settings and are capped by them.
    """

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ROOM_NAME)]
    post: RoomPost = "everyone"
    posters: Annotated[list[IdValue], msgspec.Meta(max_length=MAX_ROOM_POSTERS)] = []
    slow_mode_s: Annotated[int, msgspec.Meta(ge=0, le=86_400)] = 0
    max_msg_bytes: Annotated[int, msgspec.Meta(ge=1, le=64 * 1024)] | None = None
    history: Annotated[int, msgspec.Meta(ge=0, le=1000)] | None = None


class RoomView(msgspec.Struct, frozen=True):
    """A chat room as the API shows it. ``member_count`` is the connections in it on every
    live gate; ``gates`` (``GET /v1/rooms/{room_id}`` only) how many on each."""

    room_id: int
    name: str
    post: RoomPost
    posters: list[int]
    slow_mode_s: int
    max_msg_bytes: int
    history: int
    created_ms: int
    closed_ms: int
    open: bool
    member_count: int
    gates: dict[str, int] | None = None


class RoomList(msgspec.Struct, frozen=True):
    """``GET /v1/rooms``: open rooms by id; ``next_after`` is the ``after`` of the next page
    (null on the last)."""

    rooms: list[RoomView]
    next_after: int | None


# --- device push tokens ----------------------------------------------------------------------


class PushTokenBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/users/{user_id}/push-tokens``: register a device for offline pushes (a
    token registered by another user moves to this one)."""

    provider: PushProvider
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    #: APNs: the app's bundle id when it is not the configured topic
    app_id: Annotated[str, msgspec.Meta(max_length=256)] = ""
    #: the device's ClientType
    client_type: Annotated[int, msgspec.Meta(ge=0, le=0xFFFF_FFFF)] = 0


class PushTokenView(msgspec.Struct, frozen=True):
    """A registered device."""

    provider: str
    token: str
    app_id: str
    client_type: int
    registered_ms: int


class PushTokenList(msgspec.Struct, frozen=True):
    """``GET /v1/users/{user_id}/push-tokens``: newest first."""

    user_id: int
    devices: list[PushTokenView]
