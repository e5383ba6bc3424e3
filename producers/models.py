"""Request and response bodies of the HTTP API, as msgspec Structs.

Litestar validates request bodies against these types and derives the OpenAPI document from
them, so the documented schema and what the server accepts cannot drift apart. Limits
(`Meta`) are part of the contract: a value outside them is a 400, never a 500 from a store.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from store.passwords import MAX_PASSWORD_BYTES
from store.users import MAX_TOKEN_LENGTH, MAX_USER_NAME_LENGTH

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_PROFILE_FIELD",
    "Device",
    "DevicesResponse",
    "Gate",
    "GatesResponse",
    "Health",
    "Problem",
    "ProblemFieldError",
    "RegisterRequest",
    "RegisterResponse",
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
    """``POST /v1/users/{user_id}/token``: the user's new token; the old one is dead."""

    user_id: int
    token: str


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
