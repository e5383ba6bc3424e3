"""Wire codes as `IntEnum`s, mirroring the enums of the .proto files.

The generated protobuf modules expose enums as plain ints with prefixed names
(``base_pb2.CLIENT_TYPE_ANDROID``); code outside the codec wants typed, short names
(``ClientType.ANDROID``). Each class here has exactly the values of its proto enum — a test
compares them number for number — so ``ClientType(msg.client_type)`` and
``msg.client_type = ClientType.ANDROID`` are both safe.

proto3 enums are open: a newer client may send a value this code does not know. Converting
such a value raises `ValueError`; where that must not fail (logging, storing what a client
sent), keep the int.
"""

from __future__ import annotations

from enum import IntEnum, unique

__all__ = [
    "ClientType",
    "ErrorCode",
    "ExtResultCode",
    "GroupBeInviteMode",
    "GroupJoinModel",
    "GroupMemberChangedType",
    "GroupMuteModel",
    "GroupType",
    "InviteRspCode",
    "KickReason",
    "MsgFeature",
    "MsgNotificationType",
    "MsgStatus",
    "MsgType",
    "ResCode",
    "RoomExitReason",
    "RoomPostPolicy",
    "SessionStatusType",
    "SessionType",
    "TypingState",
    "VoipByeReason",
    "VoipInviteType",
]


# --- coffeechat (PROTOCOL.md, "Enums") ---------------------------------------------------


@unique
class ErrorCode(IntEnum):
    """Result codes of login and user responses (`AuthTokenRsp.result_code`, ...)."""

    UNKNOWN = 0
    SUCCESS = 200
    INTERNAL_ERROR = 201
    LOGIN_DB_VALIDATE_FAILED = 2000
    LOGIN_VERSION_TOO_OLD = 2001
    LOGIN_INVALID_USER_TOKEN = 2002
    LOGIN_INVALID_USER_OR_PWD = 2003
    USER_ALREADY_EXIST = 9000
    USER_INVALID_PARAMETER = 9001
    USER_NOT_EXIST = 9002


@unique
class ClientType(IntEnum):
    """The kind of device a connection comes from; the multi-login policy keys on it."""

    DEFAULT = 0
    ANDROID = 1
    IOS = 2
    WEB = 3
    REST_API = 4
    PC_WINDOWS = 5
    MAC_OS = 6


@unique
class SessionType(IntEnum):
    """Single (c2c) or group conversation."""

    INVALID = 0
    SINGLE = 1
    GROUP = 2


@unique
class MsgType(IntEnum):
    """Message content type; non-text payloads are JSON in msg_data."""

    UNKNOWN = 0
    TEXT = 1
    FILE = 2
    IMAGE = 3
    AUDIO = 4
    VIDEO = 5
    LOCATION = 6
    ROBOT = 7
    TIPS = 8
    NOTIFICATION = 9
    AVCHAT = 10


@unique
class MsgStatus(IntEnum):
    """Status of a message as seen by a user."""

    NONE = 0
    UNREAD = 1
    READ = 2
    DELETED = 3
    SENDING = 4
    SENT = 5
    RECEIPT = 6
    DRAFT = 7
    SEND_CANCEL = 8
    REFUSED = 9
    FAILED = 10


@unique
class MsgNotificationType(IntEnum):
    """Kind of a group notification message."""

    UNKNOWN = 0
    GROUP_CREATE = 1
    GROUP_BE_INVITE = 2
    GROUP_KICK = 3
    GROUP_LEAVE = 4
    GROUP_UPDATE = 5
    GROUP_DISMISS = 6


@unique
class SessionStatusType(IntEnum):
    """Whether a session (a user's view of a conversation) is live or deleted."""

    UNKNOWN = 0
    OK = 1
    DELETE = 2


@unique
class MsgFeature(IntEnum):
    """Message features; ROAM_MSG marks a message pulled from history."""

    DEFAULT = 0
    ROAM_MSG = 2


@unique
class ResCode(IntEnum):
    """Result of a message operation (MsgDataAck.res_code, MsgInfo.msg_res_code)."""

    UNKNOWN = 0
    OK = 1


@unique
class GroupMemberChangedType(IntEnum):
    """A member joined (ADD) or left (DEL) a group."""

    DEFAULT = 0
    ADD = 1
    DEL = 2


@unique
class GroupType(IntEnum):
    """NORMAL: at most 200 members; SUPER: at most 2000."""

    UNKNOWN = 0
    NORMAL = 1
    SUPER = 2


@unique
class GroupJoinModel(IntEnum):
    """Who may bring new members into a group."""

    DEFAULT = 0
    NEED_AUTH = 1
    REJECT = 2


@unique
class GroupBeInviteMode(IntEnum):
    """Whether an invited user must agree to join."""

    DEFAULT = 0
    NEED_AGREE = 1


@unique
class GroupMuteModel(IntEnum):
    """Whether the whole group is muted."""

    DEFAULT = 0
    ALL = 1


@unique
class VoipInviteType(IntEnum):
    """What a call carries (VoipInviteReq.invite_type)."""

    UNKNOWN = 0
    VOICE_CALL = 1
    VIDEO_CALL = 2


@unique
class InviteRspCode(IntEnum):
    """VoipInviteReply's SIP-like code."""

    UNKNOWN = 0
    TRYING = 100
    RINGING = 180
    OK = 200


@unique
class VoipByeReason(IntEnum):
    """Why a call ended (VoipByeReq, VoipByeNotify, the AVCHAT message's hangupReason)."""

    UNKNOWN = 0
    CANCEL = 1
    REJECT = 2
    END = 3
    BUSY = 4
    ONLINE_CLIENT_REJECT = 5


# --- coffeebus extensions (schemas/proto/coffeebus/ext.proto) ---------------------------


@unique
class ExtResultCode(IntEnum):
    """Result of an extension request; 0 means "not set", never success."""

    UNSPECIFIED = 0
    OK = 1
    NOT_AUTHENTICATED = 2
    UNKNOWN_COMMAND = 3
    MALFORMED_BODY = 4
    INVALID_PARAMETER = 5
    FORBIDDEN = 6
    NOT_FOUND = 7
    RATE_LIMITED = 8
    TOO_LARGE = 9
    EXPIRED = 10
    INTERNAL_ERROR = 11
    UNAVAILABLE = 12

    @property
    def retriable(self) -> bool:
        """Whether the same request may succeed later without change."""
        return self in _RETRIABLE


_RETRIABLE = frozenset(
    {ExtResultCode.RATE_LIMITED, ExtResultCode.INTERNAL_ERROR, ExtResultCode.UNAVAILABLE}
)


@unique
class KickReason(IntEnum):
    """Why the server closes a connection with a KickNotify."""

    UNSPECIFIED = 0
    DUPLICATE_LOGIN = 1
    LOGOUT_ELSEWHERE = 2
    TOKEN_REVOKED = 3
    BANNED = 4
    SERVER_SHUTDOWN = 5
    ADMIN = 6
    ACCOUNT_DELETED = 7


@unique
class RoomPostPolicy(IntEnum):
    """Who may say something in a chat room."""

    UNSPECIFIED = 0
    EVERYONE = 1
    LISTED = 2
    NOBODY = 3


@unique
class RoomExitReason(IntEnum):
    """Why a connection is no longer in a room (RoomExitNotify)."""

    UNSPECIFIED = 0
    CLOSED = 1
    TOO_SLOW = 2


@unique
class TypingState(IntEnum):
    """State carried by a TypingNotify."""

    UNSPECIFIED = 0
    TYPING = 1
    STOPPED = 2
