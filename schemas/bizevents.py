"""Business events: the JSON records CoffeeBus publishes on the ``biz.*`` topics.

Business servers react to what happens in chat by consuming these topics (or by receiving
them as signed webhooks, `schemas.webhooks`). Unlike every other record on the bus they are
JSON, not MessagePack, and they are a public contract: docs/events.md explains them, and
docs/events.schema.json (JSON Schema) and docs/asyncapi.yaml (AsyncAPI) are generated from
the structs below by ``coffeebus events docs``; a test fails when the committed files are
stale.

Every event is one JSON object::

    {"type": "message.stored", "id": "message.stored:s:3:7:12", "version": 1,
     "ts": 1718000000000, "trace_id": "4bf9...", ...fields of the type...}

- ``type`` names the event; ``version`` its schema version (1). Within a version fields are
  only ever *added*: consumers must ignore fields they do not know. Removing, renaming or
  retyping a field is a new version, published side by side with the old one for a
  deprecation period (docs/events.md, "Versioning").
- ``id`` is the same for every redelivery of the same fact (delivery is at-least-once: a
  replayed batch or a client's resend emits the event again), so consumers dedupe on it.
  Each type's docstring gives its id rule.
- ``ts`` is when the fact happened (unix milliseconds), ``trace_id`` the trace of the request
  that caused it (empty when none).

Topics and keys (one key's events stay in order on one partition):

========================  ===============  =====================================================
topic                     key              events
========================  ===============  =====================================================
``biz.c2s``               user id          ``c2s.upload``
``biz.events.message``    conversation id  ``message.stored``, ``message.delivered``,
                                           ``message.read``, ``message.revoked``
``biz.events.user``       user id          ``user.online``, ``user.offline``,
                                           ``user.kicked``, ``user.banned``,
                                           ``user.unbanned``, ``user.token_rotated``,
                                           ``user.deleted``
``biz.events.group``      group id         ``group.changed``
``biz.events.call``       call channel     ``call.started``, ``call.answered``,
                                           ``call.ended``
``biz.events.room``       room id          ``room.created``, ``room.closed``, ``room.message``
========================  ===============  =====================================================

Codes (client type, session type, message type) are the wire protocol's integers
(PROTOCOL.md "Enums"), kept as plain ints so that a value newer than this code still
serializes.
"""

from __future__ import annotations

import enum
from typing import Annotated, ClassVar, Final, Literal, TypeAlias

import msgspec

from schemas.errors import EnvelopeError

__all__ = [
    "EVENT_TYPES",
    "EVENT_VERSION",
    "BizEvent",
    "BizTopic",
    "C2SUpload",
    "CallAnswered",
    "CallEndCause",
    "CallEnded",
    "CallStarted",
    "GroupAttribute",
    "GroupChange",
    "GroupChanged",
    "MessageDelivered",
    "MessageRead",
    "MessageRevoked",
    "MessageStored",
    "RoomClosed",
    "RoomCreated",
    "RoomMessage",
    "UserBanned",
    "UserDeleted",
    "UserKicked",
    "UserOffline",
    "UserOnline",
    "UserTokenRotated",
    "UserUnbanned",
    "decode_event",
    "encode_event",
    "event_id",
    "event_type",
]

#: the schema version every event type is at
EVENT_VERSION: Final = 1


class BizTopic(enum.StrEnum):
    """The ``biz.*`` topics (declared in topology.yaml)."""

    C2S = "biz.c2s"
    MESSAGES = "biz.events.message"
    USERS = "biz.events.user"
    GROUPS = "biz.events.group"
    CALLS = "biz.events.call"
    ROOMS = "biz.events.room"
    #: webhook deliveries that failed for good (`schemas.webhooks.WebhookDeadLetter`)
    WEBHOOK_DEAD_LETTER = "biz.webhooks.dead-letter"


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


UnixMs = Annotated[int, msgspec.Meta(ge=0, description="unix time in milliseconds")]
U64 = Annotated[int, msgspec.Meta(ge=0)]
Seq = Annotated[int, msgspec.Meta(ge=1, description="the conversation's seq (server_msg_id)")]
UserIdField = Annotated[int, msgspec.Meta(ge=1, description="a user id")]
ConversationField = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(s:[1-9][0-9]*:[1-9][0-9]*|g:[1-9][0-9]*)$",
        description='conversation id: "s:<low user id>:<high user id>" or "g:<group id>"',
    ),
]
SessionTypeField = Annotated[int, _doc("SessionType: 1 single (c2c), 2 group")]
ClientTypeField = Annotated[
    int, _doc("ClientType: 0 default, 1 Android, 2 iOS, 3 web, 4 REST API, 5 Windows, 6 macOS")
]


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    """Fields every event has (module docstring)."""

    #: the topic this type is published on
    topic: ClassVar[BizTopic]

    id: Annotated[str, _doc("unique per fact; the same on redelivery (dedupe on it)")]
    version: Annotated[int, msgspec.Meta(ge=1, description="schema version of this type")] = (
        EVENT_VERSION
    )
    ts: Annotated[int, msgspec.Meta(ge=0, description="when it happened, unix milliseconds")]
    trace_id: Annotated[str, _doc("trace id of the request that caused it, or empty")] = ""

    def key(self) -> bytes:
        """The record key (what keeps this key's events in order)."""
        raise NotImplementedError


class C2SUpload(_Event, frozen=True, kw_only=True, tag="c2s.upload"):
    """A client uploaded a payload for a business server (C2SUploadReq 0x0809).

    The identity is the connection's, verified by the gate at login — never the request
    body's. The client got its C2SUploadRsp only after this record was durable.
    id: ``c2s.upload:<user_id>:<client_req_id>`` (the client's idempotency key: a resend of
    the same request has the same id).
    """

    topic: ClassVar[BizTopic] = BizTopic.C2S

    user_id: UserIdField
    client_type: ClientTypeField
    gate_id: Annotated[str, _doc("the gate the client is connected to")]
    client_req_id: Annotated[str, _doc("the client's request id (its idempotency key)")]
    channel: Annotated[str, _doc("the business line the client named; empty: the default")]
    content_type: Annotated[str, _doc("media type of payload, as the client declared it")]
    payload: Annotated[bytes, _doc("the uploaded bytes, base64")]

    def key(self) -> bytes:
        return b"%d" % self.user_id


class _MessageEvent(_Event, frozen=True, kw_only=True):
    topic: ClassVar[BizTopic] = BizTopic.MESSAGES

    conversation: ConversationField

    def key(self) -> bytes:
        return self.conversation.encode()


class MessageStored(_MessageEvent, frozen=True, kw_only=True, tag="message.stored"):
    """A message was stored in its conversation's timeline (the sender has been acked).

    Group notifications and system messages are messages too. ``msg_data`` is null when the
    deployment omits contents (``[biz] include_msg_data = false``).
    id: ``message.stored:<conversation>:<seq>``.
    """

    seq: Seq
    from_user_id: UserIdField
    to_session_id: Annotated[int, msgspec.Meta(ge=1, description="peer user id or group id")]
    session_type: SessionTypeField
    msg_type: Annotated[int, _doc("MsgType: 1 text, 2 file, 3 image, ... 9 notification")]
    client_msg_id: Annotated[str, _doc("the sender's idempotency key")]
    sender_client_type: ClientTypeField = 0
    msg_data: Annotated[bytes | None, _doc("the message body, base64; null if omitted")] = None


class MessageDelivered(_MessageEvent, frozen=True, kw_only=True, tag="message.delivered"):
    """A device of ``user_id`` acknowledged every message of the conversation up to ``seq``.

    id: ``message.delivered:<user_id>:<conversation>:<seq>``.
    """

    user_id: UserIdField
    session_type: SessionTypeField
    session_id: Annotated[int, _doc("the conversation as the user sees it: peer or group id")]
    seq: Seq


class MessageRead(_MessageEvent, frozen=True, kw_only=True, tag="message.read"):
    """``user_id`` read every message of the conversation up to ``seq`` (the read seq only
    moves forward). id: ``message.read:<user_id>:<conversation>:<seq>``."""

    user_id: UserIdField
    session_type: SessionTypeField
    session_id: Annotated[int, _doc("the conversation as the user sees it: peer or group id")]
    seq: Seq


class MessageRevoked(_MessageEvent, frozen=True, kw_only=True, tag="message.revoked"):
    """The sender revoked (recalled) a message; ``ts`` is the first revocation's time.

    id: ``message.revoked:<conversation>:<seq>``.
    """

    seq: Seq
    client_msg_id: str
    from_user_id: UserIdField
    revoked_by: Annotated[
        int, msgspec.Meta(ge=0, description="the sender; 0: an admin through the server API")
    ]


class _UserEvent(_Event, frozen=True, kw_only=True):
    topic: ClassVar[BizTopic] = BizTopic.USERS

    user_id: UserIdField
    client_type: ClientTypeField
    gate_id: Annotated[str, _doc("the gate holding the connection")]
    conn_id: Annotated[int, msgspec.Meta(ge=0, description="the connection, unique per gate")]

    def key(self) -> bytes:
        return b"%d" % self.user_id


class UserOnline(_UserEvent, frozen=True, kw_only=True, tag="user.online"):
    """A device of the user logged in (presence is per connection).

    id: ``user.online:<gate_id>:<conn_id>``.
    """


class UserOffline(_UserEvent, frozen=True, kw_only=True, tag="user.offline"):
    """A logged-in connection ended: logout, disconnect, idle timeout, kick or gate drain.

    A gate that dies without draining sends none; its routes lapse after the route TTL.
    id: ``user.offline:<gate_id>:<conn_id>``.
    """

    reason: Annotated[
        Literal["logout", "closed"], _doc("logout: the client asked; closed: anything else")
    ]


class _AccountEvent(_Event, frozen=True, kw_only=True):
    topic: ClassVar[BizTopic] = BizTopic.USERS

    user_id: UserIdField

    def key(self) -> bytes:
        return b"%d" % self.user_id


_GATES_DOC = _doc("live gates told to close the user's connections (within a second)")


class UserKicked(_AccountEvent, frozen=True, kw_only=True, tag="user.kicked"):
    """The server API closed the user's connections (``POST /v1/users/{id}/kick``): every
    one, or those of one client type. The user may log in again at once.

    id: ``user.kicked:<user_id>:<trace_id>`` (one per request).
    """

    client_type: Annotated[int | None, _doc("the client type closed; null: every one")] = None
    reason: Annotated[str, _doc("the operator's reason, as the devices were told")] = ""
    gates_notified: Annotated[int, _GATES_DOC] = 0


class UserBanned(_AccountEvent, frozen=True, kw_only=True, tag="user.banned"):
    """The user was banned: its connections closed (KickNotify BANNED), every login refused
    until it is unbanned; its token is kept.

    id: ``user.banned:<user_id>:<banned_ms>`` (the same for a repeated ban: it changes
    nothing).
    """

    banned_ms: UnixMs
    reason: Annotated[str, _doc("the operator's reason")] = ""
    gates_notified: Annotated[int, _GATES_DOC] = 0


class UserUnbanned(_AccountEvent, frozen=True, kw_only=True, tag="user.unbanned"):
    """The user's ban was lifted: it may log in again with its token.

    id: ``user.unbanned:<user_id>:<banned_ms>`` (the lifted ban's start; 0 if the user was
    never banned).
    """

    banned_ms: Annotated[int, msgspec.Meta(ge=0, description="when the lifted ban began")]


class UserTokenRotated(_AccountEvent, frozen=True, kw_only=True, tag="user.token_rotated"):
    """The user got a new token (``POST /v1/users/{id}/token``); every connection logged
    in with an older one was closed (KickNotify TOKEN_REVOKED), password logins kept.

    id: ``user.token_rotated:<user_id>:<token fingerprint>`` (a digest of the new token,
    not the token).
    """

    gates_notified: Annotated[int, _GATES_DOC] = 0


class UserDeleted(_AccountEvent, frozen=True, kw_only=True, tag="user.deleted"):
    """The user was deleted (``DELETE /v1/users/{id}``): connections closed (KickNotify
    ACCOUNT_DELETED), logins refused for good, push tokens removed, every group it was a
    member of left (``group.changed`` member_left follows per group); groups it owns are
    kept. Its messages stay in their conversations.

    id: ``user.deleted:<user_id>``.
    """

    deleted_ms: UnixMs
    groups_left: Annotated[tuple[int, ...], _doc("groups the user is being removed from")] = ()
    groups_owned: Annotated[tuple[int, ...], _doc("groups it owns, kept as they are")] = ()
    gates_notified: Annotated[int, _GATES_DOC] = 0


GroupChange = Literal[
    "created", "disbanded", "members_added", "members_removed", "member_left", "updated"
]

#: a group attribute an ``updated`` change may set, and its new value
GroupAttribute = Literal[
    "name", "intro", "announcement", "avatar_url", "mute_model", "join_model", "be_invite_model"
]


class GroupChanged(_Event, frozen=True, kw_only=True, tag="group.changed"):
    """A group was created, updated or disbanded, or its members changed.

    ``members`` are the users the change is about: every member for created/disbanded, the
    added, removed (kicked) or leaving members for those changes, none for ``updated``.
    ``attributes`` (``updated`` only) are the attributes the change set, with their new
    values; ``group_name`` is the name after the change.
    id: ``group.changed:<group_id>:<change>:<trace_id>``.
    """

    topic: ClassVar[BizTopic] = BizTopic.GROUPS

    group_id: Annotated[int, msgspec.Meta(ge=1, description="the group id")]
    change: GroupChange
    operator_user_id: Annotated[
        int, msgspec.Meta(ge=0, description="who made the change; 0: the server API")
    ]
    group_name: str
    members: tuple[int, ...]
    attributes: Annotated[
        dict[GroupAttribute, str | int],
        _doc(
            "updated: the attributes set and their new values (mute_model, join_model, "
            "be_invite_model are the protocol's enum values); empty for other changes"
        ),
    ] = {}

    def key(self) -> bytes:
        return b"%d" % self.group_id


#: why a call ended (`store.calls.EndCause`)
CallEndCause: TypeAlias = Literal["bye", "busy", "offline", "no_answer", "heartbeat_timeout"]


class _CallEvent(_Event, frozen=True, kw_only=True):
    topic: ClassVar[BizTopic] = BizTopic.CALLS

    channel: Annotated[str, _doc("the call's channel name, unique per call")]
    caller_id: UserIdField
    callee_id: UserIdField
    call_type: Annotated[int, _doc("VoipInviteType: 1 voice call, 2 video call")]

    def key(self) -> bytes:
        return self.channel.encode()


class CallStarted(_CallEvent, frozen=True, kw_only=True, tag="call.started"):
    """A user called another (VoipInviteReq 0x0401) and the callee's devices ring.

    id: ``call.started:<channel>``.
    """

    caller_client_type: ClientTypeField


class CallAnswered(_CallEvent, frozen=True, kw_only=True, tag="call.answered"):
    """A device of the callee answered (InviteReply 200); ``ts`` is the answer's time.

    id: ``call.answered:<channel>``.
    """

    callee_client_type: ClientTypeField


class CallEnded(_CallEvent, frozen=True, kw_only=True, tag="call.ended"):
    """A call ended, answered or not (every call that started ends exactly once, and a
    callee who was busy or offline ends one that never rang). ``ts`` is the end.

    id: ``call.ended:<channel>``.
    """

    answered: Annotated[bool, _doc("whether a device of the callee answered")]
    duration_s: Annotated[
        int, msgspec.Meta(ge=0, description="seconds from the answer to the end; 0 unanswered")
    ]
    hangup_user_id: Annotated[
        int, msgspec.Meta(ge=0, description="the party that ended it; 0: the server")
    ]
    reason: Annotated[
        int,
        _doc(
            "VoipByeReason: 1 cancel, 2 reject, 3 end, 4 busy, 5 online-client-reject "
            "(as in the ByeNotify the parties got)"
        ),
    ]
    cause: Annotated[
        CallEndCause,
        _doc(
            "bye: a party hung up, cancelled or rejected; busy: the callee was in another "
            "call; offline: no device of the callee was online; no_answer: nobody answered "
            "in [calls] invite_timeout_s; heartbeat_timeout: a party's heartbeats stopped"
        ),
    ]


RoomIdField = Annotated[int, msgspec.Meta(ge=1, description="a chat room id")]


class _RoomEvent(_Event, frozen=True, kw_only=True):
    topic: ClassVar[BizTopic] = BizTopic.ROOMS

    room_id: RoomIdField

    def key(self) -> bytes:
        return b"%d" % self.room_id


class RoomCreated(_RoomEvent, frozen=True, kw_only=True, tag="room.created"):
    """The business created a chat room (``POST /v1/rooms``). id: ``room.created:<room_id>``."""

    name: str


class RoomClosed(_RoomEvent, frozen=True, kw_only=True, tag="room.closed"):
    """The business closed a chat room; its members were told and left it.

    id: ``room.closed:<room_id>``.
    """

    gates_notified: Annotated[int, _doc("gates that had members of the room and were told")] = 0


class RoomMessage(_RoomEvent, frozen=True, kw_only=True, tag="room.message"):
    """A message was said in a chat room and delivered to its members' gates. A room keeps
    only its recent window: this event is the business's record of what was said.
    ``msg_data`` is null when the deployment omits contents (``[biz] include_msg_data``).
    id: ``room.message:<room_id>:<msg_id>``.
    """

    msg_id: Annotated[int, msgspec.Meta(ge=1, description="the room's sequence number")]
    from_user_id: UserIdField
    client_msg_id: str
    msg_type: Annotated[int, _doc("MsgType: 1 text, 2 file, 3 image, ...")]
    msg_data: Annotated[bytes | None, _doc("the message body, base64; null if omitted")] = None


BizEvent: TypeAlias = (
    C2SUpload
    | MessageStored
    | MessageDelivered
    | MessageRead
    | MessageRevoked
    | UserOnline
    | UserOffline
    | UserKicked
    | UserBanned
    | UserUnbanned
    | UserTokenRotated
    | UserDeleted
    | GroupChanged
    | CallStarted
    | CallAnswered
    | CallEnded
    | RoomCreated
    | RoomClosed
    | RoomMessage
)

#: every event class, in documentation order
EVENT_CLASSES: Final[tuple[type[BizEvent], ...]] = (
    C2SUpload,
    MessageStored,
    MessageDelivered,
    MessageRead,
    MessageRevoked,
    UserOnline,
    UserOffline,
    UserKicked,
    UserBanned,
    UserUnbanned,
    UserTokenRotated,
    UserDeleted,
    GroupChanged,
    CallStarted,
    CallAnswered,
    CallEnded,
    RoomCreated,
    RoomClosed,
    RoomMessage,
)


def event_type(cls: type[BizEvent] | BizEvent) -> str:
    """The ``type`` of an event class or event (``"message.stored"``)."""
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


#: every event ``type``
EVENT_TYPES: Final[tuple[str, ...]] = tuple(event_type(c) for c in EVENT_CLASSES)


def event_id(cls: type[BizEvent], *parts: object) -> str:
    """An event id by its type's rule: the type and the fact's identity, colon-separated."""
    return ":".join((event_type(cls), *(str(p) for p in parts)))


_encoder: Final = msgspec.json.Encoder()
_decoder: Final[msgspec.json.Decoder[BizEvent]] = msgspec.json.Decoder(BizEvent)


def encode_event(event: BizEvent) -> bytes:
    """The record value (UTF-8 JSON) of `event`."""
    return _encoder.encode(event)


def decode_event(data: bytes | bytearray | memoryview) -> BizEvent:
    """Decode a ``biz.*`` record value; `EnvelopeError` if it is no event this code knows."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"not a business event ({len(data)} bytes): {exc}") from exc
